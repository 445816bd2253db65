// ggml q5_0 (formats/q5_0.rs): f16 d, u32 qh (bit j: the fifth bit of weight j), 16 bytes of low
// nibbles (byte j: weight j low, weight j + 16 high); x = ((nibble | bit << 4) - 16) * d. 22-byte
// blocks: every other one is only 2-byte aligned.
#if Q5_0
const BLOCK: u32 = 32u;
const BLOCK_BYTES: u32 = 22u;
fn block_scale(blk: u32) -> f32 {
    return half_at(blk * BLOCK_BYTES);
}
fn group(blk: u32, g: u32) -> Group {
    let base = blk * BLOCK_BYTES;
    let qh = word_at(base + 2u);
    let v = word_at(base + 6u + g * 4u);
    let hl = qh >> (g * 4u);
    let hh = qh >> (g * 4u + 16u);
    let bl = (vec4<u32>(hl, hl >> 1u, hl >> 2u, hl >> 3u) & vec4<u32>(1u)) << vec4<u32>(4u);
    let bh = (vec4<u32>(hh, hh >> 1u, hh >> 2u, hh >> 3u) & vec4<u32>(1u)) << vec4<u32>(4u);
    return Group(vec4<f32>(nibbles(v, 0u) | bl) - 16.0, vec4<f32>(nibbles(v, 4u) | bh) - 16.0,
                 g * 4u, g * 4u + 16u);
}
#endif
