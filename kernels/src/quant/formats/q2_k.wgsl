// ggml q2_K (formats/q2_k.rs): scales[16] (low nibble scale, high nibble min per 16 weights), qs[64],
// f16 d at 80, f16 dmin at 82. Weight 32c + l (c = 4n + j) is bits 2j..2j+2 of qs[32n + l], in
// sub-block 2c + l / 16; x = (d * sc) * q - dmin * m. 84-byte blocks, so word aligned.
#if Q2_K
const BLOCK: u32 = 256u;
const BLOCK_BYTES: u32 = 84u;
fn block_scale(blk: u32) -> f32 {
    return 1.0;
}
// Group g: weights 8g .. 8g + 7, in 32-weight chunk c = g / 4 at l0 = 8 (g % 4).
fn group(blk: u32, g: u32) -> Group {
    let base = blk * BLOCK_BYTES;
    let c = g / 4u;
    let l0 = (g % 4u) * 8u;
    let q = base + 16u + 32u * (c / 4u) + l0;
    let shift = 2u * (c % 4u);
    let sc = byte_at(base + 2u * c + l0 / 16u);
    let dl = half_at(base + 80u) * f32(sc & 15u);
    let ml = half_at(base + 82u) * f32(sc >> 4u);
    let lo = vec4<f32>((vec4<u32>(word_at(q)) >> vec4<u32>(0u, 8u, 16u, 24u) >> vec4<u32>(shift)) & vec4<u32>(3u));
    let hi = vec4<f32>((vec4<u32>(word_at(q + 4u)) >> vec4<u32>(0u, 8u, 16u, 24u) >> vec4<u32>(shift)) & vec4<u32>(3u));
    return Group(dl * lo - ml, dl * hi - ml, 8u * g, 8u * g + 4u);
}
#endif
