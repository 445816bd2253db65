//! Sinusoidal timestep embeddings for diffusion models (diffusers' `get_timestep_embedding`).

mod cpu;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "timestep.wgsl",
    source: include_str!("timestep.wgsl"),
};

const WORKGROUP: usize = 256;

/// The settings of diffusers' `get_timestep_embedding` (its argument names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimestepEmbedding {
    /// Output width; an odd width gets a zero last column.
    pub dim: usize,
    /// `[cos, sin]` instead of `[sin, cos]`.
    pub flip_sin_to_cos: bool,
    pub downscale_freq_shift: f32,
    pub scale: f32,
    pub max_period: f32,
}

impl TimestepEmbedding {
    /// Stable Diffusion 1.x/2.x's UNet time projection: width 320, `[cos, sin]`, no shift.
    pub fn sd15() -> Self {
        TimestepEmbedding {
            dim: 320,
            flip_sin_to_cos: true,
            downscale_freq_shift: 0.0,
            scale: 1.0,
            max_period: 10000.0,
        }
    }

    /// `-ln(max_period)` and `half - downscale_freq_shift`, rounded to f32 as the reference does.
    fn constants(&self) -> (f32, f32) {
        let half = self.dim / 2;
        (
            -(self.max_period as f64).ln() as f32,
            (half as f64 - self.downscale_freq_shift as f64) as f32,
        )
    }
}

/// `t` `[N]` (float timesteps) to `[N, cfg.dim]` in `t`'s dtype: for `j < dim/2`,
/// `freq_j = exp(-ln(max_period) * j / (dim/2 - downscale_freq_shift))`, `a = scale * t * freq_j`, and
/// each row is `[sin(a), cos(a)]` (`[cos(a), sin(a)]` when flipped). Computed in f32 as diffusers does,
/// so at timestep ~1000 the angles are good to about 1e-4 rad.
pub fn timestep_embedding(t: &Tensor, cfg: &TimestepEmbedding) -> Result<Tensor> {
    let name = "timestep_embedding";
    let dtype = common::same_float_dtype(name, &[("t", t)])?;
    common::rank(name, "t", t, 1)?;
    common::non_empty(name, &[("t", t)])?;
    let (neg_log_period, denom) = cfg.constants();
    let usable = cfg.dim >= 2
        && denom != 0.0
        && neg_log_period.is_finite()
        && cfg.max_period > 0.0
        && denom.is_finite()
        && cfg.scale.is_finite();
    if !usable {
        return Err(Error::shape(
            name,
            format!(
                "unusable settings {cfg:?} for `t` {:?}: need dim >= 2, max_period > 0 and dim/2 != downscale_freq_shift",
                t.shape()
            ),
        ));
    }
    let shape = [t.shape()[0], cfg.dim];
    match t.device() {
        Device::Cpu => cpu::timestep_embedding(t, cfg, neg_log_period, denom),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(t.device(), &shape, dtype, name)?;
            let n = shape[0] * shape[1];
            let params = Params::new()
                .dim(name, n)?
                .dim(name, cfg.dim)?
                .dim(name, cfg.dim / 2)?
                .u32(u32::from(cfg.flip_sin_to_cos))
                .f32(neg_log_period)
                .f32(denom)
                .f32(cfg.scale)
                .align16();
            ctx.dispatch(Dispatch {
                op: name,
                kernel: &SOURCE,
                entry: "timestep_embed",
                variant: Variant::new(dtype),
                params: params.bytes(),
                buffers: &[BufferArg::new(1, "t", t), BufferArg::new(2, "out", &out)],
                workgroups: ctx.grid(name, common::groups_for(n, WORKGROUP))?,
            })?;
            Ok(out)
        }
    }
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    [DType::F32, DType::F16]
        .into_iter()
        .map(|dtype| (&SOURCE, "timestep_embed", Variant::new(dtype)))
        .collect()
}
