// In-place KV cache write: rows [L, H, D] land in cache rows start..start + L of a [capacity, H, D]
// cache, converted to the cache's dtype. One invocation per element. Compiled with f16 enabled when
// either side is f16; SRC_F16 and DST_F16 pick the two element types (the prelude's T is unused).

struct Params {
    n: u32,      // elements written: L * H * D
    offset: u32, // first element written: start * H * D
}

#if SRC_F16
alias Src = f16;
#else
alias Src = f32;
#endif
#if DST_F16
alias Dst = f16;
#else
alias Dst = f32;
#endif

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rows: array<Src>;
@group(0) @binding(2) var<storage, read_write> cache: array<Dst>;

@compute @workgroup_size(256)
fn kv_write(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i >= p.n { return; }
    cache[p.offset + i] = Dst(rows[i]);
}
