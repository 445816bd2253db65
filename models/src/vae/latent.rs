//! The encoder's latent distribution (diffusers' `DiagonalGaussianDistribution`): a mean and a
//! log-variance per latent element. These tensors are latent-sized (SD at 512x512: 4 x 64 x 64 per
//! image), so splitting, clamping and sampling run on the host, with the results put back on the
//! model's device; the noise comes from the caller (the pipeline's seeded generator).

use kiln_runtime::{Error, Result, Tensor};

/// diffusers clamps the log-variance to this range before anything uses it.
pub const LOGVAR_RANGE: (f32, f32) = (-30.0, 20.0);

const OP: &str = "vae latent distribution";

/// `N(mean, exp(logvar))` per element, both [N, latent_channels, h, w] on the model's device.
#[derive(Clone, Debug)]
pub struct LatentDist {
    pub mean: Tensor,
    /// Already clamped to `LOGVAR_RANGE`, as diffusers' `latent_dist.logvar`.
    pub logvar: Tensor,
}

impl LatentDist {
    /// Splits the encoder's moments [N, 2C, h, w] (mean channels first, as `torch.chunk(.., 2, dim=1)`).
    pub fn from_moments(moments: &Tensor) -> Result<LatentDist> {
        let s = moments.shape();
        if moments.rank() != 4 || !s[1].is_multiple_of(2) {
            return Err(Error::shape(
                OP,
                format!("moments {s:?} must be [N, 2 * latent_channels, h, w]"),
            ));
        }
        let values = moments.to_vec_f32()?;
        let half = s[1] / 2 * s[2] * s[3];
        let mut mean = Vec::with_capacity(values.len() / 2);
        let mut logvar = Vec::with_capacity(values.len() / 2);
        for sample in values.chunks_exact(2 * half) {
            mean.extend_from_slice(&sample[..half]);
            let (lo, hi) = LOGVAR_RANGE;
            logvar.extend(sample[half..].iter().map(|v| v.clamp(lo, hi)));
        }
        let shape = [s[0], s[1] / 2, s[2], s[3]];
        let put = |v: &[f32]| Tensor::from_f32(moments.device(), &shape, moments.dtype(), v);
        Ok(LatentDist {
            mean: put(&mean)?,
            logvar: put(&logvar)?,
        })
    }

    /// The most likely latents (diffusers' `mode()`): the mean.
    pub fn mode(&self) -> &Tensor {
        &self.mean
    }

    /// `mean + exp(logvar / 2) * noise` (diffusers' `sample()` with its noise passed in).
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        latents_from(&self.mean, &self.logvar, noise)
    }
}

/// `mean + exp(clamp(logvar) / 2) * noise`, with standard normal `noise` of the same shape on any
/// device; the result is on `mean`'s device in `mean`'s dtype.
pub fn latents_from(mean: &Tensor, logvar: &Tensor, noise: &Tensor) -> Result<Tensor> {
    for (name, t) in [("logvar", logvar), ("noise", noise)] {
        if t.shape() != mean.shape() {
            return Err(Error::shape(
                OP,
                format!(
                    "`{name}` {:?} does not match `mean` {:?}",
                    t.shape(),
                    mean.shape()
                ),
            ));
        }
    }
    let (m, lv, e) = (
        mean.to_vec_f32()?,
        logvar.to_vec_f32()?,
        noise.to_vec_f32()?,
    );
    let (lo, hi) = LOGVAR_RANGE;
    let z: Vec<f32> = m
        .iter()
        .zip(&lv)
        .zip(&e)
        .map(|((&m, &lv), &e)| m + (0.5 * lv.clamp(lo, hi)).exp() * e)
        .collect();
    Tensor::from_f32(mean.device(), mean.shape(), mean.dtype(), &z)
}
