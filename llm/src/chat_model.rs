//! A model folder loaded for chat: the decoder, its tokenizer (checked against the model's
//! vocabulary) and its chat template, plus the context a session gets when none is asked for.

use std::path::Path;

use kiln_nn::weights::WeightType;
use kiln_runtime::{DType, Device, Error, Result};

use crate::chat::ChatTemplate;
use crate::kv_cache::kv_bytes_per_token;
use crate::model::Mistral;
use crate::tokenizer::Tokenizer;

pub struct ChatModel {
    pub model: Mistral,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

/// The KV cache a default context may take at most: a quarter of the host's available memory,
/// and never more than 8 GiB (a GPU's memory is not known before allocating).
const DEFAULT_KV_CAP: u64 = 8 << 30;

impl ChatModel {
    /// Loads `dir`; `template` overrides the folder's chat template (`mistral-v7`,
    /// `mistral-v3` or a Jinja file).
    pub fn load(
        dir: &Path,
        device: &Device,
        weight_type: WeightType,
        template: Option<&str>,
    ) -> Result<ChatModel> {
        if !dir.join("config.json").is_file() {
            return Err(Error::load(
                dir,
                "not an LLM folder: expected config.json (with model.safetensors or sharded files)",
            ));
        }
        let tokenizer = Tokenizer::from_dir(dir)?;
        let template = match template {
            Some(name) => ChatTemplate::named(name, &tokenizer)?,
            None => ChatTemplate::for_model(dir, &tokenizer)?,
        };
        let model = Mistral::load(dir, device, weight_type)?;
        tokenizer.check_fits(model.config.vocab_size)?;
        Ok(ChatModel {
            model,
            tokenizer,
            template,
        })
    }

    /// KV cache bytes per position at `kv_dtype`.
    pub fn kv_bytes_per_token(&self, kv_dtype: DType) -> u64 {
        let dtype = self.model.device().float_dtype(kv_dtype);
        kv_bytes_per_token(&self.model.config, dtype)
    }

    /// `requested`, else the model's limit capped so the KV cache takes at most a quarter of the
    /// host's available memory (8 GiB at most). The second value says whether the cap applied.
    pub fn context_size(&self, requested: Option<usize>, kv_dtype: DType) -> Result<(usize, bool)> {
        let limit = self.model.config.max_position_embeddings;
        if let Some(n) = requested {
            if n == 0 {
                return Err(Error::limit(
                    "ctx-size",
                    "the context must hold at least 1 token",
                ));
            }
            return Ok((n, false));
        }
        let budget = available_memory()
            .map(|m| m / 4)
            .unwrap_or(DEFAULT_KV_CAP)
            .min(DEFAULT_KV_CAP);
        let fits = (budget / self.kv_bytes_per_token(kv_dtype).max(1)) as usize;
        Ok(if fits < limit {
            (fits.max(1), true)
        } else {
            (limit, false)
        })
    }
}

/// The host's available memory (Linux `MemAvailable`), if known.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
