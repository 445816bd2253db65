//! OpenCV's bicubic resize of float data (`cv2.resize(np.float32 array, size, INTER_CUBIC)`), the
//! resize mistral-common's `transform_image` uses.
//!
//! The kernel is Keys' cubic with a = -0.75, four taps per output sample. Output sample `d` reads
//! source coordinate `(d + 0.5) * src / dst - 0.5`; taps outside the image repeat the edge pixel
//! (border replicate). Work is separable, horizontal then vertical, in f32, and nothing is clamped:
//! ringing around sharp edges leaves values below 0 and above 255, as OpenCV leaves them.
//!
//! The x86-64 wheels of opencv-python(-headless) hand this resize to Intel IPP whenever the source
//! is at least 4 x 4 pixels. IPP computes the source coordinate and the tap weights in f64; OpenCV's
//! own code rounds the coordinate to f32 first, which moves the weights by up to ~1.5e-4 for
//! 4000-pixel sources (up to 0.06 of 255 in the output). We follow what the wheel does: f64 weights
//! from 4 x 4 pixels up, OpenCV's f32 coordinates below. Builds of OpenCV without IPP (aarch64
//! wheels, for one) compute every image the second way.

use kiln_runtime::{Error, Result};

use super::MAX_DECODED_PIXELS;

/// Source sides below this make opencv-python's IPP path decline and OpenCV's own code resize.
const IPP_MIN_SIDE: usize = 4;

/// Per output sample: the four source indices (edge-clamped) and their weights.
struct Taps {
    index: Vec<[usize; 4]>,
    weight: Vec<[f32; 4]>,
}

/// Keys' cubic weights for the taps at offsets -1, 0, 1, 2 from the sample's floor, `x` the
/// fractional part; OpenCV's `interpolateCubic` evaluated in f64.
fn cubic_weights_f64(x: f64) -> [f32; 4] {
    const A: f64 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    let c3 = 1.0 - c0 - c1 - c2;
    [c0 as f32, c1 as f32, c2 as f32, c3 as f32]
}

/// OpenCV's `interpolateCubic` as written (f32).
fn cubic_weights_f32(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    let c3 = 1.0 - c0 - c1 - c2;
    [c0, c1, c2, c3]
}

fn taps(src: usize, dst: usize, f64_weights: bool) -> Taps {
    let mut index = Vec::with_capacity(dst);
    let mut weight = Vec::with_capacity(dst);
    let last = src as isize - 1;
    for d in 0..dst {
        let (floor, w) = if f64_weights {
            let fx = (d as f64 + 0.5) * (src as f64 / dst as f64) - 0.5;
            let floor = fx.floor();
            (floor as isize, cubic_weights_f64(fx - floor))
        } else {
            // resize.cpp: scale_x = 1. / inv_scale_x; fx = (float)((dx + 0.5) * scale_x - 0.5).
            let scale = 1.0 / (dst as f64 / src as f64);
            let fx = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let floor = fx.floor();
            (floor as isize, cubic_weights_f32(fx - floor))
        };
        index.push(std::array::from_fn(|k| {
            (floor - 1 + k as isize).clamp(0, last) as usize
        }));
        weight.push(w);
    }
    Taps { index, weight }
}

/// Resizes an 8-bit `height x width x channels` image (row-major, interleaved) to
/// `out_height x out_width x channels` f32 values, as `cv2.resize(img.astype(np.float32),
/// (out_width, out_height), interpolation=cv2.INTER_CUBIC)` does on x86-64 (see the module notes).
pub fn resize_bicubic(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_width: usize,
    out_height: usize,
) -> Result<Vec<f32>> {
    let op = "bicubic resize";
    if width == 0 || height == 0 || channels == 0 || out_width == 0 || out_height == 0 {
        return Err(Error::shape(
            op,
            format!(
                "{width}x{height}x{channels} to {out_width}x{out_height}: no side may be empty"
            ),
        ));
    }
    let len = width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(channels));
    let out_row = out_width.checked_mul(channels);
    let out_len = out_row.and_then(|n| n.checked_mul(out_height));
    let (Some(len), Some(out_row), Some(out_len)) = (len, out_row, out_len) else {
        return Err(Error::limit(
            op,
            format!("{width}x{height}x{channels} to {out_width}x{out_height} overflows"),
        ));
    };
    // As many values as 4 channels of the largest decodable image; also keeps the 4-row ring
    // below from overflowing.
    if out_len as u64 > 4 * MAX_DECODED_PIXELS {
        return Err(Error::limit(
            op,
            format!(
                "{out_width}x{out_height}x{channels}: more than {} output values",
                4 * MAX_DECODED_PIXELS
            ),
        ));
    }
    if pixels.len() != len {
        return Err(Error::shape(
            op,
            format!(
                "{} bytes for a {width}x{height}x{channels} image (expected {len})",
                pixels.len()
            ),
        ));
    }
    if (width, height) == (out_width, out_height) {
        // cv2.resize copies when the size does not change (the weights would be 0, 1, 0, 0).
        return Ok(pixels.iter().map(|&v| v as f32).collect());
    }
    let f64_weights = width >= IPP_MIN_SIDE && height >= IPP_MIN_SIDE;
    let xt = taps(width, out_width, f64_weights);
    let yt = taps(height, out_height, f64_weights);

    // Horizontally resized source rows, kept in a ring of four: the four (clamped) rows an output
    // row reads are within four consecutive indices, so `row % 4` never collides.
    let mut ring = vec![0f32; 4 * out_row];
    let mut ring_row = [usize::MAX; 4];
    let mut out = vec![0f32; out_len];
    let row_bytes = width * channels;
    for (oy, out_line) in out.chunks_exact_mut(out_row).enumerate() {
        let rows = yt.index[oy];
        for &r in &rows {
            let slot = r % 4;
            if ring_row[slot] != r {
                ring_row[slot] = r;
                let src = &pixels[r * row_bytes..(r + 1) * row_bytes];
                let dst = &mut ring[slot * out_row..(slot + 1) * out_row];
                horizontal(src, dst, &xt, channels);
            }
        }
        let b = yt.weight[oy];
        let line = |k: usize| {
            let slot = rows[k] % 4;
            &ring[slot * out_row..(slot + 1) * out_row]
        };
        let (r0, r1, r2, r3) = (line(0), line(1), line(2), line(3));
        for (i, o) in out_line.iter_mut().enumerate() {
            *o = r0[i] * b[0] + r1[i] * b[1] + r2[i] * b[2] + r3[i] * b[3];
        }
    }
    Ok(out)
}

fn horizontal(src: &[u8], dst: &mut [f32], xt: &Taps, channels: usize) {
    for ((out, idx), a) in dst
        .chunks_exact_mut(channels)
        .zip(&xt.index)
        .zip(&xt.weight)
    {
        let p = idx.map(|i| &src[i * channels..(i + 1) * channels]);
        for (c, o) in out.iter_mut().enumerate() {
            *o = p[0][c] as f32 * a[0]
                + p[1][c] as f32 * a[1]
                + p[2][c] as f32 * a[2]
                + p[3][c] as f32 * a[3];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_integer_positions_copy() {
        for x in [0.0, 0.1, 0.25, 0.5, 0.9, 0.999] {
            let w = cubic_weights_f64(x);
            let s: f32 = w.iter().sum();
            assert!((s - 1.0).abs() < 1e-6, "{x}: {w:?}");
        }
        assert_eq!(cubic_weights_f64(0.0), [0.0, 1.0, 0.0, 0.0]);
        assert_eq!(cubic_weights_f32(0.0), [0.0, 1.0, 0.0, 0.0]);
        // Doubling the size samples at -0.25, 0.25, 0.75, ...: the first taps clamp to pixel 0.
        let t = taps(8, 16, true);
        assert_eq!(t.index[0], [0, 0, 0, 1]);
        assert_eq!(t.index[15], [6, 7, 7, 7]);
    }

    #[test]
    fn constant_images_stay_constant_and_edges_overshoot() {
        let flat = vec![77u8; 9 * 5 * 3];
        let out = resize_bicubic(&flat, 9, 5, 3, 28, 28).unwrap();
        assert!(out.iter().all(|&v| (v - 77.0).abs() < 1e-3), "{out:?}");
        // A black/white step upscaled rings below 0 and above 255: no clamping.
        let mut step = vec![0u8; 8];
        step[4..].fill(255);
        let out = resize_bicubic(&step, 8, 1, 1, 32, 1).unwrap();
        assert!(out.iter().any(|&v| v < -1.0) && out.iter().any(|&v| v > 256.0));
    }

    #[test]
    fn same_size_copies_and_bad_sizes_are_errors() {
        let px: Vec<u8> = (0..24).collect();
        let out = resize_bicubic(&px, 4, 2, 3, 4, 2).unwrap();
        assert_eq!(out, px.iter().map(|&v| v as f32).collect::<Vec<_>>());
        assert!(resize_bicubic(&px, 4, 2, 3, 0, 2).is_err());
        assert!(resize_bicubic(&px, 0, 2, 3, 4, 2).is_err());
        assert!(resize_bicubic(&px, 5, 2, 3, 4, 2).is_err());
        assert!(resize_bicubic(&px, 4, 2, 3, usize::MAX, 2).is_err());
        assert!(resize_bicubic(&px, 4, 2, 3, 1 << 40, 1).is_err());
        assert!(resize_bicubic(&px, 4, 2, 3, 20_000, 20_000).is_err());
    }
}
