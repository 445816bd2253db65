use kiln_kernels::matmul::linear;
use kiln_kernels::quant::qlinear;
use kiln_runtime::{Result, Tensor};
use std::sync::Arc;

use super::LayerWeight;
use crate::lora::{LoraSlot, LoraTarget};
use crate::weights::Weights;

/// `y = x W^T + b` with PyTorch's [out, in] weight layout; the weight may be packed (quantised).
pub struct Linear {
    pub weight: LayerWeight,
    pub bias: Option<Tensor>,
    /// Adapters added to the output, when the model registers its layers (`Weights::with_lora`).
    pub lora: Option<Arc<LoraSlot>>,
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
        let lora = Linear::lora_slot(w, in_features, out_features);
        Ok(Linear { weight, bias, lora })
    }

    /// The LoRA slot of a `[out, inp]` layer at `w`'s prefix (for Linears assembled by hand).
    pub fn lora_slot(w: &Weights, inp: usize, out: usize) -> Option<Arc<LoraSlot>> {
        w.lora_slot(LoraTarget::Linear { inp, out })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            LayerWeight::Float(weight) => linear(x, weight, self.bias.as_ref()),
            LayerWeight::Packed(weight) => qlinear(x, weight, self.bias.as_ref()),
        }?;
        match &self.lora {
            Some(slot) if !slot.is_empty() => slot.apply_linear(x, y),
            _ => Ok(y),
        }
    }
}
