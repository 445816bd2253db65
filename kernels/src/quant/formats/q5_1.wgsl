// ggml q5_1 (formats/q5_1.rs): f16 d, f16 m, u32 qh (bit j: the fifth bit of weight j), 16 bytes of
// low nibbles as q5_0; x = (nibble | bit << 4) * d + m. 24-byte blocks, so word aligned.
#if Q5_1
const BLOCK: u32 = 32u;
const BLOCK_BYTES: u32 = 24u;
fn block_scale(blk: u32) -> f32 {
    return 1.0;
}
fn group(blk: u32, g: u32) -> Group {
    let base = blk * BLOCK_BYTES;
    let d = half_at(base);
    let m = half_at(base + 2u);
    let qh = w[base / 4u + 1u];
    let v = w[base / 4u + 2u + g];
    let hl = qh >> (g * 4u);
    let hh = qh >> (g * 4u + 16u);
    let bl = (vec4<u32>(hl, hl >> 1u, hl >> 2u, hl >> 3u) & vec4<u32>(1u)) << vec4<u32>(4u);
    let bh = (vec4<u32>(hh, hh >> 1u, hh >> 2u, hh >> 3u) & vec4<u32>(1u)) << vec4<u32>(4u);
    return Group(vec4<f32>(nibbles(v, 0u) | bl) * d + m, vec4<f32>(nibbles(v, 4u) | bh) * d + m,
                 g * 4u, g * 4u + 16u);
}
#endif
