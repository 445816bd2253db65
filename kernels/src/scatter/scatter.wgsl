// Row scatter: out = x with some rows taken from src. One invocation per output element (a vec4 of
// them with VEC4, D a multiple of 4; `dim` then counts vec4s): origin[r] names the src row that output
// row r takes, or 0xffffffff to keep x's row. The host builds origin from the validated, distinct
// row indices, so every element is written exactly once.

struct Params {
    n: u32,   // units of the output: N * D / unit
    dim: u32, // units per row
}

#if VEC4
alias U = vec4<T>;
#else
alias U = T;
#endif

const KEEP: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<U>;
@group(0) @binding(2) var<storage, read> src: array<U>;
@group(0) @binding(3) var<storage, read> origin: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<U>;

@compute @workgroup_size(256)
fn scatter_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i >= p.n { return; }
    let m = origin[i / p.dim];
    if m == KEEP {
        out[i] = x[i];
    } else {
        out[i] = src[m * p.dim + i % p.dim];
    }
}
