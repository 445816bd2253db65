use kiln_kernels::elementwise::swiglu;
use kiln_kernels::rope::RopeStyle;
use kiln_nn::weights::Weights;
use kiln_nn::{Attention, AttentionConfig, KvBuffers, Linear, RmsNorm};
use kiln_runtime::{Result, Tensor};

use crate::config::MistralConfig;

/// The SiLU-gated feed-forward: `down(silu(gate(x)) * up(x))`.
pub struct Mlp {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl Mlp {
    pub fn new(w: &Weights, hidden: usize, intermediate: usize) -> Result<Mlp> {
        Ok(Mlp {
            gate: Linear::new(&w.pp("gate_proj"), hidden, intermediate, false)?,
            up: Linear::new(&w.pp("up_proj"), hidden, intermediate, false)?,
            down: Linear::new(&w.pp("down_proj"), intermediate, hidden, false)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down
            .forward(&swiglu(&self.gate.forward(x)?, &self.up.forward(x)?)?)
    }
}

/// One pre-norm decoder layer (`model.layers.N`).
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

pub fn attention_config(c: &MistralConfig) -> AttentionConfig {
    AttentionConfig {
        hidden: c.hidden_size,
        heads: c.num_attention_heads,
        kv_heads: c.num_key_value_heads,
        head_dim: c.head_dim,
        qkv_bias: c.attention_bias,
        // Hugging Face checkpoints keep the half-split pairing (llama.cpp's GGUF files permute
        // q/k rows to interleaved pairs instead).
        rope: Some((c.rope_theta, RopeStyle::HalfSplit)),
        sliding_window: c.sliding_window,
    }
}

impl DecoderLayer {
    pub fn new(w: &Weights, c: &MistralConfig) -> Result<DecoderLayer> {
        let eps = c.rms_norm_eps;
        Ok(DecoderLayer {
            input_layernorm: RmsNorm::new(&w.pp("input_layernorm"), c.hidden_size, eps)?,
            self_attn: Attention::new(&w.pp("self_attn"), attention_config(c))?,
            post_attention_layernorm: RmsNorm::new(
                &w.pp("post_attention_layernorm"),
                c.hidden_size,
                eps,
            )?,
            mlp: Mlp::new(&w.pp("mlp"), c.hidden_size, c.intermediate_size)?,
        })
    }

    /// Runs the layer on the normed input `h`; `x` is the residual stream before it. Returns the
    /// residual after attention and the MLP's output, which the next norm adds in (fused).
    pub fn forward(
        &self,
        x: &Tensor,
        h: &Tensor,
        positions: &Tensor,
        kv: &mut KvBuffers,
        start: usize,
    ) -> Result<(Tensor, Tensor)> {
        let attn = self.self_attn.forward_cached(h, positions, kv, start)?;
        self.after_attention(&attn, x)
    }

    /// As [`forward`](Self::forward) for one decode step of several sequences, row `b` cached in
    /// `kvs[b]` at `starts[b]` (`Attention::forward_cached_batch`).
    pub fn forward_batch(
        &self,
        x: &Tensor,
        h: &Tensor,
        positions: &Tensor,
        kvs: &mut [&mut KvBuffers],
        starts: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let attn = self
            .self_attn
            .forward_cached_batch(h, positions, kvs, starts)?;
        self.after_attention(&attn, x)
    }

    fn after_attention(&self, attn: &Tensor, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (x, h) = self.post_attention_layernorm.forward_residual(attn, x)?;
        let mlp = self.mlp.forward(&h)?;
        Ok((x, mlp))
    }
}
