use kiln_kernels::matmul::linear;
use kiln_runtime::{Result, Tensor};

use crate::weights::Weights;

/// `y = x W^T + b` with PyTorch's [out, in] weight layout.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(w: &Weights, in_features: usize, out_features: usize, bias: bool) -> Result<Linear> {
        let weight = w.get("weight", &[out_features, in_features])?;
        let bias = if bias {
            Some(w.get("bias", &[out_features])?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.weight, self.bias.as_ref())
    }
}
