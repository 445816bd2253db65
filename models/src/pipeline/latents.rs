//! Host-side latent arithmetic shared by the modes: image <-> tensor conversion, sampling the VAE's
//! latent distribution per image, and the VAE's latent scaling. Latents are small (SD at 512x512:
//! 16 K values per image), so this runs on the host in f32 with diffusers' operation order.

use kiln_runtime::{DType, Tensor};

use super::error::Result;
use super::load::StableDiffusion;
use crate::image::RgbImage;
use crate::rng::NoiseSource;
use crate::vae::VaeTiling;

/// `[1, 3, H, W]` in [-1, 1]: diffusers' image processor, `2 * (x / 255) - 1` in float32.
pub fn image_to_tensor(model: &StableDiffusion, img: &RgbImage) -> Result<Tensor> {
    let (w, h) = (img.width, img.height);
    let mut chw = vec![0f32; 3 * w * h];
    for (p, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * w * h + p] = 2.0 * (f32::from(px[c]) / 255.0) - 1.0;
        }
    }
    Ok(Tensor::from_f32(
        model.vae.device(),
        &[1, 3, h, w],
        DType::F32,
        &chw,
    )?)
}

/// The UNet-scale latents of `image` for each of `batch` images: the VAE's latent distribution
/// sampled with each image's own noise (`mean + exp(logvar / 2) * eps`, diffusers'
/// `latent_dist.sample(generator)`), times the scaling factor. The image is encoded once, in
/// tiles when `tiling` is given.
pub fn encode_sampled(
    model: &StableDiffusion,
    image: &Tensor,
    batch: usize,
    noise: &mut dyn NoiseSource,
    tiling: Option<&VaeTiling>,
) -> Result<Vec<f32>> {
    let dist = match tiling {
        Some(t) => model.vae.encode_tiled(image, t)?,
        None => model.vae.encode(image)?,
    };
    let mean = dist.mean.to_vec_f32()?;
    let logvar = dist.logvar.to_vec_f32()?;
    let eps = noise.randn(batch * mean.len());
    let mut z = Vec::with_capacity(eps.len());
    for e in eps.chunks_exact(mean.len()) {
        z.extend(
            mean.iter()
                .zip(&logvar)
                .zip(e)
                .map(|((&m, &lv), &e)| m + (0.5 * lv).exp() * e),
        );
    }
    Ok(scale(model, z))
}

/// [`encode_sampled`] for a batch of different images (a hires-fix second pass from upscaled
/// images): each through the VAE, then one batch draw samples them all, image i's share from its
/// own noise stream, as for one image repeated.
pub fn encode_each(
    model: &StableDiffusion,
    images: &[Tensor],
    noise: &mut dyn NoiseSource,
    tiling: Option<&VaeTiling>,
) -> Result<Vec<f32>> {
    let (mut mean, mut logvar) = (Vec::new(), Vec::new());
    for image in images {
        let dist = match tiling {
            Some(t) => model.vae.encode_tiled(image, t)?,
            None => model.vae.encode(image)?,
        };
        mean.extend(dist.mean.to_vec_f32()?);
        logvar.extend(dist.logvar.to_vec_f32()?);
    }
    let eps = noise.randn(mean.len());
    let z = mean
        .iter()
        .zip(&logvar)
        .zip(&eps)
        .map(|((&m, &lv), &e)| m + (0.5 * lv).exp() * e)
        .collect();
    Ok(scale(model, z))
}

/// VAE latents -> the UNet's: `scaling_factor * z` (after subtracting `shift_factor`, if any).
pub fn scale(model: &StableDiffusion, mut z: Vec<f32>) -> Vec<f32> {
    let cfg = model.vae.config();
    let s = cfg.scaling_factor;
    match cfg.shift_factor {
        None => z.iter_mut().for_each(|v| *v *= s),
        Some(shift) => z.iter_mut().for_each(|v| *v = (*v - shift) * s),
    }
    z
}

/// The UNet's latents -> the VAE's, as diffusers divides before `vae.decode`.
pub fn unscale(model: &StableDiffusion, z: &[f32]) -> Vec<f32> {
    let cfg = model.vae.config();
    let s = cfg.scaling_factor;
    let shift = cfg.shift_factor.unwrap_or(0.0);
    z.iter().map(|&v| v / s + shift).collect()
}
