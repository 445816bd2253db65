//! How much of each residual a ControlNet hands the UNet: one factor per skip connection plus
//! the mid block, in `down_block_res_samples` order with the mid block last.

/// The shape of the per-residual factors (each multiplied by the unit's weight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResidualCurve {
    /// The weight for every residual (diffusers' default; the A1111 extension's "Balanced").
    Flat,
    /// diffusers' `guess_mode`: `torch.logspace(-1, 0, n)`, 0.1 for the first skip to 1.0 for
    /// the mid block.
    Guess,
    /// The A1111 extension's "soft injection" (its two non-balanced control modes, and canny in
    /// a hires-fix pass): `0.825 ** (12 - i)`, counted for SD 1.x's 13 residuals and cut to the
    /// first ones for a shorter down path (SDXL's 10 end at `0.825 ** 3`, not 1.0), as
    /// `scripts/hook.py` does.
    Soft,
}

/// The base of the extension's soft-injection curve.
const SOFT_BASE: f64 = 0.825;
/// The exponent of the first residual: SD 1.x has 12 skip connections before the mid block.
const SOFT_FIRST_EXPONENT: i32 = 12;

/// `weight` times the curve's factor for each of `n` residuals. diffusers skips the guess curve
/// for `global_pool_conditions` models (their residuals are means over the plane); the
/// extension's soft curve applies to them as to any other.
pub fn residual_scales(curve: ResidualCurve, n: usize, weight: f32, global_pool: bool) -> Vec<f32> {
    match curve {
        ResidualCurve::Guess if !global_pool => {
            guess_scales(n).iter().map(|s| s * weight).collect()
        }
        ResidualCurve::Soft => soft_scales(n)
            .iter()
            // In f64 as Python multiplies `weight * 0.825 ** k` before it meets the tensor.
            .map(|s| (f64::from(weight) * s) as f32)
            .collect(),
        _ => vec![weight; n],
    }
}

/// `0.825 ** (12 - i)` for `i` in `0..n`.
pub fn soft_scales(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| SOFT_BASE.powi(SOFT_FIRST_EXPONENT - i as i32))
        .collect()
}

/// `torch.logspace(-1, 0, n)` in float32, as ATen computes it: the first half counted up from
/// the start, the second half down from the end.
pub fn guess_scales(n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![0.1];
    }
    let (start, end) = (-1.0f32, 0.0f32);
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            let e = if i < half {
                start + step * i as f32
            } else {
                end - step * (n - i - 1) as f32
            };
            10f32.powf(e)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guess_scales_run_from_a_tenth_to_one() {
        let s = guess_scales(13);
        assert_eq!(s.len(), 13);
        assert!((s[0] - 0.1).abs() < 1e-7 && s[12] == 1.0);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert!((s[6] - 10f32.powf(-0.5)).abs() < 1e-6);
    }

    /// The extension's list, written out: `[w * 0.825 ** (12 - i) for i in range(13)]`, cut to
    /// 10 for SDXL.
    fn extension_soft(w: f64, n: usize) -> Vec<f32> {
        let mut factor = 1.0f64;
        let mut all = vec![0.0; 13];
        for i in (0..13).rev() {
            all[i] = (w * factor) as f32;
            factor *= 0.825;
        }
        all.truncate(n);
        all
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-6 * y.abs())
    }

    #[test]
    fn soft_scales_follow_the_extension_for_sd1_and_sdxl() {
        let sd1 = residual_scales(ResidualCurve::Soft, 13, 0.8, false);
        assert!(close(&sd1, &extension_soft(0.8, 13)), "{sd1:?}");
        assert!(
            (sd1[12] - 0.8).abs() < 1e-7,
            "the mid block gets the full weight"
        );
        assert!((sd1[0] - 0.8 * 0.099_413_96).abs() < 1e-6, "{}", sd1[0]);
        let xl = residual_scales(ResidualCurve::Soft, 10, 1.0, false);
        assert!(close(&xl, &extension_soft(1.0, 10)), "{xl:?}");
        // SDXL's mid block is the 10th entry of SD1's list: 0.825 ** 3.
        assert!((xl[9] - 0.561_515_6).abs() < 1e-6, "{}", xl[9]);
        // Soft scales pooled models too.
        assert_eq!(residual_scales(ResidualCurve::Soft, 10, 1.0, true), xl);
    }

    #[test]
    fn flat_and_guess_scales() {
        assert_eq!(
            residual_scales(ResidualCurve::Flat, 13, 0.7, false),
            vec![0.7; 13]
        );
        let g = residual_scales(ResidualCurve::Guess, 10, 0.5, false);
        let want: Vec<f32> = (0..10)
            .map(|i| 0.5 * 10f64.powf(-1.0 + i as f64 / 9.0) as f32)
            .collect();
        assert!(close(&g, &want), "{g:?}");
        // diffusers skips the guess curve for global_pool_conditions models.
        assert_eq!(
            residual_scales(ResidualCurve::Guess, 10, 0.5, true),
            vec![0.5; 10]
        );
    }
}
