//! The decoder's sizes from a Hugging Face `config.json`: `model_type` "mistral" or "llama" (one
//! architecture), or "mistral3" whose `text_config` is the Mistral text model (Mistral Small 3.1);
//! or from a llama.cpp GGUF file's metadata (`general.architecture` "llama", as llama.cpp's
//! converter writes Mistral and Llama models, "mistral3" as newer converters write Mistral Small 3.x's
//! text model, or "mistral").

use std::path::Path;

use kiln_runtime::gguf::{GgufFile, GgufValue};
use kiln_runtime::{Error, Result};
use serde_json::Value;

use crate::vision::VisionConfig;

#[derive(Clone, Debug, PartialEq)]
pub struct MistralConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Independent of `hidden_size / num_attention_heads` (Small 3.1: 128, not 160).
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    pub sliding_window: Option<usize>,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// Weight names of the text model start with this (`model.` for a CausalLM folder; a mistral3
    /// folder nests the text model, see `MistralWeightsLayout`).
    pub wrapped: bool,
    /// A mistral3 config's vision tower and projector (`vision_config`), if it has one.
    pub vision: Option<VisionConfig>,
}

impl MistralConfig {
    /// The config of a model: a folder's `config.json`, or a `.gguf` file's metadata.
    pub fn for_model(path: &Path) -> Result<MistralConfig> {
        if crate::model::is_gguf(path) {
            return MistralConfig::from_gguf(&GgufFile::open(path)?);
        }
        MistralConfig::from_file(&path.join("config.json"))
    }

    pub fn from_file(path: &Path) -> Result<MistralConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::load(path, format!("cannot read: {e}")))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| Error::load(path, format!("not valid JSON: {e}")))?;
        MistralConfig::from_json(&json).map_err(|msg| Error::load(path, msg))
    }

    pub fn from_json(json: &Value) -> std::result::Result<MistralConfig, String> {
        let model_type = json
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or("no `model_type`")?;
        match model_type {
            "mistral" | "llama" => parse_text(json, model_type, false),
            "mistral3" => {
                let text = json
                    .get("text_config")
                    .ok_or("model_type mistral3 without a `text_config`")?;
                let inner = text
                    .get("model_type")
                    .and_then(Value::as_str)
                    .unwrap_or("mistral");
                if inner != "mistral" && inner != "llama" {
                    return Err(format!(
                        "mistral3's text_config has model_type `{inner}`; kiln runs mistral and llama"
                    ));
                }
                let mut config = parse_text(text, inner, true)?;
                config.vision = VisionConfig::from_json(json)?;
                // Token ids may sit at the top level of a mistral3 config.
                if config.eos_token_ids.is_empty() {
                    config.eos_token_ids = ids(json.get("eos_token_id"));
                }
                if config.bos_token_id.is_none() {
                    config.bos_token_id = ids(json.get("bos_token_id")).first().copied();
                }
                Ok(config)
            }
            other => Err(format!(
                "unsupported model_type `{other}`: kiln's LLMs are mistral, mistral3 (its text model) and llama"
            )),
        }
    }

    /// The decoder's sizes from a GGUF file's metadata: `{arch}.embedding_length`, `block_count`,
    /// `attention.head_count` / `head_count_kv` / `key_length` / `layer_norm_rms_epsilon` /
    /// `sliding_window`, `feed_forward_length`, `rope.freq_base`, `context_length`, `vocab_size`
    /// (else the token list's length); BOS / EOS from the tokenizer's ids; the head tied when
    /// the file has no `output.weight`. What kiln's decoder does not run (scaled RoPE, partial
    /// rotary dimensions, experts) is refused naming the key.
    pub fn from_gguf(file: &GgufFile) -> Result<MistralConfig> {
        gguf_config(file).map_err(|msg| Error::load(file.path(), msg))
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Parameters of the decoder (for reports and memory estimates).
    pub fn parameter_count(&self) -> u64 {
        let (h, f, v) = (
            self.hidden_size as u64,
            self.intermediate_size as u64,
            self.vocab_size as u64,
        );
        let q = (self.num_attention_heads * self.head_dim) as u64;
        let kv = (self.num_key_value_heads * self.head_dim) as u64;
        let layer = h * q * 2 + h * kv * 2 + 3 * h * f + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        layer * self.num_hidden_layers as u64 + v * h + head + h
    }
}

fn usize_field(json: &Value, key: &str) -> std::result::Result<usize, String> {
    json.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("`{key}` is missing or not a positive integer"))
}

fn ids(value: Option<&Value>) -> Vec<u32> {
    match value {
        Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|v| v as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn parse_text(
    json: &Value,
    model_type: &str,
    wrapped: bool,
) -> std::result::Result<MistralConfig, String> {
    let hidden_size = usize_field(json, "hidden_size")?;
    let num_attention_heads = usize_field(json, "num_attention_heads")?;
    let num_key_value_heads = match json.get("num_key_value_heads") {
        None | Some(Value::Null) => num_attention_heads,
        Some(_) => usize_field(json, "num_key_value_heads")?,
    };
    if !num_attention_heads.is_multiple_of(num_key_value_heads) {
        return Err(format!(
            "num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}"
        ));
    }
    let head_dim = match json.get("head_dim") {
        None | Some(Value::Null) => {
            if !hidden_size.is_multiple_of(num_attention_heads) {
                return Err(format!(
                    "no head_dim, and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
                ));
            }
            hidden_size / num_attention_heads
        }
        Some(_) => usize_field(json, "head_dim")?,
    };
    if !head_dim.is_multiple_of(2) {
        return Err(format!("head_dim {head_dim} must be even for RoPE"));
    }
    if let Some(act) = json.get("hidden_act").and_then(Value::as_str) {
        if act != "silu" {
            return Err(format!(
                "hidden_act `{act}`: kiln's decoder runs silu (SwiGLU)"
            ));
        }
    }
    // transformers 5 moved rope_theta into `rope_parameters`; scaled RoPE variants are not run.
    let rope = json
        .get("rope_parameters")
        .or_else(|| json.get("rope_scaling"))
        .filter(|v| !v.is_null());
    if let Some(rope) = rope {
        let kind = rope
            .get("rope_type")
            .or_else(|| rope.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if kind != "default" {
            return Err(format!(
                "rope type `{kind}` is not supported (only unscaled RoPE)"
            ));
        }
    }
    let rope_theta = json
        .get("rope_theta")
        .or_else(|| rope.and_then(|r| r.get("rope_theta")))
        .and_then(Value::as_f64)
        .unwrap_or(10000.0) as f32;
    let sliding_window = match json.get("sliding_window") {
        None | Some(Value::Null) => None,
        Some(_) => Some(usize_field(json, "sliding_window")?),
    };
    let bool_field =
        |key: &str, default: bool| json.get(key).and_then(Value::as_bool).unwrap_or(default);
    Ok(MistralConfig {
        model_type: model_type.to_string(),
        hidden_size,
        intermediate_size: usize_field(json, "intermediate_size")?,
        num_hidden_layers: usize_field(json, "num_hidden_layers")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        vocab_size: usize_field(json, "vocab_size")?,
        rms_norm_eps: json
            .get("rms_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-5) as f32,
        rope_theta,
        max_position_embeddings: json
            .get("max_position_embeddings")
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .unwrap_or(4096),
        sliding_window,
        // transformers' default for these classes is untied; a checkpoint without lm_head.weight
        // ties regardless (see `model::load`).
        tie_word_embeddings: bool_field("tie_word_embeddings", false),
        attention_bias: bool_field("attention_bias", false),
        bos_token_id: ids(json.get("bos_token_id")).first().copied(),
        eos_token_ids: ids(json.get("eos_token_id")),
        wrapped,
        vision: None,
    })
}

/// The `general.architecture` values kiln's decoder runs.
pub const GGUF_ARCHITECTURES: [&str; 3] = ["llama", "mistral", "mistral3"];

fn gguf_config(file: &GgufFile) -> std::result::Result<MistralConfig, String> {
    let arch = file
        .get_str("general.architecture")
        .ok_or("no `general.architecture`: not a llama.cpp model file")?;
    if !GGUF_ARCHITECTURES.contains(&arch) {
        return Err(format!(
            "general.architecture `{arch}` is not a decoder kiln runs ({}: Mistral and Llama models as \
             llama.cpp converts them)",
            GGUF_ARCHITECTURES.join(", ")
        ));
    }
    let key = |k: &str| format!("{arch}.{k}");
    // A per-layer array is accepted when every layer has the same value.
    let count = |k: &str| -> std::result::Result<Option<usize>, String> {
        let full = key(k);
        let Some(value) = file.value(&full) else {
            return Ok(None);
        };
        let one = |v: &GgufValue| v.as_u64().filter(|&n| n > 0).map(|n| n as usize);
        let n = match value.as_array() {
            Some(items) => {
                let values: Option<Vec<usize>> = items.iter().map(one).collect();
                match values.as_deref() {
                    Some([first, rest @ ..]) if rest.iter().all(|v| v == first) => Some(*first),
                    Some([_, ..]) => {
                        return Err(format!(
                            "`{full}` differs between layers; kiln's decoder has the same sizes in every layer"
                        ))
                    }
                    _ => None,
                }
            }
            None => one(value),
        };
        n.map(Some)
            .ok_or_else(|| format!("`{full}` is {value:?}, not a positive integer"))
    };
    let required = |k: &str| count(k)?.ok_or_else(|| format!("`{}` is missing", key(k)));
    let float = |k: &str| file.get_f64(&key(k));
    let hidden_size = required("embedding_length")?;
    let num_attention_heads = required("attention.head_count")?;
    let num_key_value_heads = count("attention.head_count_kv")?.unwrap_or(num_attention_heads);
    if !num_attention_heads.is_multiple_of(num_key_value_heads) {
        return Err(format!(
            "{} {num_attention_heads} is not a multiple of {} {num_key_value_heads}",
            key("attention.head_count"),
            key("attention.head_count_kv")
        ));
    }
    let head_dim = match count("attention.key_length")? {
        Some(d) => d,
        None if hidden_size.is_multiple_of(num_attention_heads) => hidden_size / num_attention_heads,
        None => {
            return Err(format!(
                "no `{}`, and the embedding length {hidden_size} is not a multiple of {num_attention_heads} heads",
                key("attention.key_length")
            ))
        }
    };
    if let Some(v) = count("attention.value_length")?.filter(|&v| v != head_dim) {
        return Err(format!(
            "`{}` {v} differs from the key length {head_dim}; kiln's attention has one head size",
            key("attention.value_length")
        ));
    }
    if !head_dim.is_multiple_of(2) {
        return Err(format!("head size {head_dim} must be even for RoPE"));
    }
    if let Some(d) = count("rope.dimension_count")?.filter(|&d| d != head_dim) {
        return Err(format!(
            "`{}` {d}: RoPE over part of a {head_dim}-wide head is not supported",
            key("rope.dimension_count")
        ));
    }
    let scaling = file.get_str(&key("rope.scaling.type")).unwrap_or("none");
    if scaling != "none" {
        return Err(format!(
            "`{}` is `{scaling}`: scaled RoPE is not supported (only unscaled RoPE)",
            key("rope.scaling.type")
        ));
    }
    if let Some(scale) = float("attention.temperature_scale").filter(|&s| s != 0.0) {
        return Err(format!(
            "`{}` {scale}: attention temperature scaling is not supported",
            key("attention.temperature_scale")
        ));
    }
    if let Some(n) = count("expert_count")? {
        return Err(format!(
            "`{}` {n}: mixture-of-experts models are not supported",
            key("expert_count")
        ));
    }
    let vocab_size = match count("vocab_size")? {
        Some(n) => n,
        None => file
            .get_array("tokenizer.ggml.tokens")
            .map(<[GgufValue]>::len)
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                format!(
                    "neither `{}` nor a `tokenizer.ggml.tokens` list says the vocabulary size",
                    key("vocab_size")
                )
            })?,
    };
    let id = |k: &str| file.get_u64(k).and_then(|v| u32::try_from(v).ok());
    let mut eos_token_ids: Vec<u32> = Vec::new();
    for k in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(v) = id(k).filter(|v| !eos_token_ids.contains(v)) {
            eos_token_ids.push(v);
        }
    }
    // Turn ends llama.cpp stops at by name even when no key names them (Llama 3's <|eot_id|>).
    if let Some(tokens) = file.get_array("tokenizer.ggml.tokens") {
        for (i, t) in tokens.iter().enumerate() {
            let end = matches!(
                t.as_str(),
                Some("<|eot_id|>" | "<|eom_id|>" | "<|im_end|>" | "<|end|>")
            );
            if end && !eos_token_ids.contains(&(i as u32)) {
                eos_token_ids.push(i as u32);
            }
        }
    }
    Ok(MistralConfig {
        model_type: arch.to_string(),
        hidden_size,
        intermediate_size: required("feed_forward_length")?,
        num_hidden_layers: required("block_count")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        vocab_size,
        rms_norm_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
        rope_theta: float("rope.freq_base").unwrap_or(10000.0) as f32,
        max_position_embeddings: count("context_length")?.unwrap_or(4096),
        // llama.cpp writes 0 for "no window".
        sliding_window: file
            .get_u64(&key("attention.sliding_window"))
            .filter(|&w| w > 0)
            .map(|w| w as usize),
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        attention_bias: false,
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        eos_token_ids,
        wrapped: false,
        vision: None,
    })
}
