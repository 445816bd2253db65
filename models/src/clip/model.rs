//! transformers' `CLIPTextModel`: token + position embeddings, causal pre-norm encoder layers and a
//! final LayerNorm, with clip skip and the pooled (EOS) output.

use kiln_kernels::elementwise::add;
use kiln_kernels::embedding::embedding;
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use super::config::ClipTextConfig;
use super::layer::ClipEncoderLayer;
use super::pooling::eos_positions;
use std::sync::Arc;

use kiln_nn::lora::LoraRegistry;
use kiln_nn::weights::Weights;
use kiln_nn::LayerNorm;

/// The prefix of every weight name in the layout the SD checkpoints on the hub use (saved by
/// transformers 4). transformers 5 saves the same model without it; both load.
pub const TEXT_MODEL_PREFIX: &str = "text_model";

/// A token-embedding row replaced before the encoder runs (a textual-inversion vector): the row
/// of the flattened `[B * L]` tokens and its `hidden_size` values.
pub type TokenOverride<'a> = (usize, &'a [f32]);

/// `forward_with_pooled`'s result.
pub struct ClipTextOutput {
    /// `[B, L, hidden]`: the clip-skip layer's hidden states after `final_layer_norm`.
    pub hidden_states: Tensor,
    /// `[B, hidden]`: transformers' `pooler_output`, taken from the LAST layer after
    /// `final_layer_norm` whatever the clip skip, as transformers computes it.
    pub pooled: Tensor,
}

pub struct ClipTextModel {
    cfg: ClipTextConfig,
    /// In host memory whatever the device (as llama.cpp keeps its token embeddings): a lookup reads
    /// 77 of its 49,408 rows, so only those are uploaded; on a GPU that keeps the largest float
    /// tensor of the model (145 MiB in f32 for CLIP ViT-L) out of device memory.
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
    device: Device,
    /// Every Linear by module name below `text_model`, for LoRA adapters.
    lora: Arc<LoraRegistry>,
}

impl ClipTextModel {
    /// Loads the weights named as transformers' `CLIPTextModel` state dict, with or without the
    /// `text_model.` prefix, checking every shape against `cfg`.
    pub fn new(cfg: &ClipTextConfig, weights: &Weights) -> Result<ClipTextModel> {
        cfg.validate()
            .map_err(|msg| Error::shape("ClipTextModel", format!("config: {msg}")))?;
        let w = if weights.contains(&format!(
            "{TEXT_MODEL_PREFIX}.embeddings.token_embedding.weight"
        )) {
            weights.pp(TEXT_MODEL_PREFIX)
        } else {
            weights.clone()
        };
        // Module names below `text_model` (transformers 5 dropped that level; LoRA files have both).
        let lora = LoraRegistry::new();
        let w = w.with_lora(lora.clone());
        let d = cfg.hidden_size;
        let emb = w.pp("embeddings");
        let token_embedding = emb
            .in_host_memory()
            .get("token_embedding.weight", &[cfg.vocab_size, d])?;
        let position_embedding = emb.get(
            "position_embedding.weight",
            &[cfg.max_position_embeddings, d],
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(cfg, &w.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm =
            LayerNorm::new(&w.pp("final_layer_norm"), d, cfg.layer_norm_eps as f32)?;
        Ok(ClipTextModel {
            cfg: cfg.clone(),
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            device: weights.device().clone(),
            lora,
        })
    }

    /// The encoder's Linears by module name below `text_model` (`encoder.layers.0.self_attn.q_proj`),
    /// where LoRA adapters are set per generation.
    pub fn lora(&self) -> &Arc<LoraRegistry> {
        &self.lora
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of the weights and of every output.
    pub fn dtype(&self) -> DType {
        self.token_embedding.dtype()
    }

    /// The hidden states SD conditions on: `[B, L, hidden]`, the output of layer `-clip_skip` (1 = the
    /// last layer, transformers' `last_hidden_state`; 2 = the penultimate, A1111's "clip skip 2")
    /// followed by `final_layer_norm`, as A1111 and diffusers' `clip_skip` (whose 1 is our 2) do.
    ///
    /// `ids`: u32 `[B, L]`, `1 <= L <= max_position_embeddings`, on any device (moved to the model's).
    /// Note diffusers' SD 2.x `text_encoder` already stops at OpenCLIP's penultimate layer (its
    /// config has 23 of 24 layers), so it takes clip skip 1, as diffusers' pipeline does.
    /// `overrides` replace token-embedding rows (textual inversion); empty for a plain prompt.
    pub fn forward(
        &self,
        ids: &Tensor,
        overrides: &[TokenOverride],
        clip_skip: usize,
    ) -> Result<Tensor> {
        self.final_layer_norm
            .forward(&self.hidden_state(ids, overrides, clip_skip)?)
    }

    /// The output of layer `-clip_skip` WITHOUT `final_layer_norm` (transformers'
    /// `hidden_states[-clip_skip]`): SDXL conditions on the penultimate layer this way.
    pub fn hidden_state(
        &self,
        ids: &Tensor,
        overrides: &[TokenOverride],
        clip_skip: usize,
    ) -> Result<Tensor> {
        let run = self.layers_to_run(clip_skip)?;
        let (ids, _) = self.prepare_ids(ids)?;
        let mut x = self.embed(&ids, overrides)?;
        for layer in &self.layers[..run] {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }

    /// `forward` plus the pooled output. Runs every layer (the pooled output comes from the last),
    /// and reads `ids` on the host to find the EOS positions (a small GPU read-back if `ids` live
    /// there).
    pub fn forward_with_pooled(
        &self,
        ids: &Tensor,
        overrides: &[TokenOverride],
        clip_skip: usize,
    ) -> Result<ClipTextOutput> {
        self.run_with_pooled(ids, overrides, clip_skip, true)
    }

    /// `forward_with_pooled` with hidden state `-clip_skip` taken WITHOUT `final_layer_norm`
    /// (`hidden_state`'s rule, SDXL's); the pooled output is the same.
    pub fn forward_raw_with_pooled(
        &self,
        ids: &Tensor,
        overrides: &[TokenOverride],
        clip_skip: usize,
    ) -> Result<ClipTextOutput> {
        self.run_with_pooled(ids, overrides, clip_skip, false)
    }

    fn run_with_pooled(
        &self,
        ids: &Tensor,
        overrides: &[TokenOverride],
        clip_skip: usize,
        normed: bool,
    ) -> Result<ClipTextOutput> {
        let run = self.layers_to_run(clip_skip)?;
        let (cpu_ids, host_ids) = self.prepare_ids(ids)?;
        let (b, l, d) = (ids.dim(0), ids.dim(1), self.cfg.hidden_size);
        let mut x = self.embed(&cpu_ids, overrides)?;
        let mut skipped = None;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i + 1 == run && (run < self.layers.len() || !normed) {
                skipped = Some(if normed {
                    self.final_layer_norm.forward(&x)?
                } else {
                    x.clone()
                });
            }
        }
        let last = self.final_layer_norm.forward(&x)?;
        // Gather row b*L + pos_b of the [B*L, hidden] states with the embedding kernel.
        let rows: Vec<u32> = eos_positions(&self.cfg, &host_ids, l)?
            .into_iter()
            .enumerate()
            .map(|(row, pos)| (row * l + pos) as u32)
            .collect();
        let rows = Tensor::from_u32(&self.device, &[b], &rows)?;
        let pooled = embedding(&rows, &last.reshape(&[b * l, d])?)?;
        Ok(ClipTextOutput {
            hidden_states: skipped.unwrap_or(last),
            pooled,
        })
    }

    /// How many layers produce hidden state `-clip_skip`.
    fn layers_to_run(&self, clip_skip: usize) -> Result<usize> {
        let n = self.layers.len();
        if clip_skip == 0 || clip_skip > n {
            return Err(Error::shape(
                "ClipTextModel",
                format!("clip_skip {clip_skip} must be in 1..={n} (1 = last of the {n} layers)"),
            ));
        }
        Ok(n + 1 - clip_skip)
    }

    /// Checks `ids` (against the vocabulary too) and returns them on the CPU backend, as a tensor
    /// and as values: the token embedding is looked up in host memory. Ids on a GPU are read back
    /// (a few hundred bytes).
    fn prepare_ids(&self, ids: &Tensor) -> Result<(Tensor, Vec<u32>)> {
        let op = "ClipTextModel";
        if ids.dtype() != DType::U32 {
            return Err(Error::dtype(
                op,
                format!(
                    "{} for ids {:?} (u32 [B, L] expected)",
                    ids.dtype(),
                    ids.shape()
                ),
            ));
        }
        let max = self.cfg.max_position_embeddings;
        if ids.rank() != 2 || ids.dim(0) == 0 || ids.dim(1) == 0 || ids.dim(1) > max {
            return Err(Error::shape(
                op,
                format!(
                    "ids {:?} must be [B, L] with B >= 1 and 1 <= L <= {max} (max_position_embeddings)",
                    ids.shape()
                ),
            ));
        }
        let values = ids.to_vec_u32()?;
        let vocab = self.cfg.vocab_size;
        if let Some(i) = values.iter().position(|&t| t as usize >= vocab) {
            return Err(Error::shape(
                op,
                format!(
                    "ids[{}][{}] = {} is outside the vocabulary of {vocab} (vocab_size)",
                    i / ids.dim(1),
                    i % ids.dim(1),
                    values[i]
                ),
            ));
        }
        Ok((ids.to_device(&Device::Cpu)?, values))
    }

    /// token_embedding(ids) (with `overrides` written over their rows) + position_embedding(0..L),
    /// `ids` on the CPU backend with the table.
    fn embed(&self, ids: &Tensor, overrides: &[TokenOverride]) -> Result<Tensor> {
        let l = ids.dim(1);
        let positions: Vec<u32> = (0..l as u32).collect();
        let positions = Tensor::from_u32(&self.device, &[l], &positions)?;
        let mut tokens = embedding(ids, &self.token_embedding)?;
        if !overrides.is_empty() {
            tokens = self.override_rows(&tokens, overrides)?;
        }
        let tokens = tokens.to_device(&self.device)?;
        add(&tokens, &embedding(&positions, &self.position_embedding)?)
    }

    /// `tokens` (host, `[B, L, hidden]`) with rows replaced; checked so a wrong-width vector is
    /// named rather than read out of bounds.
    fn override_rows(&self, tokens: &Tensor, overrides: &[TokenOverride]) -> Result<Tensor> {
        let d = self.cfg.hidden_size;
        let rows = tokens.numel() / d;
        let mut values = tokens.to_vec_f32()?;
        for &(row, v) in overrides {
            if row >= rows || v.len() != d {
                return Err(Error::shape(
                    "ClipTextModel",
                    format!(
                        "token override for row {row} with {} values: the input has {rows} \
                         token rows of {d} (hidden_size)",
                        v.len()
                    ),
                ));
            }
            values[row * d..(row + 1) * d].copy_from_slice(v);
        }
        Tensor::from_f32(&Device::Cpu, tokens.shape(), tokens.dtype(), &values)
    }
}
