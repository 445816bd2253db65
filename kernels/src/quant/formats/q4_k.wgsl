// ggml q4_K (formats/q4_k.rs): f16 d, f16 dmin, scales[12] (get_scale_min_k4), qs[128] at 16: byte
// 32p + l holds weight 64p + l in its low nibble and 64p + 32 + l in its high one;
// x = (d * sc) * q - dmin * m per 32-weight sub-block. 144-byte blocks, so word aligned.
#if Q4_K
const BLOCK: u32 = 256u;
const BLOCK_BYTES: u32 = 144u;
fn block_scale(blk: u32) -> f32 {
    return 1.0;
}
// Group g: weights 8g .. 8g + 7, in sub-block c = g / 4 at l0 = 8 (g % 4).
fn group(blk: u32, g: u32) -> Group {
    let base = blk * BLOCK_BYTES;
    let c = g / 4u;
    let l0 = (g % 4u) * 8u;
    let sm = scale_min_k4(base + 4u, c);
    let d1 = half_at(base) * f32(sm.x);
    let m1 = half_at(base + 2u) * f32(sm.y);
    let q = (base + 16u + 32u * (c / 2u) + l0) / 4u;
    let shift = 4u * (c % 2u);
    return Group(d1 * vec4<f32>(nibbles(w[q], shift)) - m1, d1 * vec4<f32>(nibbles(w[q + 1u], shift)) - m1,
                 8u * g, 8u * g + 4u);
}
#endif
