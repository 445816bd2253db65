// Batched matrix multiplication out = a @ b (+ bias), with f32 accumulation whatever the storage type.
//   a: [batch, M, K] row-major.  b: [batch, K, N], or [batch, N, K] with TRANS_B; batch stride 0 shares b.
// Defines: TRANS_B, BIAS, VEC_A (K % 4 == 0: `a` bound as vec4), VEC_B (b's contiguous dimension, N or
// with TRANS_B K, % 4 == 0: `b` bound as vec4). Scalar helpers read single elements in either binding.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    tiles_m: u32,         // gemm: row tiles per matrix (1 for gemv)
    tiles_n: u32,         // column tiles per matrix
    a_batch_stride: u32,  // elements between batch matrices of a
    b_batch_stride: u32,  // elements between batch matrices of b (0 when shared)
}

@group(0) @binding(0) var<uniform> p: Params;
#if VEC_A
@group(0) @binding(1) var<storage, read> a: array<vec4<T>>;
#else
@group(0) @binding(1) var<storage, read> a: array<T>;
#endif
#if VEC_B
@group(0) @binding(2) var<storage, read> b: array<vec4<T>>;
#else
@group(0) @binding(2) var<storage, read> b: array<T>;
#endif
#if BIAS
@group(0) @binding(3) var<storage, read> bias: array<T>;
#endif
@group(0) @binding(4) var<storage, read_write> out: array<T>;

fn a_at(i: u32) -> f32 {
#if VEC_A
    return f32(a[i >> 2u][i & 3u]);
#else
    return f32(a[i]);
#endif
}

// Four values from a multiple-of-4 index.
fn a_vec4(i: u32) -> vec4<f32> {
#if VEC_A
    return vec4<f32>(a[i >> 2u]);
#else
    return vec4<f32>(a_at(i), a_at(i + 1u), a_at(i + 2u), a_at(i + 3u));
#endif
}

fn b_at(i: u32) -> f32 {
#if VEC_B
    return f32(b[i >> 2u][i & 3u]);
#else
    return f32(b[i]);
#endif
}

fn bias_at(col: u32) -> f32 {
#if BIAS
    return f32(bias[col]);
#else
    return 0.0;
#endif
}

// ---- GEMM: 64x64 output tile per workgroup, K in steps of 16 through workgroup memory. ----
// Invocation (tx, ty) in a 16x16 grid owns the 4x4 block at rows 4*ty.., columns 4*tx...

const BK: u32 = 16u;
const BM: u32 = 64u;

// tile_a[kk * 16 + i] holds rows 4i..4i+3 of the A tile at k step kk; tile_b likewise for columns.
// 2 x 4 KiB.
var<workgroup> tile_a: array<vec4<f32>, 256>;
var<workgroup> tile_b: array<vec4<f32>, 256>;

// Stages a[row0.., k0..] (64 rows x 16) into tile_a, transposed to k-major; zero past the edges.
fn stage_a(lid: u32, a_off: u32, row0: u32, k0: u32) {
#if VEC_A
    // One vec4 along K per invocation: 4 invocations cover a row's 16 values.
    let r = lid >> 2u;
    let q = (lid & 3u) * 4u;
    let row = row0 + r;
    var v = vec4<f32>(0.0);
    if row < p.m && k0 + q < p.k {
        v = a_vec4(a_off + row * p.k + k0 + q);
    }
    for (var c = 0u; c < 4u; c++) {
        tile_a[(q + c) * 16u + (r >> 2u)][r & 3u] = v[c];
    }
#else
    for (var c = 0u; c < 4u; c++) {
        let e = lid + c * 256u;
        let r = e / BK;
        let kk = e % BK;
        let row = row0 + r;
        var v = 0.0;
        if row < p.m && k0 + kk < p.k {
            v = a_at(a_off + row * p.k + k0 + kk);
        }
        tile_a[kk * 16u + (r >> 2u)][r & 3u] = v;
    }
#endif
}

// Stages the b values for output columns col0.. and k0.. into tile_b (k-major); zero past the edges.
fn stage_b(lid: u32, b_off: u32, col0: u32, k0: u32) {
#if TRANS_B
#if VEC_B
    let r = lid >> 2u;
    let q = (lid & 3u) * 4u;
    let col = col0 + r;
    var v = vec4<f32>(0.0);
    if col < p.n && k0 + q < p.k {
        v = vec4<f32>(b[(b_off + col * p.k + k0 + q) >> 2u]);
    }
    for (var c = 0u; c < 4u; c++) {
        tile_b[(q + c) * 16u + (r >> 2u)][r & 3u] = v[c];
    }
#else
    for (var c = 0u; c < 4u; c++) {
        let e = lid + c * 256u;
        let r = e / BK;
        let kk = e % BK;
        let col = col0 + r;
        var v = 0.0;
        if col < p.n && k0 + kk < p.k {
            v = b_at(b_off + col * p.k + k0 + kk);
        }
        tile_b[kk * 16u + (r >> 2u)][r & 3u] = v;
    }
#endif
#else
#if VEC_B
    // One vec4 along N per invocation: 16 invocations cover a k row's 64 columns.
    let kk = lid >> 4u;
    let q = lid & 15u;
    let col = col0 + q * 4u;
    var v = vec4<f32>(0.0);
    if col < p.n && k0 + kk < p.k {
        v = vec4<f32>(b[(b_off + (k0 + kk) * p.n + col) >> 2u]);
    }
    tile_b[kk * 16u + q] = v;
#else
    for (var c = 0u; c < 4u; c++) {
        let e = lid + c * 256u;
        let kk = e / BM;
        let cc = e % BM;
        let col = col0 + cc;
        var v = 0.0;
        if col < p.n && k0 + kk < p.k {
            v = b_at(b_off + (k0 + kk) * p.n + col);
        }
        tile_b[kk * 16u + (cc >> 2u)][cc & 3u] = v;
    }
#endif
#endif
}

fn store_row(o_off: u32, row: u32, col: u32, v: vec4<f32>) {
    if row >= p.m {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let c = col + j;
        if c < p.n {
            out[o_off + row * p.n + c] = T(v[j] + bias_at(c));
        }
    }
}

@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    let per_matrix = p.tiles_m * p.tiles_n;
    // `id` is uniform across the workgroup, so the barriers below stay in uniform control flow.
    if id < p.batch * per_matrix {
        let bat = id / per_matrix;
        let t = id % per_matrix;
        let row0 = (t / p.tiles_n) * BM;
        let col0 = (t % p.tiles_n) * BM;
        let a_off = bat * p.a_batch_stride;
        let b_off = bat * p.b_batch_stride;
        let tx = lid & 15u;
        let ty = lid >> 4u;
        var acc0 = vec4<f32>(0.0);
        var acc1 = vec4<f32>(0.0);
        var acc2 = vec4<f32>(0.0);
        var acc3 = vec4<f32>(0.0);
        for (var k0 = 0u; k0 < p.k; k0 += BK) {
            stage_a(lid, a_off, row0, k0);
            stage_b(lid, b_off, col0, k0);
            workgroupBarrier();
            for (var kk = 0u; kk < BK; kk++) {
                let av = tile_a[kk * 16u + ty];
                let bv = tile_b[kk * 16u + tx];
                acc0 += av.x * bv;
                acc1 += av.y * bv;
                acc2 += av.z * bv;
                acc3 += av.w * bv;
            }
            workgroupBarrier();
        }
        let o_off = bat * p.m * p.n;
        let row = row0 + ty * 4u;
        let col = col0 + tx * 4u;
        store_row(o_off, row, col, acc0);
        store_row(o_off, row + 1u, col, acc1);
        store_row(o_off, row + 2u, col, acc2);
        store_row(o_off, row + 3u, col, acc3);
    }
}

// ---- GEMV (M == 1): each workgroup reduces whole columns, split over K into slices. ----
// TRANS_B: 8 columns x 32 slices (b rows are contiguous in K); else 32 columns x 8 slices (a warp reads
// consecutive columns). The launcher's columns-per-workgroup must match.

#if TRANS_B
const GEMV_COLS: u32 = 8u;
#else
const GEMV_COLS: u32 = 32u;
#endif
const GEMV_SLICES: u32 = 256u / GEMV_COLS;

var<workgroup> sums: array<f32, 256>;

@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if id < p.batch * p.tiles_n {
        let bat = id / p.tiles_n;
        let a_off = bat * p.a_batch_stride;
        let b_off = bat * p.b_batch_stride;
#if TRANS_B
        let c = lid / GEMV_SLICES;
        let s = lid % GEMV_SLICES;
#else
        let c = lid % GEMV_COLS;
        let s = lid / GEMV_COLS;
#endif
        let col = (id % p.tiles_n) * GEMV_COLS + c;
        var acc = 0.0;
        if col < p.n {
#if TRANS_B
#if VEC_B
            let row = (b_off + col * p.k) >> 2u;
            for (var q = s; q < p.k / 4u; q += GEMV_SLICES) {
                acc += dot(a_vec4(a_off + q * 4u), vec4<f32>(b[row + q]));
            }
#else
            for (var k = s; k < p.k; k += GEMV_SLICES) {
                acc += a_at(a_off + k) * b_at(b_off + col * p.k + k);
            }
#endif
#else
            for (var k = s; k < p.k; k += GEMV_SLICES) {
                acc += a_at(a_off + k) * b_at(b_off + k * p.n + col);
            }
#endif
        }
        sums[s * GEMV_COLS + c] = acc;
        workgroupBarrier();
        for (var stride = GEMV_SLICES / 2u; stride > 0u; stride /= 2u) {
            if s < stride {
                sums[s * GEMV_COLS + c] += sums[(s + stride) * GEMV_COLS + c];
            }
            workgroupBarrier();
        }
        if s == 0u && col < p.n {
            out[bat * p.n + col] = T(sums[c] + bias_at(col));
        }
    }
}
