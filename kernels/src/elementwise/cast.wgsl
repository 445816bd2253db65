// Conversion between f32 and f16 storage. Always compiled with f16 enabled; TO_F16 picks the direction.

struct Params {
    n: u32,
}

#if TO_F16
alias Src = f32;
alias Dst = f16;
#else
alias Src = f16;
alias Dst = f32;
#endif

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<Src>;
@group(0) @binding(2) var<storage, read_write> dst: array<Dst>;

@compute @workgroup_size(256)
fn convert(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i >= p.n { return; }
    dst[i] = Dst(src[i]);
}
