use kiln_kernels::norm::{add_rms_norm, group_norm, layer_norm, rms_norm};
use kiln_runtime::{Result, Tensor};

use crate::weights::Weights;

/// GroupNorm over [N, C, ...] with affine weights, optionally followed by SiLU in the same kernel.
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: usize,
    pub eps: f32,
}

impl GroupNorm {
    pub fn new(w: &Weights, groups: usize, channels: usize, eps: f32) -> Result<GroupNorm> {
        Ok(GroupNorm {
            weight: w.get("weight", &[channels])?,
            bias: w.get("bias", &[channels])?,
            groups,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        group_norm(
            x,
            self.groups,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            silu,
        )
    }
}

/// LayerNorm over the last dimension with affine weights.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f32,
}

impl LayerNorm {
    pub fn new(w: &Weights, width: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: w.get("weight", &[width])?,
            bias: w.get("bias", &[width])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, Some(&self.weight), Some(&self.bias), self.eps)
    }
}

/// RMSNorm over the last dimension (Llama, Mistral, Pixtral): a weight and no bias.
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f32,
}

impl RmsNorm {
    pub fn new(w: &Weights, width: usize, eps: f32) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: w.get("weight", &[width])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        rms_norm(x, &self.weight, self.eps)
    }

    /// `(x + residual, norm(x + residual))` in one pass: the residual stream and the next sublayer's
    /// input.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<(Tensor, Tensor)> {
        add_rms_norm(x, residual, &self.weight, self.eps)
    }
}
