//! diffusers' `Attention` as `BasicTransformerBlock` builds it: bias-free q/k/v projections, a biased
//! output projection (`to_out.0`), scale 1/sqrt(head_dim). Self-attention when no context is given.

use kiln_kernels::attention::{attention, AttentionOptions};
use kiln_runtime::{Result, Tensor};

use kiln_nn::weights::Weights;
use kiln_nn::Linear;

pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    /// `query_dim` is the image token width, `context_dim` the width keys and values are projected
    /// from (the same for self-attention), `heads * head_dim` the inner width.
    pub fn new(
        w: &Weights,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<Attention> {
        let inner = heads * head_dim;
        Ok(Attention {
            to_q: Linear::new(&w.pp("to_q"), query_dim, inner, false)?,
            to_k: Linear::new(&w.pp("to_k"), context_dim, inner, false)?,
            to_v: Linear::new(&w.pp("to_v"), context_dim, inner, false)?,
            // `to_out.1` is a dropout layer, so only index 0 has weights.
            to_out: Linear::new(&w.pp("to_out.0"), inner, query_dim, true)?,
            heads,
            head_dim,
        })
    }

    /// `x` [B, Lq, query_dim]; `context` [B, Lk, context_dim] or `None` for self-attention.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let (b, lq, lk) = (x.dim(0), x.dim(1), ctx.dim(1));
        // A Linear output [B, L, H*D] is already [B, L, H, D] in memory: the reshapes are free.
        let q = self
            .to_q
            .forward(x)?
            .reshape(&[b, lq, self.heads, self.head_dim])?;
        let k = self
            .to_k
            .forward(ctx)?
            .reshape(&[b, lk, self.heads, self.head_dim])?;
        let v = self
            .to_v
            .forward(ctx)?
            .reshape(&[b, lk, self.heads, self.head_dim])?;
        let o = attention(&q, &k, &v, AttentionOptions::default())?;
        drop((q, k, v));
        let o = o.reshape(&[b, lq, self.heads * self.head_dim])?;
        self.to_out.forward(&o)
    }
}
