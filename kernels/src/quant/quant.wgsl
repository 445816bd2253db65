// Linear layer with a packed quantised weight: out[M, N] = x[M, K] @ W[N, K]^T (+ bias), f32 accumulation.
//   x: activations, T (f32 or f16), read as vec4 (K is a multiple of the block size, so of 4).
//   w: the weight's block bytes exactly as stored (ggml q8_0 / q4_0, or nf4 with an f32 absmax heading
//      each 64-weight block), bound as u32 words. Blocks run along K; row n holds K / BLOCK blocks.
// Defines: Q8 / Q4 / NF4 (the format), BIAS.
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
@group(0) @binding(2) var<storage, read> w: array<u32>;
#if BIAS
@group(0) @binding(3) var<storage, read> bias: array<T>;
#endif
@group(0) @binding(4) var<storage, read_write> out: array<T>;

#if Q8
const BLOCK: u32 = 32u;
const BLOCK_BYTES: u32 = 34u;
const CODES_AT: u32 = 2u;
#endif
#if Q4
const BLOCK: u32 = 32u;
const BLOCK_BYTES: u32 = 18u;
const CODES_AT: u32 = 2u;
#endif
#if NF4
const BLOCK: u32 = 64u;
const BLOCK_BYTES: u32 = 36u;
const CODES_AT: u32 = 4u;
var<private> NF4_TABLE: array<f32, 16> = array<f32, 16>(
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0);
#endif
// Each block is read as groups of 8 weights (two vec4s).
const GROUPS: u32 = BLOCK / 8u;

fn bias_at(c: u32) -> f32 {
#if BIAS
    return f32(bias[c]);
#else
    return 0.0;
#endif
}

// The 4 bytes from byte offset `off`, any alignment (34- and 18-byte blocks are only 2-byte aligned).
fn word_at(off: u32) -> u32 {
    let i = off >> 2u;
    let s = (off & 3u) * 8u;
    if s == 0u {
        return w[i];
    }
    return (w[i] >> s) | (w[i + 1u] << (32u - s));
}

// The scale of block `blk` (global index: row * K / BLOCK + block in row).
fn block_scale(blk: u32) -> f32 {
#if NF4
    return bitcast<f32>(w[blk * 9u]);
#else
    let off = blk * BLOCK_BYTES;
    let bits = (w[off >> 2u] >> ((off & 2u) * 8u)) & 0xffffu;
    return f16_bits_to_f32(bits);
#endif
}

// IEEE half to f32 by hand: `unpack2x16float` needs a capability some adapters lack.
fn f16_bits_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if e == 0u {
        // Zero or subnormal: m * 2^-24.
        return bitcast<f32>(sign | bitcast<u32>(f32(m) * 5.9604644775390625e-8));
    }
    if e == 31u {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// Eight unscaled weights of a block: `lo` at block offsets k_lo..k_lo+3, `hi` at k_hi..k_hi+3.
struct Group {
    lo: vec4<f32>,
    hi: vec4<f32>,
    k_lo: u32,
    k_hi: u32,
}

fn i8x4(v: u32) -> vec4<f32> {
    return vec4<f32>(vec4<i32>(bitcast<i32>(v << 24u), bitcast<i32>(v << 16u),
                               bitcast<i32>(v << 8u), bitcast<i32>(v)) >> vec4<u32>(24u));
}

fn group(blk: u32, g: u32) -> Group {
    let codes = blk * BLOCK_BYTES + CODES_AT;
#if Q8
    return Group(i8x4(word_at(codes + g * 8u)), i8x4(word_at(codes + g * 8u + 4u)), g * 8u, g * 8u + 4u);
#endif
#if Q4
    // Byte j holds weight j in its low nibble and weight j + 16 in its high nibble.
    let v = word_at(codes + g * 4u);
    let lo = vec4<f32>(vec4<u32>(v, v >> 8u, v >> 16u, v >> 24u) & vec4<u32>(15u)) - 8.0;
    let hi = vec4<f32>(vec4<u32>(v >> 4u, v >> 12u, v >> 20u, v >> 28u) & vec4<u32>(15u)) - 8.0;
    return Group(lo, hi, g * 4u, g * 4u + 16u);
#endif
#if NF4
    // Byte j holds weight 2j in its high nibble and weight 2j + 1 in its low nibble.
    let v = w[blk * 9u + 1u + g];
    let lo = vec4<f32>(NF4_TABLE[(v >> 4u) & 15u], NF4_TABLE[v & 15u],
                       NF4_TABLE[(v >> 12u) & 15u], NF4_TABLE[(v >> 8u) & 15u]);
    let hi = vec4<f32>(NF4_TABLE[(v >> 20u) & 15u], NF4_TABLE[(v >> 16u) & 15u],
                       NF4_TABLE[(v >> 28u) & 15u], NF4_TABLE[(v >> 24u) & 15u]);
    return Group(lo, hi, g * 8u, g * 8u + 4u);
#endif
}

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
    let kv = p.k / 4u;
    var acc: array<f32, MAX_M>;
    if col < p.n {
        for (var kb = s; kb < blocks; kb += GV_SLICES) {
            let blk = col * blocks + kb;
            let d = block_scale(blk);
            for (var g = 0u; g < GROUPS; g++) {
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
            let kin = k0 % BLOCK;  // nf4: which half of the 64-weight block this step covers
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
