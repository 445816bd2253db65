//! `CLIPMLP`: fc1, the configured activation, fc2.

use kiln_kernels::elementwise::{unary, Unary};
use kiln_runtime::{Result, Tensor};

use super::config::{ClipActivation, ClipTextConfig};
use kiln_nn::weights::Weights;
use kiln_nn::Linear;

pub struct ClipMlp {
    fc1: Linear,
    fc2: Linear,
    act: Unary,
}

impl ClipMlp {
    /// `w` is `...mlp`.
    pub fn new(cfg: &ClipTextConfig, w: &Weights) -> Result<ClipMlp> {
        let (d, inner) = (cfg.hidden_size, cfg.intermediate_size);
        let act = match cfg.hidden_act {
            ClipActivation::QuickGelu => Unary::QuickGelu,
            ClipActivation::Gelu => Unary::GeluErf,
            ClipActivation::GeluTanh => Unary::GeluTanh,
        };
        Ok(ClipMlp {
            fc1: Linear::new(&w.pp("fc1"), d, inner, true)?,
            fc2: Linear::new(&w.pp("fc2"), inner, d, true)?,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = unary(&self.fc1.forward(x)?, self.act)?;
        self.fc2.forward(&h)
    }
}
