//! `CLIPAttention`: multi-head self-attention with separate q/k/v/out projections.

use kiln_kernels::attention::{attention, AttentionOptions};
use kiln_runtime::{Result, Tensor};

use super::config::ClipTextConfig;
use kiln_nn::weights::Weights;
use kiln_nn::Linear;

pub struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl ClipAttention {
    /// `w` is `...self_attn`.
    pub fn new(cfg: &ClipTextConfig, w: &Weights) -> Result<ClipAttention> {
        let d = cfg.hidden_size;
        Ok(ClipAttention {
            q_proj: Linear::new(&w.pp("q_proj"), d, d, true)?,
            k_proj: Linear::new(&w.pp("k_proj"), d, d, true)?,
            v_proj: Linear::new(&w.pp("v_proj"), d, d, true)?,
            out_proj: Linear::new(&w.pp("out_proj"), d, d, true)?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
        })
    }

    /// `x` `[B, L, hidden]`. The text tower is causal: token i sees tokens 0..=i (transformers'
    /// `create_causal_mask`); the scale is transformers' `head_dim ** -0.5`, the kernel's default.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, d) = (x.dim(0), x.dim(1), x.dim(2));
        let heads = [b, l, self.heads, self.head_dim];
        let q = self.q_proj.forward(x)?.reshape(&heads)?;
        let k = self.k_proj.forward(x)?.reshape(&heads)?;
        let v = self.v_proj.forward(x)?.reshape(&heads)?;
        let opts = AttentionOptions {
            causal: true,
            ..Default::default()
        };
        let out = attention(&q, &k, &v, opts)?.reshape(&[b, l, d])?;
        self.out_proj.forward(&out)
    }
}
