//! Packing and unpacking of single blocks, bit-exact with the reference implementations: ggml's
//! `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref` and bitsandbytes' nf4 (absmax scale, nearest code).
//! The formats kiln only reads (q4_1 .. q6_K, from GGUF files) live in `formats/`, one file each.

use half::f16;
use kiln_runtime::QuantFormat;

use super::formats::{f16_at, q2_k, q3_k, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k};

/// bitsandbytes' NF4 code table (quantiles of a standard normal, rescaled to [-1, 1]).
pub const NF4_TABLE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// Packs one block of `format.block_len()` values into `out` (`format.block_bytes()` bytes).
///
/// # Panics
/// For a format kiln does not pack (`!format.packable()`); `quantize` checks first.
pub fn pack_block(format: QuantFormat, x: &[f32], out: &mut [u8]) {
    match format {
        QuantFormat::Q8_0 => pack_q8_0(x, out),
        QuantFormat::Q4_0 => pack_q4_0(x, out),
        QuantFormat::Nf4 => pack_nf4(x, out),
        _ => panic!("kiln does not pack {format} blocks"),
    }
}

/// Unpacks consecutive whole blocks of `bytes` into `out` (`format.block_len()` values each).
pub fn unpack_blocks(format: QuantFormat, bytes: &[u8], out: &mut [f32]) {
    for (b, x) in bytes
        .chunks(format.block_bytes())
        .zip(out.chunks_mut(format.block_len()))
    {
        unpack_block(format, b, x);
    }
}

/// Unpacks one block into `out` (`format.block_len()` values).
pub fn unpack_block(format: QuantFormat, b: &[u8], out: &mut [f32]) {
    match format {
        QuantFormat::Q8_0 => {
            let d = f16_at(b, 0);
            for (o, &q) in out.iter_mut().zip(&b[2..34]) {
                *o = d * f32::from(q as i8);
            }
        }
        QuantFormat::Q4_0 => {
            let d = f16_at(b, 0);
            for (j, &q) in b[2..18].iter().enumerate() {
                out[j] = d * (f32::from(q & 15) - 8.0);
                out[j + 16] = d * (f32::from(q >> 4) - 8.0);
            }
        }
        QuantFormat::Nf4 => {
            let absmax = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            for (j, &q) in b[4..36].iter().enumerate() {
                out[2 * j] = NF4_TABLE[usize::from(q >> 4)] * absmax;
                out[2 * j + 1] = NF4_TABLE[usize::from(q & 15)] * absmax;
            }
        }
        QuantFormat::Q4_1 => q4_1::unpack(b, out),
        QuantFormat::Q5_0 => q5_0::unpack(b, out),
        QuantFormat::Q5_1 => q5_1::unpack(b, out),
        QuantFormat::Q2K => q2_k::unpack(b, out),
        QuantFormat::Q3K => q3_k::unpack(b, out),
        QuantFormat::Q4K => q4_k::unpack(b, out),
        QuantFormat::Q5K => q5_k::unpack(b, out),
        QuantFormat::Q6K => q6_k::unpack(b, out),
    }
}

/// The dot product of one packed block with `x` (`format.block_len()` values), decoding the weights
/// as it goes: the scale multiplies the block's sum once. Eight lanes keep the loops vectorised.
#[inline(always)]
pub fn dot_block(format: QuantFormat, b: &[u8], x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    match format {
        QuantFormat::Q8_0 => {
            for (q, x) in b[2..34].chunks_exact(8).zip(x.chunks_exact(8)) {
                for ((l, &q), &x) in lanes.iter_mut().zip(q).zip(x) {
                    *l += f32::from(q as i8) * x;
                }
            }
            f16_at(b, 0) * lanes.iter().sum::<f32>()
        }
        QuantFormat::Q4_0 => {
            let (lo, hi) = x.split_at(16);
            for ((q, lo), hi) in b[2..18]
                .chunks_exact(8)
                .zip(lo.chunks_exact(8))
                .zip(hi.chunks_exact(8))
            {
                for (((l, &q), &a), &c) in lanes.iter_mut().zip(q).zip(lo).zip(hi) {
                    *l += (f32::from(q & 15) - 8.0) * a + (f32::from(q >> 4) - 8.0) * c;
                }
            }
            f16_at(b, 0) * lanes.iter().sum::<f32>()
        }
        QuantFormat::Nf4 => {
            let absmax = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            for (q, x) in b[4..36].chunks_exact(4).zip(x.chunks_exact(8)) {
                for (j, &q) in q.iter().enumerate() {
                    lanes[2 * j] += NF4_TABLE[usize::from(q >> 4)] * x[2 * j];
                    lanes[2 * j + 1] += NF4_TABLE[usize::from(q & 15)] * x[2 * j + 1];
                }
            }
            absmax * lanes.iter().sum::<f32>()
        }
        QuantFormat::Q4_1 => q4_1::dot(b, x),
        QuantFormat::Q5_0 => q5_0::dot(b, x),
        QuantFormat::Q5_1 => q5_1::dot(b, x),
        QuantFormat::Q2K => q2_k::dot(b, x),
        QuantFormat::Q3K => q3_k::dot(b, x),
        QuantFormat::Q4K => q4_k::dot(b, x),
        QuantFormat::Q5K => q5_k::dot(b, x),
        QuantFormat::Q6K => q6_k::dot(b, x),
    }
}

fn pack_q8_0(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (o, &v) in out[2..34].iter_mut().zip(x) {
        // f32::round is roundf: halves away from zero, as ggml.
        *o = (v * id).round() as i8 as u8;
    }
}

fn pack_q4_0(x: &[f32], out: &mut [u8]) {
    // ggml keeps the sign of the largest-magnitude value so it maps to code 0 exactly (-8 * d).
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    // `(int8_t)(x * id + 8.5f)` truncates toward zero, then `MIN(15, ..)`.
    let code = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    for j in 0..16 {
        out[2 + j] = code(x[j]) | (code(x[j + 16]) << 4);
    }
}

fn nf4_code(v: f32) -> u8 {
    // Nearest table entry; the table is sorted, so compare against midpoints.
    let mut code = 0u8;
    for i in 1..16 {
        if v > (NF4_TABLE[i - 1] + NF4_TABLE[i]) * 0.5 {
            code = i as u8;
        }
    }
    code
}

fn pack_nf4(x: &[f32], out: &mut [u8]) {
    let absmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let inv = if absmax != 0.0 { 1.0 / absmax } else { 0.0 };
    out[..4].copy_from_slice(&absmax.to_le_bytes());
    for j in 0..32 {
        out[4 + j] = (nf4_code(x[2 * j] * inv) << 4) | nf4_code(x[2 * j + 1] * inv);
    }
}
