// Linear layer with a packed quantised weight: out[M, N] = x[M, K] @ W[N, K]^T (+ bias), f32 accumulation.
//   x: activations, T (f32 or f16), read as vec4 (K is a multiple of the block size, so of 4).
//   w: the weight's block bytes exactly as stored (ggml q8_0 / q4_0 / q4_1 / q5_0 / q5_1 / q2_K .. q6_K,
//      or nf4 with an f32 absmax heading each 64-weight block), bound as u32 words, read through the
//      block readers (blocks.wgsl, formats/*.wgsl). Blocks run along K; row n holds K / BLOCK blocks.
// Defines: the format (see blocks.wgsl), BIAS.
// Entry points: qgemv (M <= MAX_M: every weight read once, partial sums reduced in workgroup memory) and
// qgemm (64x64 output tiles; each K step unpacks a 64x32 weight tile into workgroup memory).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    tiles_n: u32,  // column tiles (GEMV: groups of GV_COLS columns; GEMM: 64-wide tiles)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<T>>;
// binding 2: `w`, the packed weight words, declared in blocks.wgsl (prepended to this file).
#if BIAS
@group(0) @binding(3) var<storage, read> bias: array<T>;
#endif
@group(0) @binding(4) var<storage, read_write> out: array<T>;

// ---- GEMV: GV_COLS output columns per workgroup, GV_SLICES threads splitting each column's blocks.
const MAX_M: u32 = 8u;
const GV_COLS: u32 = 8u;
const GV_SLICES: u32 = 32u;
var<workgroup> partial: array<f32, 2048>;  // [MAX_M][GV_SLICES][GV_COLS]

@compute @workgroup_size(256)
fn qgemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    let c = lid / GV_SLICES;
    let s = lid % GV_SLICES;
    let col = id * GV_COLS + c;
    let blocks = p.k / BLOCK;
    let chunks = p.k / 32u;
    let kv = p.k / 4u;
    var acc: array<f32, MAX_M>;
    if col < p.n {
        // One 32-weight chunk (groups 4c .. 4c + 3 of its block) per step, so that 256-weight blocks
        // still spread over all the column's threads.
        for (var kc = s; kc < chunks; kc += GV_SLICES) {
            let kb = kc * 32u / BLOCK;
            let blk = col * blocks + kb;
            let d = block_scale(blk);
            let g0 = (kc * 32u % BLOCK) / 8u;
            for (var g = g0; g < g0 + 4u; g++) {
                let q = group(blk, g);
                let xlo = (kb * BLOCK + q.k_lo) / 4u;
                let xhi = (kb * BLOCK + q.k_hi) / 4u;
                for (var r = 0u; r < p.m; r++) {
                    acc[r] += d * (dot(q.lo, vec4<f32>(x[r * kv + xlo])) +
                                   dot(q.hi, vec4<f32>(x[r * kv + xhi])));
                }
            }
        }
    }
    for (var r = 0u; r < MAX_M; r++) {
        partial[(r * GV_SLICES + s) * GV_COLS + c] = acc[r];
    }
    workgroupBarrier();
    for (var stride = GV_SLICES / 2u; stride > 0u; stride /= 2u) {
        if s < stride {
            for (var r = 0u; r < p.m; r++) {
                partial[(r * GV_SLICES + s) * GV_COLS + c] += partial[(r * GV_SLICES + s + stride) * GV_COLS + c];
            }
        }
        workgroupBarrier();
    }
    if s == 0u && col < p.n {
        for (var r = 0u; r < p.m; r++) {
            out[r * p.n + col] = T(partial[r * GV_SLICES * GV_COLS + c] + bias_at(col));
        }
    }
}

// ---- GEMM: 64x64 output tile, 16x16 threads with 4x4 outputs each, K in steps of KT.
const TILE: u32 = 64u;
const KT: u32 = 32u;
var<workgroup> xs: array<f32, 2048>;  // [TILE rows][KT]
var<workgroup> ws: array<f32, 2048>;  // [TILE columns][KT], scaled weights

@compute @workgroup_size(256)
fn qgemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    let row0 = (id / p.tiles_n) * TILE;
    let col0 = (id % p.tiles_n) * TILE;
    let tx = lid % 16u;
    let ty = lid / 16u;
    let kv = p.k / 4u;
    let blocks = p.k / BLOCK;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += KT) {
        // x tile: 64 rows of 8 vec4s, two per thread; rows past M read as zero.
        for (var i = 0u; i < 2u; i++) {
            let e = lid + i * 256u;
            let r = e / 8u;
            let q = e % 8u;
            var v = vec4<f32>(0.0);
            if row0 + r < p.m {
                v = vec4<f32>(x[(row0 + r) * kv + k0 / 4u + q]);
            }
            let o = r * KT + q * 4u;
            xs[o] = v.x;
            xs[o + 1u] = v.y;
            xs[o + 2u] = v.z;
            xs[o + 3u] = v.w;
        }
        // Weight tile: 64 columns of KT / 8 = 4 groups, one group per thread.
        let cr = lid / 4u;
        let gt = lid % 4u;
        let col = col0 + cr;
        if col < p.n {
            let kin = k0 % BLOCK;  // which 32 weights of a 64- or 256-weight block this step covers
            let blk = col * blocks + k0 / BLOCK;
            let d = block_scale(blk);
            let q = group(blk, gt + kin / 8u);
            let lo = d * q.lo;
            let hi = d * q.hi;
            let olo = cr * KT + q.k_lo - kin;
            let ohi = cr * KT + q.k_hi - kin;
            for (var j = 0u; j < 4u; j++) {
                ws[olo + j] = lo[j];
                ws[ohi + j] = hi[j];
            }
        } else {
            for (var j = 0u; j < 8u; j++) {
                ws[cr * KT + gt * 8u + j] = 0.0;
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KT; kk++) {
            let b = vec4<f32>(ws[(tx * 4u) * KT + kk], ws[(tx * 4u + 1u) * KT + kk],
                              ws[(tx * 4u + 2u) * KT + kk], ws[(tx * 4u + 3u) * KT + kk]);
            for (var i = 0u; i < 4u; i++) {
                acc[i] += xs[(ty * 4u + i) * KT + kk] * b;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + ty * 4u + i;
        if r < p.m {
            for (var j = 0u; j < 4u; j++) {
                let c = col0 + tx * 4u + j;
                if c < p.n {
                    out[r * p.n + c] = T(acc[i][j] + bias_at(c));
                }
            }
        }
    }
}
