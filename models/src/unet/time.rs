//! The timestep path: diffusers' `Timesteps` (sinusoidal features, computed in f32 like diffusers,
//! then cast to the model dtype) followed by `TimestepEmbedding` (linear_1 -> SiLU -> linear_2).
//! SDXL's added conditioning (`added.rs`) reuses both parts.

use kiln_kernels::elementwise::{cast, silu};
use kiln_kernels::timestep::{timestep_embedding, TimestepEmbedding};
use kiln_runtime::{DType, Result, Tensor};

use kiln_nn::weights::Weights;
use kiln_nn::Linear;

/// diffusers' `TimestepEmbedding`: linear_1 -> SiLU -> linear_2.
pub struct EmbeddingMlp {
    linear_1: Linear,
    linear_2: Linear,
}

impl EmbeddingMlp {
    /// `w` holds `linear_1` (`in_dim` -> `embed_dim`) and `linear_2` (`embed_dim` -> `embed_dim`).
    pub fn new(w: &Weights, in_dim: usize, embed_dim: usize) -> Result<EmbeddingMlp> {
        Ok(EmbeddingMlp {
            linear_1: Linear::new(&w.pp("linear_1"), in_dim, embed_dim, true)?,
            linear_2: Linear::new(&w.pp("linear_2"), embed_dim, embed_dim, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = silu(&self.linear_1.forward(x)?)?;
        self.linear_2.forward(&h)
    }
}

/// diffusers' `Timesteps`: `[N]` values -> `[N, dim]` sinusoidal features in `dtype`.
pub struct Sinusoid {
    proj: TimestepEmbedding,
    dtype: DType,
}

impl Sinusoid {
    pub fn new(dim: usize, flip_sin_to_cos: bool, freq_shift: f32, dtype: DType) -> Sinusoid {
        Sinusoid {
            proj: TimestepEmbedding {
                dim,
                flip_sin_to_cos,
                downscale_freq_shift: freq_shift,
                scale: 1.0,
                max_period: 10000.0,
            },
            dtype,
        }
    }

    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        // diffusers computes the sinusoid in f32: fractional timesteps near 1000 (Karras schedules)
        // would round to steps of 0.5 in f16, moving the fastest angle by up to 0.25 rad.
        let t = cast(t, DType::F32)?;
        cast(&timestep_embedding(&t, &self.proj)?, self.dtype)
    }
}

pub struct TimeEmbedding {
    proj: Sinusoid,
    mlp: EmbeddingMlp,
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
            proj: Sinusoid::new(proj_dim, flip_sin_to_cos, freq_shift, w.dtype()),
            mlp: EmbeddingMlp::new(w, proj_dim, embed_dim)?,
        })
    }

    /// `t` [N] float timesteps on the model's device -> [N, embed_dim] in the model dtype.
    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        self.mlp.forward(&self.proj.forward(t)?)
    }
}
