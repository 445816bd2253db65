// ggml q5_K (formats/q5_k.rs): q4_K's d, dmin, scales[12], then qh[32] at 16 (bit c of byte l: the
// fifth bit of weight 32c + l) and qs[128] at 48 as q4_K; x = (d * sc) * q - dmin * m. 176-byte
// blocks, so word aligned.
#if Q5_K
const BLOCK: u32 = 256u;
const BLOCK_BYTES: u32 = 176u;
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
    let q = (base + 48u + 32u * (c / 2u) + l0) / 4u;
    let h = (base + 16u + l0) / 4u;
    let shift = 4u * (c % 2u);
    let lo = nibbles(w[q], shift) | (bits_of_bytes(w[h], c) << vec4<u32>(4u));
    let hi = nibbles(w[q + 1u], shift) | (bits_of_bytes(w[h + 1u], c) << vec4<u32>(4u));
    return Group(d1 * vec4<f32>(lo) - m1, d1 * vec4<f32>(hi) - m1, 8u * g, 8u * g + 4u);
}
#endif
