//! A model folder or llama.cpp GGUF file loaded for chat: the decoder, its tokenizer (checked
//! against the model's vocabulary) and its chat template, plus the context a session gets when
//! none is asked for.

use std::path::Path;

use kiln_nn::weights::WeightType;
use kiln_runtime::gguf::{GgufFile, GgufType};
use kiln_runtime::memory::format_bytes;
use kiln_runtime::{DType, Device, Error, QuantFormat, Result};

use crate::bench::{estimate_memory, matrix_bytes, MemoryEstimate, WeightPlan};
use crate::chat::ChatTemplate;
use crate::config::MistralConfig;
use crate::kv_cache::kv_bytes_per_token;
use crate::model::{is_gguf, Mistral};
use crate::tokenizer::Tokenizer;
use crate::vision::{load_mmproj, ImageProcessor};

pub struct ChatModel {
    pub model: Mistral,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

/// The KV cache a default context may take at most: a quarter of the host's available memory,
/// and never more than 8 GiB (a GPU's memory is not known before allocating).
const DEFAULT_KV_CAP: u64 = 8 << 30;

impl ChatModel {
    /// As [`load`](Self::load), then the vision tower and projector from llama.cpp's `mmproj`
    /// GGUF file (`--mmproj`), for a text model without its own.
    pub fn load_with_mmproj(
        dir: &Path,
        device: &Device,
        weight_type: WeightType,
        template: Option<&str>,
        mmproj: &Path,
    ) -> Result<ChatModel> {
        let mut chat = ChatModel::load(dir, device, weight_type, template)?;
        if chat.model.vision.is_some() {
            return Err(Error::load(
                mmproj,
                "the model already has a vision encoder; --mmproj is for GGUF text models",
            ));
        }
        let vision = load_mmproj(mmproj, &chat.model.config, device, weight_type)?;
        if crate::vision::ImageTokenIds::from_tokenizer(&chat.tokenizer).is_none() {
            return Err(Error::load(
                mmproj,
                "the model's tokenizer has no [IMG], [IMG_BREAK] and [IMG_END] tokens",
            ));
        }
        chat.model.config.vision = Some(vision.config.clone());
        chat.model.vision = Some(vision);
        Ok(chat)
    }

    /// Loads `dir` (a model folder, or a `.gguf` file: config, weights, tokenizer and template
    /// from the one file); `template` overrides the model's chat template (`mistral-v7`,
    /// `mistral-v3` or a Jinja file).
    pub fn load(
        dir: &Path,
        device: &Device,
        weight_type: WeightType,
        template: Option<&str>,
    ) -> Result<ChatModel> {
        if is_gguf(dir) {
            let file = GgufFile::open(dir)?;
            let tokenizer = Tokenizer::from_gguf(&file)?;
            let template = match template {
                Some(name) => ChatTemplate::named(name, &tokenizer)?,
                None => ChatTemplate::for_gguf(&file, &tokenizer)?,
            };
            let model = Mistral::load_gguf(file, device, weight_type)?;
            tokenizer.check_fits(model.config.vocab_size)?;
            return Ok(ChatModel {
                model,
                tokenizer,
                template,
            });
        }
        if !dir.join("config.json").is_file() {
            return Err(Error::load(
                dir,
                "not an LLM folder: expected config.json (with model.safetensors or sharded files), \
                 or a .gguf file",
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

    /// How this model wants images prepared; `None` when it has no vision encoder.
    pub fn image_processor(&self) -> Option<ImageProcessor> {
        self.model.vision.as_ref().map(|v| v.processor())
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

/// What a model's weights will take once loaded with `requested` (`--weight-type`), for memory
/// estimates before loading: a GGUF file's packed tensors load as stored whatever was asked (its
/// token embeddings too, in host memory), so its tensor table says; a folder loads as asked.
pub fn plan_weights(
    path: &Path,
    config: &MistralConfig,
    requested: WeightType,
) -> Result<WeightPlan> {
    if !is_gguf(path) {
        return Ok(WeightPlan::uniform(config, requested));
    }
    let file = GgufFile::open(path)?;
    let float = requested.float_dtype().size_in_bytes() as u64;
    let mut bytes = 0u64;
    let mut by_format: Vec<(QuantFormat, u64)> = Vec::new();
    for name in file.names() {
        let Some(t) = file.tensor(name) else { continue };
        let elements = t.shape.iter().product::<usize>() as u64;
        let b = match t.kind {
            GgufType::Packed(format) => {
                let stored = (t.end - t.start) as u64;
                match by_format.iter_mut().find(|(f, _)| *f == format) {
                    Some((_, total)) => *total += stored,
                    None => by_format.push((format, stored)),
                }
                stored
            }
            // Float matrices pack at the requested format as a folder's would.
            GgufType::F32 | GgufType::F16 | GgufType::Bf16 if t.shape.len() == 2 => {
                matrix_bytes(t.shape[0], t.shape[1], requested)
            }
            _ => elements * float,
        };
        bytes += b;
    }
    let weight_type = by_format
        .iter()
        .max_by_key(|(_, b)| *b)
        .map_or(requested, |&(f, _)| WeightType::Quantized(f));
    Ok(WeightPlan { weight_type, bytes })
}

/// Device memory a chat with `context` tokens needs, from the config alone (so before loading):
/// the weights as planned, the KV cache at `kv_dtype` (the dtype the device will really use)
/// and the activations of a turn whose new tokens fill the context, since a turn runs its new
/// tokens as one forward pass.
pub fn chat_memory(
    config: &MistralConfig,
    weights: &WeightPlan,
    context: usize,
    kv_dtype: DType,
) -> MemoryEstimate {
    estimate_memory(config, weights, context, kv_dtype, context)
}

/// Checks a chat against a device memory budget (`--max-vram`) before loading. With `requested`
/// (`--ctx-size`) that context must fit and is returned; without, the result is the longest
/// context that fits, at most the model's limit: the cap for a default context. The error names
/// the memory needed (at the requested context, else at a 1-token context, the least there is).
pub fn context_within_budget(
    config: &MistralConfig,
    weights: &WeightPlan,
    kv_dtype: DType,
    budget: u64,
    requested: Option<usize>,
) -> Result<usize> {
    let refuse = |context: usize| {
        let m = chat_memory(config, weights, context, kv_dtype);
        Error::limit(
            "--max-vram",
            format!(
                "a budget of {} is too small: this chat needs at least {} ({} weights at \
                 {}, {} KV cache for {context} token{} at {kv_dtype}, {} activations{})",
                format_bytes(budget),
                format_bytes(m.total),
                format_bytes(m.weights),
                weights.weight_type,
                format_bytes(m.kv_cache),
                if context == 1 { "" } else { "s" },
                format_bytes(m.activations),
                match m.vision {
                    0 => String::new(),
                    v => format!(", {} vision encoder", format_bytes(v)),
                }
            ),
        )
    };
    if let Some(n) = requested {
        return if chat_memory(config, weights, n, kv_dtype).total <= budget {
            Ok(n)
        } else {
            Err(refuse(n))
        };
    }
    // The estimate is linear in the context: a fixed part plus a per-token part.
    let fixed = chat_memory(config, weights, 0, kv_dtype).total;
    let per_token = chat_memory(config, weights, 1, kv_dtype).total - fixed;
    let fits = budget.saturating_sub(fixed) / per_token.max(1);
    if fits == 0 {
        return Err(refuse(1));
    }
    Ok((fits as usize).min(config.max_position_embeddings))
}

/// The host's available memory (Linux `MemAvailable`), if known.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled_config() -> MistralConfig {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundled");
        MistralConfig::from_file(&dir.join("config.json")).unwrap()
    }

    #[test]
    fn a_budget_caps_the_default_context_and_refuses_what_cannot_fit() {
        let c = bundled_config();
        let (wt, kv) = (WeightPlan::uniform(&c, WeightType::F32), DType::F16);
        let wt = &wt;
        let total = |n: usize| chat_memory(&c, wt, n, kv).total;
        // The longest context that fits, exactly: one more token would not.
        let budget = total(100) + total(1) / 1000;
        assert_eq!(
            context_within_budget(&c, wt, kv, budget, None).unwrap(),
            100
        );
        assert!(total(101) > budget);
        // A generous budget stops at the model's limit; a requested context is checked as asked.
        let limit = c.max_position_embeddings;
        let huge = 1 << 40;
        assert_eq!(
            context_within_budget(&c, wt, kv, huge, None).unwrap(),
            limit
        );
        assert_eq!(
            context_within_budget(&c, wt, kv, total(50), Some(50)).unwrap(),
            50
        );
        let err = context_within_budget(&c, wt, kv, total(50), Some(51))
            .unwrap_err()
            .to_string();
        let need = format_bytes(total(51));
        assert!(
            err.contains("--max-vram") && err.contains(&format!("at least {need}")),
            "{err}"
        );
        assert!(err.contains("51 tokens"), "{err}");
        // Below the weights, not even one token fits: the error names that minimum.
        let err = context_within_budget(&c, wt, kv, 1 << 20, None)
            .unwrap_err()
            .to_string();
        let need = format_bytes(total(1));
        assert!(err.contains(&format!("at least {need}")), "{err}");
    }
}
