// Reading packed quantised weight blocks: prepended to quant.wgsl (linear layers) and conv2d.wgsl
// (convolutions with packed weights), which share one layout: the weight is bound at binding 2 as the
// block bytes exactly as stored, read as u32 words. Blocks run along K; row n holds K / BLOCK blocks.
// Defines: the format, one of Q8 / Q4 / NF4 (here) or Q4_1 / Q5_0 / Q5_1 / Q2_K / Q3_K / Q4_K / Q5_K /
// Q6_K (formats/*.wgsl).

@group(0) @binding(2) var<storage, read> w: array<u32>;

// Each format (its section below, or its file in formats/, appended after this one) defines
//   BLOCK, BLOCK_BYTES                weights and bytes per block;
//   fn block_scale(blk) -> f32        a factor of every weight of block `blk` (global index:
//                                     row * K / BLOCK + block in row), 1.0 where `group` applies
//                                     the scales itself (sub-block scales, minima);
//   fn group(blk, g) -> Group         eight weights of the block, divided by `block_scale`.
// Groups 4c .. 4c + 3 hold exactly weights 32c .. 32c + 31 of the block, in any order: the GEMM and
// the convolution unpack 32 weights of K per step, the GEMV one 32-weight chunk per thread.
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

// The f16 at byte offset `off` (even: every ggml field is 2-byte aligned).
fn half_at(off: u32) -> f32 {
    return f16_bits_to_f32((w[off >> 2u] >> ((off & 2u) * 8u)) & 0xffffu);
}

// The byte at byte offset `off`.
fn byte_at(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 3u) * 8u)) & 0xffu;
}

// Byte `i` (0..3) of `v`.
fn byte_of(v: u32, i: u32) -> u32 {
    return (v >> (i * 8u)) & 0xffu;
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

// Eight weights of a block (divided by `block_scale`): `lo` at block offsets k_lo..k_lo+3, `hi` at
// k_hi..k_hi+3.
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

// The four nibbles at bit `shift` (0 or 4) of each byte of `v`.
fn nibbles(v: u32, shift: u32) -> vec4<u32> {
    return (vec4<u32>(v, v >> 8u, v >> 16u, v >> 24u) >> vec4<u32>(shift)) & vec4<u32>(15u);
}

// Bit `b` of each byte of `v`.
fn bits_of_bytes(v: u32, b: u32) -> vec4<u32> {
    return (vec4<u32>(v, v >> 8u, v >> 16u, v >> 24u) >> vec4<u32>(b)) & vec4<u32>(1u);
}

// q4_K / q5_K: the 6-bit scale (x) and min (y) of sub-block `j` from the 12 scale bytes at byte
// offset `at`, ggml's `get_scale_min_k4`.
fn scale_min_k4(at: u32, j: u32) -> vec2<u32> {
    let s0 = word_at(at);
    let s1 = word_at(at + 4u);
    if j < 4u {
        return vec2<u32>(byte_of(s0, j) & 63u, byte_of(s1, j) & 63u);
    }
    let i = j - 4u;
    let s2 = byte_of(word_at(at + 8u), i);
    return vec2<u32>((s2 & 15u) | ((byte_of(s0, i) >> 6u) << 4u),
                     (s2 >> 4u) | ((byte_of(s1, i) >> 6u) << 4u));
}

#if Q8
const BLOCK: u32 = 32u;
const BLOCK_BYTES: u32 = 34u;
fn block_scale(blk: u32) -> f32 {
    return half_at(blk * BLOCK_BYTES);
}
fn group(blk: u32, g: u32) -> Group {
    let codes = blk * BLOCK_BYTES + 2u;
    return Group(i8x4(word_at(codes + g * 8u)), i8x4(word_at(codes + g * 8u + 4u)), g * 8u, g * 8u + 4u);
}
#endif

#if Q4
const BLOCK: u32 = 32u;
const BLOCK_BYTES: u32 = 18u;
fn block_scale(blk: u32) -> f32 {
    return half_at(blk * BLOCK_BYTES);
}
// Byte j holds weight j in its low nibble and weight j + 16 in its high nibble.
fn group(blk: u32, g: u32) -> Group {
    let v = word_at(blk * BLOCK_BYTES + 2u + g * 4u);
    return Group(vec4<f32>(nibbles(v, 0u)) - 8.0, vec4<f32>(nibbles(v, 4u)) - 8.0, g * 4u, g * 4u + 16u);
}
#endif

#if NF4
const BLOCK: u32 = 64u;
const BLOCK_BYTES: u32 = 36u;
var<private> NF4_TABLE: array<f32, 16> = array<f32, 16>(
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0);
fn block_scale(blk: u32) -> f32 {
    return bitcast<f32>(w[blk * 9u]);
}
// Byte j holds weight 2j in its high nibble and weight 2j + 1 in its low nibble.
fn group(blk: u32, g: u32) -> Group {
    let v = w[blk * 9u + 1u + g];
    let lo = vec4<f32>(NF4_TABLE[(v >> 4u) & 15u], NF4_TABLE[v & 15u],
                       NF4_TABLE[(v >> 12u) & 15u], NF4_TABLE[(v >> 8u) & 15u]);
    let hi = vec4<f32>(NF4_TABLE[(v >> 20u) & 15u], NF4_TABLE[(v >> 16u) & 15u],
                       NF4_TABLE[(v >> 28u) & 15u], NF4_TABLE[(v >> 24u) & 15u]);
    return Group(lo, hi, g * 8u, g * 8u + 4u);
}
#endif
