use kiln_kernels::matmul::linear;
use kiln_kernels::quant::qlinear;
use kiln_runtime::{Result, Tensor};

use super::LayerWeight;
use crate::weights::Weights;

/// `y = x W^T + b` with PyTorch's [out, in] weight layout; the weight may be packed (quantised).
pub struct Linear {
    pub weight: LayerWeight,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(w: &Weights, in_features: usize, out_features: usize, bias: bool) -> Result<Linear> {
        let weight = w.get_packable(
            "weight",
            &[out_features, in_features],
            out_features,
            in_features,
        )?;
        let bias = if bias {
            Some(w.get("bias", &[out_features])?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            LayerWeight::Float(weight) => linear(x, weight, self.bias.as_ref()),
            LayerWeight::Packed(weight) => qlinear(x, weight, self.bias.as_ref()),
        }
    }
}
