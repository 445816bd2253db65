// Embedding lookup: out[r, c] = table[ids[r], c]. With VEC4 (embedding width a multiple of 4) each
// invocation copies four columns and `dim` counts vec4s. An id past the table writes zeros: a kernel
// cannot report errors, and reading past the table would be out of bounds.

struct Params {
    n: u32,     // units of the output to write
    dim: u32,   // units per table row
    vocab: u32, // table rows
}

#if VEC4
alias U = vec4<T>;
#else
alias U = T;
#endif

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<U>;
@group(0) @binding(3) var<storage, read_write> out: array<U>;

@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i >= p.n { return; }
    let id = ids[i / p.dim];
    var value = U(0.0);
    if id < p.vocab {
        value = table[id * p.dim + i % p.dim];
    }
    out[i] = value;
}
