// Reading packed quantised weight blocks: prepended to quant.wgsl (linear layers) and conv2d.wgsl
// (convolutions with packed weights), which share one layout: the weight is bound at binding 2 as the
// block bytes exactly as stored, read as u32 words. Blocks run along K; row n holds K / BLOCK blocks.
// Defines: Q8 / Q4 / NF4, the format.

@group(0) @binding(2) var<storage, read> w: array<u32>;

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

