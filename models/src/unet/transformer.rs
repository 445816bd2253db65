//! diffusers' `Transformer2DModel` on continuous inputs (the UNet's spatial transformer) and its
//! `BasicTransformerBlock`s: GroupNorm, project the channels in, self-attention, cross-attention to
//! the text, GEGLU feed-forward (each pre-LayerNorm with a residual), project out, add the input.

use kiln_kernels::elementwise::{add, geglu};
use kiln_kernels::layout::{concat, narrow, permute};
use kiln_runtime::{Result, Tensor};

use super::attention::Attention;
use kiln_nn::weights::Weights;
use kiln_nn::{GroupNorm, LayerNorm, LayerWeight, Linear};

/// Transformer2DModel's own GroupNorm eps, fixed in diffusers whatever the UNet's `norm_eps`.
const GROUP_NORM_EPS: f32 = 1e-6;
/// BasicTransformerBlock's LayerNorm eps (its `norm_eps` default, which the UNet never changes).
const LAYER_NORM_EPS: f32 = 1e-5;
/// The feed-forward's inner width is this multiple of the model width (`FeedForward.mult`).
const FF_MULT: usize = 4;
/// Most elements of the feed-forward's widest activation (the GEGLU input, 2 x inner per token)
/// held at once: 16 MiB in f32. Tokens beyond it run in chunks (diffusers' forward chunking), which
/// takes SD 1.5's step peak at 512x512 from ~240 to ~150 MiB; each token's arithmetic is unchanged.
const FF_CHUNK_ELEMENTS: usize = 1 << 22;

/// Sizes of one spatial transformer.
#[derive(Clone, Copy)]
pub struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub depth: usize,
    pub cross_attention_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
}

pub struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Linear,
    blocks: Vec<TransformerBlock>,
    proj_out: Linear,
}

/// `proj_in` / `proj_out`: a Linear (SD 2.x) or a 1x1 conv (SD 1.x). A 1x1 conv over NCHW is the same
/// Linear over channels-last tokens, so both become a Linear and the forward has one path; the conv's
/// [out, in, 1, 1] weight reshapes to [out, in] for free.
fn projection(w: &Weights, cin: usize, cout: usize, linear: bool) -> Result<Linear> {
    if linear {
        return Linear::new(w, cin, cout, true);
    }
    let weight = match w.get_packable("weight", &[cout, cin, 1, 1], cout, cin)? {
        LayerWeight::Float(t) => LayerWeight::Float(t.reshape(&[cout, cin])?),
        packed => packed,
    };
    let bias = Some(w.get("bias", &[cout])?);
    let lora = Linear::lora_slot(w, cin, cout);
    Ok(Linear { weight, bias, lora })
}

impl SpatialTransformer {
    pub fn new(w: &Weights, s: &TransformerSpec) -> Result<SpatialTransformer> {
        let c = s.channels;
        // inner_dim = heads * (channels / heads) = channels: the config check guarantees the split.
        let head_dim = c / s.heads;
        let blocks = (0..s.depth)
            .map(|k| {
                TransformerBlock::new(
                    &w.pp(format!("transformer_blocks.{k}")),
                    c,
                    s.cross_attention_dim,
                    s.heads,
                    head_dim,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SpatialTransformer {
            norm: GroupNorm::new(&w.pp("norm"), s.groups, c, GROUP_NORM_EPS)?,
            proj_in: projection(&w.pp("proj_in"), c, c, s.linear_projection)?,
            blocks,
            proj_out: projection(&w.pp("proj_out"), c, c, s.linear_projection)?,
        })
    }

    /// `x` [B, C, H, W], `context` [B, L, cross_attention_dim] -> [B, C, H, W].
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        let t = self.norm.forward(x, false)?;
        let t = permute(&t, &[0, 2, 3, 1])?.reshape(&[b, h * w, c])?;
        let mut t = self.proj_in.forward(&t)?;
        for block in &self.blocks {
            t = block.forward(&t, context)?;
        }
        let t = self.proj_out.forward(&t)?;
        let t = permute(&t.reshape(&[b, h, w, c])?, &[0, 3, 1, 2])?;
        add(&t, x)
    }
}

pub struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    /// GEGLU input projection to 2 x inner (`ff.net.0.proj`).
    ff_in: Linear,
    /// `ff.net.2` (`ff.net.1` is dropout).
    ff_out: Linear,
}

impl TransformerBlock {
    fn new(
        w: &Weights,
        dim: usize,
        cross_dim: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<TransformerBlock> {
        let inner = FF_MULT * dim;
        Ok(TransformerBlock {
            norm1: LayerNorm::new(&w.pp("norm1"), dim, LAYER_NORM_EPS)?,
            attn1: Attention::new(&w.pp("attn1"), dim, dim, heads, head_dim)?,
            norm2: LayerNorm::new(&w.pp("norm2"), dim, LAYER_NORM_EPS)?,
            attn2: Attention::new(&w.pp("attn2"), dim, cross_dim, heads, head_dim)?,
            norm3: LayerNorm::new(&w.pp("norm3"), dim, LAYER_NORM_EPS)?,
            ff_in: Linear::new(&w.pp("ff.net.0.proj"), dim, 2 * inner, true)?,
            ff_out: Linear::new(&w.pp("ff.net.2"), inner, dim, true)?,
        })
    }

    /// `x` [B, HW, C] image tokens, `context` [B, L, cross_dim] text tokens.
    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = add(&self.attn1.forward(&self.norm1.forward(x)?, None)?, x)?;
        let x = add(
            &self
                .attn2
                .forward(&self.norm2.forward(&x)?, Some(context))?,
            &x,
        )?;
        let ff = self.feed_forward(&self.norm3.forward(&x)?)?;
        add(&ff, &x)
    }

    /// GEGLU feed-forward over [B, L, dim], in chunks of tokens when the GEGLU input would hold
    /// more than `FF_CHUNK_ELEMENTS`.
    fn feed_forward(&self, x: &Tensor) -> Result<Tensor> {
        let width = self.ff_in.weight.shape()[0];
        self.feed_forward_chunked(x, (FF_CHUNK_ELEMENTS / width).max(1))
    }

    /// The feed-forward in chunks of at most `chunk` tokens.
    fn feed_forward_chunked(&self, x: &Tensor, chunk: usize) -> Result<Tensor> {
        let shape = x.shape().to_vec();
        let dim = x.dim(-1);
        let tokens = x.numel() / dim;
        if tokens <= chunk {
            return self.ff_out.forward(&geglu(&self.ff_in.forward(x)?)?);
        }
        let rows = x.reshape(&[tokens, dim])?;
        let mut parts = Vec::with_capacity(tokens.div_ceil(chunk));
        for start in (0..tokens).step_by(chunk) {
            let part = narrow(&rows, 0, start, chunk.min(tokens - start))?;
            parts.push(self.ff_out.forward(&geglu(&self.ff_in.forward(&part)?)?)?);
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        concat(&refs, 0)?.reshape(&shape)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kiln_kernels::testing::{assert_close, with_gpu};
    use kiln_runtime::{DType, Device};

    use super::*;
    use kiln_nn::weights::RandomSource;

    /// Chunks of tokens (7 then 7, 4; or 1 at a time) give what one pass gives, within f32
    /// rounding (atol 1e-5, rtol 1e-5 on O(0.1) outputs): the same products per token, though the
    /// CPU GEMM may block a different row count differently.
    #[test]
    fn feed_forward_in_chunks_matches_one_pass() {
        let mut devices = vec![Device::Cpu];
        with_gpu(|gpu| devices.push(gpu.clone()));
        for device in devices {
            let w = Weights::from_source(Arc::new(RandomSource::new("ff", 3)), &device, DType::F32);
            let block = TransformerBlock::new(&w, 32, 16, 2, 16).unwrap();
            let x: Vec<f32> = (0..2 * 9 * 32)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let x = Tensor::from_f32(&device, &[2, 9, 32], DType::F32, &x).unwrap();
            let whole = block.feed_forward_chunked(&x, usize::MAX).unwrap();
            for chunk in [7, 1] {
                let parts = block.feed_forward_chunked(&x, chunk).unwrap();
                assert_eq!(parts.shape(), [2, 9, 32]);
                assert_close(
                    &format!("{} chunk {chunk}", device.name()),
                    &parts.to_vec_f32().unwrap(),
                    &whole.to_vec_f32().unwrap(),
                    1e-5,
                    1e-5,
                );
            }
        }
    }
}
