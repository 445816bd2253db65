//! The timestep path: diffusers' `Timesteps` (sinusoidal features, computed in f32 like diffusers,
//! then cast to the model dtype) followed by `TimestepEmbedding` (linear_1 -> SiLU -> linear_2).

use kiln_kernels::elementwise::{cast, silu};
use kiln_kernels::timestep::{timestep_embedding, TimestepEmbedding};
use kiln_runtime::{DType, Result, Tensor};

use kiln_nn::weights::Weights;
use kiln_nn::Linear;

pub struct TimeEmbedding {
    proj: TimestepEmbedding,
    linear_1: Linear,
    linear_2: Linear,
    dtype: DType,
}

impl TimeEmbedding {
    /// `w` is `time_embedding`; `proj_dim` the sinusoid width, `embed_dim` the output width.
    pub fn new(
        w: &Weights,
        proj_dim: usize,
        embed_dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f32,
    ) -> Result<TimeEmbedding> {
        Ok(TimeEmbedding {
            proj: TimestepEmbedding {
                dim: proj_dim,
                flip_sin_to_cos,
                downscale_freq_shift: freq_shift,
                scale: 1.0,
                max_period: 10000.0,
            },
            linear_1: Linear::new(&w.pp("linear_1"), proj_dim, embed_dim, true)?,
            linear_2: Linear::new(&w.pp("linear_2"), embed_dim, embed_dim, true)?,
            dtype: w.dtype(),
        })
    }

    /// `t` [N] float timesteps on the model's device -> [N, embed_dim] in the model dtype.
    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        // diffusers computes the sinusoid in f32: fractional timesteps near 1000 (Karras schedules)
        // would round to steps of 0.5 in f16, moving the fastest angle by up to 0.25 rad.
        let t = cast(t, DType::F32)?;
        let features = cast(&timestep_embedding(&t, &self.proj)?, self.dtype)?;
        let h = silu(&self.linear_1.forward(&features)?)?;
        self.linear_2.forward(&h)
    }
}
