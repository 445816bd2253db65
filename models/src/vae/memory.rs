//! The VAE decode's peak activation memory, measured on the same allocation logic a run uses: the
//! decode runs on zero latents on the model's device and the device's byte accounting (the GPU
//! pool's size classes, or the CPU backend's exact bytes) gives the peak above what was live
//! before. A planner can call it on a CPU-backend copy of the model (built from
//! `weights::RandomSource` when no checkpoint is at hand): every VAE activation is proportional to
//! the latent area on the CPU backend (its attention is the flash kernel, never a score matrix),
//! and with tiling the peak is the larger of one tile's and the output image's, plus the latents.

use kiln_runtime::{Result, Tensor};

use super::{AutoencoderKL, VaeTiling};

impl AutoencoderKL {
    /// Peak bytes the decode of `[n, latent_channels, h, w]` latents holds on the model's device
    /// beyond what was live before it: the input latents, every activation, and the output image.
    /// Starts a new peak window on the device (`Device::reset_peak_memory`).
    pub fn decode_peak_bytes(
        &self,
        n: usize,
        h: usize,
        w: usize,
        tiling: Option<&VaeTiling>,
    ) -> Result<u64> {
        let device = self.device();
        device.synchronize()?;
        let before = device.memory_stats().live;
        device.reset_peak_memory();
        let shape = [n, self.config().latent_channels, h, w];
        let z = Tensor::zeros(device, &shape, self.dtype())?;
        let image = match tiling {
            Some(t) => self.decode_tiled(&z, t)?,
            None => self.decode(&z)?,
        };
        device.synchronize()?;
        let peak = device.memory_stats().peak_live;
        drop((z, image));
        Ok(peak.saturating_sub(before))
    }
}
