//! OpenCV's `cv2.GaussianBlur(float_image, (0, 0), sigma)`: a separable kernel of size
//! `round(8 sigma + 1) | 1` (OpenCV's size for float images), weights `exp(-x² / 2σ²)` normalised,
//! and reflect-101 borders (`dcb|abcd|cba`), the default.

/// Blurs each of `channels` interleaved planes of a `width` x `height` float image.
pub fn gaussian_blur(
    data: &[f32],
    width: usize,
    height: usize,
    channels: usize,
    sigma: f64,
) -> Vec<f32> {
    let kernel = kernel(sigma);
    let r = kernel.len() / 2;
    let mut rows = vec![0f32; data.len()];
    for y in 0..height {
        for x in 0..width {
            for c in 0..channels {
                let mut acc = 0f32;
                for (k, &wt) in kernel.iter().enumerate() {
                    let sx = reflect101(x as isize + k as isize - r as isize, width);
                    acc += wt * data[(y * width + sx) * channels + c];
                }
                rows[(y * width + x) * channels + c] = acc;
            }
        }
    }
    let mut out = vec![0f32; data.len()];
    for y in 0..height {
        for x in 0..width {
            for c in 0..channels {
                let mut acc = 0f32;
                for (k, &wt) in kernel.iter().enumerate() {
                    let sy = reflect101(y as isize + k as isize - r as isize, height);
                    acc += wt * rows[(sy * width + x) * channels + c];
                }
                out[(y * width + x) * channels + c] = acc;
            }
        }
    }
    out
}

fn kernel(sigma: f64) -> Vec<f32> {
    let n = ((sigma * 8.0 + 1.0).round() as usize) | 1;
    let half = (n / 2) as f64;
    let raw: Vec<f64> = (0..n)
        .map(|i| {
            let x = i as f64 - half;
            (-x * x / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|v| (v / sum) as f32).collect()
}

/// Index `i` folded into `0..n` as `gfedcb|abcdefgh|gfedcba`; a 1-wide image repeats its pixel.
fn reflect101(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let mut i = i.rem_euclid(period);
    if i >= n as isize {
        i = period - i;
    }
    i as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sizes_and_sums_follow_opencv() {
        assert_eq!(kernel(0.5).len(), 5);
        assert_eq!(kernel(5.0).len(), 41);
        let sum: f32 = kernel(5.0).iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
    }

    #[test]
    fn reflect101_folds_without_repeating_the_edge() {
        let idx: Vec<usize> = (-3..7).map(|i| reflect101(i, 4)).collect();
        assert_eq!(idx, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }

    #[test]
    fn a_constant_image_stays_constant() {
        let data = vec![7.0f32; 5 * 3 * 2];
        let out = gaussian_blur(&data, 5, 3, 2, 5.0);
        assert!(out.iter().all(|v| (v - 7.0).abs() < 1e-4));
    }
}
