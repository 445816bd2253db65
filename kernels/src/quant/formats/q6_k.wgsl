// ggml q6_K (formats/q6_k.rs): ql[128], qh[64] at 128, i8 scales[16] at 192, f16 d at 208. Weight
// 32c + l (c = 4n + t) takes nibble t / 2 of ql[64n + 32 (t % 2) + l] and bits 2t..2t+2 of
// qh[32n + l]; x = (d * sc) * (q - 32), sc the i8 scale of its 16-weight sub-block. 210-byte blocks:
// every other one is only 2-byte aligned.
#if Q6_K
const BLOCK: u32 = 256u;
const BLOCK_BYTES: u32 = 210u;
fn block_scale(blk: u32) -> f32 {
    return 1.0;
}
fn q6_codes(ql: u32, qh: u32, t: u32) -> vec4<f32> {
    let high = (vec4<u32>(qh) >> vec4<u32>(0u, 8u, 16u, 24u) >> vec4<u32>(2u * t)) & vec4<u32>(3u);
    return vec4<f32>(vec4<i32>(nibbles(ql, 4u * (t / 2u)) | (high << vec4<u32>(4u))) - 32);
}
// Group g: weights 8g .. 8g + 7, in 32-weight chunk c = g / 4 at l0 = 8 (g % 4).
fn group(blk: u32, g: u32) -> Group {
    let base = blk * BLOCK_BYTES;
    let c = g / 4u;
    let l0 = (g % 4u) * 8u;
    let n = c / 4u;
    let t = c % 4u;
    let ql = base + 64u * n + 32u * (t % 2u) + l0;
    let qh = base + 128u + 32u * n + l0;
    let sc = bitcast<i32>(byte_at(base + 192u + 2u * c + l0 / 16u) << 24u) >> 24u;
    let d = half_at(base + 208u) * f32(sc);
    return Group(d * q6_codes(word_at(ql), word_at(qh), t), d * q6_codes(word_at(ql + 4u), word_at(qh + 4u), t),
                 8u * g, 8u * g + 4u);
}
#endif
