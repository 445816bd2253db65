//! The Mistral / Llama decoder (transformers' `MistralForCausalLM`, `LlamaForCausalLM`, and the text
//! model of `Mistral3ForConditionalGeneration`), built from `config.json` and a `Weights` view with
//! every tensor's shape checked at load.
//!
//! The model holds only weights: the KV cache is a `KvCache` the caller owns (one per
//! conversation), so one loaded model serves any number of sessions.

mod gguf;
mod layer;
mod names;

use std::path::Path;
use std::sync::Arc;

use kiln_kernels::layout::narrow;
use kiln_kernels::scatter::scatter_rows;
use kiln_nn::weights::{
    folder_weight_files, FileSource, GgufSource, RandomSource, TensorSource, WeightType, Weights,
};
use kiln_nn::{Embedding, KvBuffers, Linear, RmsNorm};
use kiln_runtime::gguf::GgufFile;
use kiln_runtime::{DType, Device, Error, Result, Tensor};

pub use gguf::{is_gguf, llama_names, rope_rows};
pub use layer::{attention_config, DecoderLayer, Mlp};
pub use names::TextModelNames;

use crate::config::MistralConfig;
use crate::kv_cache::KvCache;
use crate::vision::VisionModel;

/// Which positions' logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (what sampling needs): the LM head runs on one row.
    Last,
    /// Every token's (tests, perplexity).
    All,
}

pub struct Mistral {
    pub config: MistralConfig,
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    pub lm_head: Linear,
    /// The vision tower and projector of a mistral3 folder with a `vision_config`.
    pub vision: Option<VisionModel>,
    device: Device,
    dtype: DType,
}

impl Mistral {
    /// Loads a model folder (`config.json` + `model.safetensors` or sharded files with
    /// `model.safetensors.index.json`) or a llama.cpp `.gguf` file, packing Linear weights as
    /// `weight_type` says (a GGUF's packed tensors load as they are), with the vision tower and
    /// projector when a folder's config has a `vision_config`.
    pub fn load(dir: &Path, device: &Device, weight_type: WeightType) -> Result<Mistral> {
        Mistral::load_with(dir, device, weight_type, true)
    }

    /// As [`load`](Self::load); `vision` false loads the text model only (a mistral3 folder
    /// then runs text prompts without the vision tower's memory).
    pub fn load_with(
        dir: &Path,
        device: &Device,
        weight_type: WeightType,
        vision: bool,
    ) -> Result<Mistral> {
        if is_gguf(dir) {
            return Mistral::load_gguf(GgufFile::open(dir)?, device, weight_type);
        }
        let config = MistralConfig::from_file(&dir.join("config.json"))?;
        let source: Arc<dyn TensorSource> = Arc::new(FileSource::new(folder_weight_files(dir)?));
        let weights = Weights::from_source(source, device, weight_type.float_dtype())
            .quantized(weight_type.quantization());
        let mut model = Mistral::new(config, &weights)?;
        if let (true, Some(config)) = (vision, model.config.vision.clone()) {
            model.vision = Some(VisionModel::new(config, &weights)?);
        }
        Ok(model)
    }

    /// The decoder of a llama.cpp GGUF file: config from its metadata, weights under llama.cpp's
    /// names with Q/K rows read back in Hugging Face's order (see `gguf.rs`).
    pub fn load_gguf(file: GgufFile, device: &Device, weight_type: WeightType) -> Result<Mistral> {
        let config = MistralConfig::from_gguf(&file)?;
        // Every token needs an embedding row (the shape check below then names the tensor
        // against the config's vocabulary size).
        let tokens = file.get_array("tokenizer.ggml.tokens").map(<[_]>::len);
        let rows = file.tensor("token_embd.weight").map(|t| t.shape[0]);
        if let (Some(tokens), Some(rows)) = (tokens, rows) {
            if tokens > rows {
                return Err(Error::load(
                    file.path(),
                    format!(
                        "the vocabulary has {tokens} tokens but `token_embd.weight` has {rows} rows"
                    ),
                ));
            }
        }
        let names = llama_names(&file, &config)?;
        let source: Arc<dyn TensorSource> = Arc::new(GgufSource::renamed(file, names)?);
        let weights = Weights::from_source(source, device, weight_type.float_dtype())
            .quantized(weight_type.quantization());
        Mistral::new(config, &weights)
    }

    /// Random weights of `config`'s shapes built in memory (benchmarks, memory checks): the
    /// untied head is present unless `tie_word_embeddings`.
    pub fn random(
        config: MistralConfig,
        device: &Device,
        weight_type: WeightType,
        seed: u64,
    ) -> Result<Mistral> {
        let source: Arc<dyn TensorSource> = Arc::new(RandomSource::new(
            format!("random {} weights", config.model_type),
            seed,
        ));
        let weights = Weights::from_source(source, device, weight_type.float_dtype())
            .quantized(weight_type.quantization());
        let names = TextModelNames {
            body: "model",
            lm_head: (!config.tie_word_embeddings).then_some("lm_head"),
        };
        let mut model = Mistral::with_names(config, &weights, names)?;
        if let Some(vision) = model.config.vision.clone() {
            model.vision = Some(VisionModel::with_prefixes(
                vision,
                &weights,
                "vision_tower",
                "multi_modal_projector",
            )?);
        }
        Ok(model)
    }

    /// Builds the decoder from `weights` (at the root of the checkpoint's names).
    pub fn new(config: MistralConfig, weights: &Weights) -> Result<Mistral> {
        let names = TextModelNames::detect(&config, weights)?;
        Mistral::with_names(config, weights, names)
    }

    fn with_names(
        config: MistralConfig,
        weights: &Weights,
        names: TextModelNames,
    ) -> Result<Mistral> {
        let body = weights.pp(names.body);
        let c = &config;
        let embed_tokens = Embedding::new(&body.pp("embed_tokens"), c.vocab_size, c.hidden_size)?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| DecoderLayer::new(&body.pp(format!("layers.{i}")), c))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(&body.pp("norm"), c.hidden_size, c.rms_norm_eps)?;
        // The checkpoint's own head when it has one; tied to the embeddings only when absent
        // (library defaults for tying differ between versions).
        let head = match names.lm_head {
            Some(head) => weights.pp(head),
            None => body.pp("embed_tokens"),
        };
        let lm_head = Linear::new(&head, c.hidden_size, c.vocab_size, false)?;
        Ok(Mistral {
            embed_tokens,
            layers,
            norm,
            lm_head,
            vision: None,
            device: weights.device().clone(),
            dtype: weights.dtype(),
            config,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The activations' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A KV cache for `capacity` positions of this model, in `dtype` (f16 or f32).
    pub fn new_cache(&self, capacity: usize, dtype: DType) -> Result<KvCache> {
        let cfg = attention_config(&self.config);
        let dtype = self.device.float_dtype(dtype);
        let layers = (0..self.layers.len())
            .map(|_| KvBuffers::new(&self.device, capacity, &cfg, dtype))
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache::new(layers, capacity))
    }

    /// Runs `ids` after the `cache.len()` positions already cached, appending theirs, and returns
    /// logits `[rows, vocab]` (f32 or the model's dtype) on the model's device.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache, which: Logits) -> Result<Tensor> {
        self.forward_embedded(ids, &[], cache, which)
    }

    /// As [`forward`](Self::forward), with rows that replace token embeddings: each
    /// `(positions, rows)` puts row `i` of `rows` `[n, hidden]` at position `positions[i]` of
    /// `ids` (an image's projected features at its `[IMG]` tokens), on the device.
    pub fn forward_embedded(
        &self,
        ids: &[u32],
        inserts: &[(Vec<u32>, Tensor)],
        cache: &mut KvCache,
        which: Logits,
    ) -> Result<Tensor> {
        let start = cache.len();
        let l = ids.len();
        if l == 0 {
            return Err(Error::shape("mistral forward", "no tokens to run"));
        }
        if start + l > cache.capacity() {
            return Err(Error::limit(
                "mistral forward",
                format!(
                    "{} cached + {l} new tokens exceed the context of {} tokens",
                    start,
                    cache.capacity()
                ),
            ));
        }
        if cache.layers().len() != self.layers.len() {
            return Err(Error::shape(
                "mistral forward",
                format!(
                    "a cache of {} layers for a model of {}",
                    cache.layers().len(),
                    self.layers.len()
                ),
            ));
        }
        let positions: Vec<u32> = (start..start + l).map(|p| p as u32).collect();
        let positions = Tensor::from_u32(&self.device, &[l], &positions)?;
        let mut x = self.embed_tokens.forward(ids)?;
        for (rows, features) in inserts {
            x = scatter_rows(&x, rows, features)?;
        }
        let h = self.run_layers(x, |i, layer, x, h| {
            layer.forward(x, h, &positions, &mut cache.layers_mut()[i], start)
        })?;
        cache.advance(l);
        let rows = match which {
            Logits::All => h,
            Logits::Last => narrow(&h, 0, l - 1, 1)?,
        };
        self.lm_head.forward(&rows)
    }

    /// One decode step of several sequences at once: `ids[b]` follows what `caches[b]` holds.
    /// Returns logits `[B, vocab]`, row `b` equal (up to the GEMM's summation order) to what
    /// [`forward`](Self::forward) gives for that sequence alone. Weights are read once per step
    /// for all sequences, so B streams cost little more than one while decoding is
    /// bandwidth-bound.
    pub fn forward_batch(&self, ids: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let b = ids.len();
        if b == 0 || caches.len() != b {
            return Err(Error::shape(
                "mistral batched forward",
                format!(
                    "{b} ids for {} caches (need one each, at least one)",
                    caches.len()
                ),
            ));
        }
        for (i, cache) in caches.iter().enumerate() {
            if cache.len() + 1 > cache.capacity() {
                return Err(Error::limit(
                    "mistral batched forward",
                    format!("sequence {i}'s cache is full ({} tokens)", cache.capacity()),
                ));
            }
            if cache.layers().len() != self.layers.len() {
                return Err(Error::shape(
                    "mistral batched forward",
                    format!(
                        "sequence {i}'s cache has {} layers for a model of {}",
                        cache.layers().len(),
                        self.layers.len()
                    ),
                ));
            }
        }
        let starts: Vec<usize> = caches.iter().map(|c| c.len()).collect();
        let positions: Vec<u32> = starts.iter().map(|&p| p as u32).collect();
        let positions = Tensor::from_u32(&self.device, &[b], &positions)?;
        let h = self.run_layers(self.embed_tokens.forward(ids)?, |i, layer, x, h| {
            let mut kvs: Vec<&mut KvBuffers> =
                caches.iter_mut().map(|c| &mut c.layers_mut()[i]).collect();
            layer.forward_batch(x, h, &positions, &mut kvs, &starts)
        })?;
        for cache in caches.iter_mut() {
            cache.advance(1);
        }
        self.lm_head.forward(&h)
    }

    /// Runs every layer on the embeddings `x` (`layer_step` runs layer `i` on the residual `x`
    /// and its normed input `h`); returns the final normed hidden states.
    fn run_layers(
        &self,
        mut x: Tensor,
        mut layer_step: impl FnMut(usize, &DecoderLayer, &Tensor, &Tensor) -> Result<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let mut h = self.layers[0].input_layernorm.forward(&x)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let (residual, out) = layer_step(i, layer, &x, &h)?;
            let next_norm = match self.layers.get(i + 1) {
                Some(next) => &next.input_layernorm,
                None => &self.norm,
            };
            (x, h) = next_norm.forward_residual(&out, &residual)?;
        }
        Ok(h)
    }
}
