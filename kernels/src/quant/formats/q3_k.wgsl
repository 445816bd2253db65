// ggml q3_K (formats/q3_k.rs): hmask[32], qs[64] at 32, scales[12] at 96, f16 d at 108. Weight
// 32c + l (c = 4n + j) has its low 2 bits at bits 2j..2j+2 of qs[32n + l] and its third at bit c of
// hmask[l] (clear: subtract 4); its sub-block i = 2c + l / 16 has the 6-bit scale (low 4 bits: nibble
// i / 8 of scales[i % 8], top 2: bits 2 (i / 4) of scales[8 + i % 4]); x = (d * (sc - 32)) * q.
// 110-byte blocks: every other one is only 2-byte aligned.
#if Q3_K
const BLOCK: u32 = 256u;
const BLOCK_BYTES: u32 = 110u;
fn block_scale(blk: u32) -> f32 {
    return 1.0;
}
fn q3_codes(q: u32, h: u32, shift: u32, c: u32) -> vec4<f32> {
    let low = (vec4<u32>(q) >> vec4<u32>(0u, 8u, 16u, 24u) >> vec4<u32>(shift)) & vec4<u32>(3u);
    let high = bits_of_bytes(h, c);
    return vec4<f32>(vec4<i32>(low) - 4 * (1 - vec4<i32>(high)));
}
// Group g: weights 8g .. 8g + 7, in 32-weight chunk c = g / 4 at l0 = 8 (g % 4).
fn group(blk: u32, g: u32) -> Group {
    let base = blk * BLOCK_BYTES;
    let c = g / 4u;
    let l0 = (g % 4u) * 8u;
    let q = base + 32u + 32u * (c / 4u) + l0;
    let shift = 2u * (c % 4u);
    let i = 2u * c + l0 / 16u;
    let low = (byte_at(base + 96u + i % 8u) >> (4u * (i / 8u))) & 15u;
    let high = (byte_at(base + 104u + i % 4u) >> (2u * (i / 4u))) & 3u;
    let dl = half_at(base + 108u) * f32(i32(low | (high << 4u)) - 32);
    return Group(dl * q3_codes(word_at(q), word_at(base + l0), shift, c),
                 dl * q3_codes(word_at(q + 4u), word_at(base + l0 + 4u), shift, c),
                 8u * g, 8u * g + 4u);
}
#endif
