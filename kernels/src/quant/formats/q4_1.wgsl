// ggml q4_1 (formats/q4_1.rs): f16 d, f16 m, 16 bytes of nibbles (byte j: weight j low, weight j + 16
// high); x = q * d + m. 20-byte blocks, so word aligned.
#if Q4_1
const BLOCK: u32 = 32u;
const BLOCK_BYTES: u32 = 20u;
fn block_scale(blk: u32) -> f32 {
    return 1.0;
}
fn group(blk: u32, g: u32) -> Group {
    let base = blk * BLOCK_BYTES;
    let d = half_at(base);
    let m = half_at(base + 2u);
    let v = w[base / 4u + 1u + g];
    return Group(vec4<f32>(nibbles(v, 0u)) * d + m, vec4<f32>(nibbles(v, 4u)) * d + m, g * 4u, g * 4u + 16u);
}
#endif
