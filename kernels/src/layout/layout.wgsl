// Data movement: concatenation (one row-block copy per input), narrowing (the inverse: one row-block
// copy out of the input) and permutation (one gather per output element). Elements are only copied, so T may be f32, f16 or u32. With VEC4 every element is a
// vec4<T>: the launcher then passes all sizes, offsets and strides in units of four elements.

struct Params {
    n: u32,        // units to write in this dispatch
    rank: u32,     // permute: output dimensions in use
    row_in: u32,   // concat / narrow: units per outer row of the input
    row_out: u32,  // concat / narrow: units per outer row of the output
    offset: u32,   // concat: where the input's rows start inside the output's rows; narrow: the
                   // reverse, where the output's rows start inside the input's
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    out_dims: array<vec4<u32>, 2>,   // permute: output shape
    in_strides: array<vec4<u32>, 2>, // permute: input stride of each output dimension
}

#if VEC4
alias U = vec4<T>;
#else
alias U = T;
#endif

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<U>;
@group(0) @binding(2) var<storage, read_write> dst: array<U>;

const WG: u32 = 256u;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

// The input viewed as [outer, row_in] lands at column `offset` of the output viewed as [outer, row_out].
@compute @workgroup_size(256)
fn concat_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, nwg, lid);
    if i >= p.n { return; }
    let row = i / p.row_in;
    let col = i % p.row_in;
    dst[row * p.row_out + p.offset + col] = src[i];
}

// Columns `offset` .. `offset + row_out` of the input viewed as [outer, row_in].
@compute @workgroup_size(256)
fn narrow_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, nwg, lid);
    if i >= p.n { return; }
    let row = i / p.row_out;
    let col = i % p.row_out;
    dst[i] = src[row * p.row_in + p.offset + col];
}

@compute @workgroup_size(256)
fn permute_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, nwg, lid);
    if i >= p.n { return; }
    // Walk the output coordinates from the innermost dimension out.
    var rest = i;
    var offset = 0u;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let du = u32(d);
        let size = p.out_dims[du / 4u][du % 4u];
        offset += (rest % size) * p.in_strides[du / 4u][du % 4u];
        rest = rest / size;
    }
    dst[i] = src[offset];
}
