//! `kiln quantize -m FOLDER -o OUT.gguf --type q4_k_m|q6_k|q8_0`: a Mistral / Llama model folder
//! written as the GGUF file llama.cpp would make of it with `convert_hf_to_gguf.py` then
//! `llama-quantize` (no importance matrix): architecture `llama`, the converter's hyperparameter and
//! tokenizer keys (`tokenizer::folder_vocab_metadata`), Q and K rows permuted as the converter
//! permutes them, each tensor typed as llama-quantize's file type does (`policy`) and packed with
//! ggml's reference quantisers bit for bit (`kiln_kernels::quant::ggml_pack`), in llama-quantize's
//! tensor order (names outside layers first, then layer by layer, by name within each).
//!
//! Tensors are read, converted and written one at a time to `OUT.partial`, renamed at the end; an
//! existing output is refused and an error leaves no file.
//!
//! Not written: `general.name` and `general.size_label` (the converter derives them from the
//! folder's name and parameter count; they are labels no loader reads).

pub mod policy;

use std::path::Path;

use kiln_kernels::quant::ggml_pack::quantize_ggml;
use kiln_nn::weights::{folder_weight_files, FileSource, TensorSource};
use kiln_runtime::gguf::{write_gguf_streaming, GgufTensorInfo, GgufValue};
use kiln_runtime::{DType, Device, Error, Result};
use serde_json::Value;

use crate::config::MistralConfig;
use crate::model::rope_rows;
use crate::tokenizer::folder_vocab_metadata;
use policy::{tensor_type, GgufMix, ModelShape, TensorType};

/// What was written: each tensor's GGUF name and type, in file order; the bytes of the weights
/// as f32 (what was quantised) and as written.
#[derive(Debug, Default)]
pub struct GgufExportReport {
    pub tensors: Vec<(String, TensorType)>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One tensor to write: its folder name, GGUF name, shape and type.
struct Planned {
    source: String,
    name: String,
    shape: Vec<usize>,
    ty: TensorType,
    /// Q / K: heads whose rows the converter permutes.
    rope_heads: Option<usize>,
}

/// The GGUF name of a Hugging Face Llama / Mistral tensor (None: not part of the GGUF file).
fn gguf_name(hf: &str) -> Option<Result<String>> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "lm_head.weight" => Some("output.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Some(Ok(n.to_string()));
    }
    if hf.ends_with("rotary_emb.inv_freq") {
        return None;
    }
    let unknown = || {
        Error::load(hf, "a tensor kiln's llama GGUF writer does not map (biases, experts and vision towers are not written)")
    };
    let Some(rest) = hf.strip_prefix("model.layers.") else {
        return Some(Err(unknown()));
    };
    let Some((layer, part)) = rest.split_once('.') else {
        return Some(Err(unknown()));
    };
    let part = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return Some(Err(unknown())),
    };
    match layer.parse::<usize>() {
        Ok(i) => Some(Ok(format!("blk.{i}.{part}"))),
        Err(_) => Some(Err(unknown())),
    }
}

fn read_config(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::load(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Error::load(path, format!("not JSON: {e}")))
}

/// The converter's hyperparameter keys (`LlamaModel.set_gguf_parameters`), in its order, with
/// `general.file_type` of `mix`.
fn hparams(config: &MistralConfig, json: &Value, mix: GgufMix) -> Vec<(String, GgufValue)> {
    let u = |v: usize| GgufValue::U32(v as u32);
    let mut kv: Vec<(String, GgufValue)> = vec![
        ("general.architecture".into(), "llama".into()),
        ("general.type".into(), "model".into()),
        ("llama.block_count".into(), u(config.num_hidden_layers)),
        (
            "llama.context_length".into(),
            u(config.max_position_embeddings),
        ),
        ("llama.embedding_length".into(), u(config.hidden_size)),
        (
            "llama.feed_forward_length".into(),
            u(config.intermediate_size),
        ),
        (
            "llama.attention.head_count".into(),
            u(config.num_attention_heads),
        ),
        (
            "llama.attention.head_count_kv".into(),
            u(config.num_key_value_heads),
        ),
    ];
    // Written only when the config names it, as the converter does.
    let theta = json
        .get("rope_theta")
        .or_else(|| {
            json.get("rope_parameters")
                .and_then(|r| r.get("rope_theta"))
        })
        .and_then(Value::as_f64);
    if let Some(theta) = theta {
        kv.push(("llama.rope.freq_base".into(), GgufValue::F32(theta as f32)));
    }
    kv.push((
        "llama.attention.layer_norm_rms_epsilon".into(),
        GgufValue::F32(config.rms_norm_eps),
    ));
    if json.get("head_dim").is_some_and(|h| !h.is_null()) {
        kv.push(("llama.attention.key_length".into(), u(config.head_dim)));
        kv.push(("llama.attention.value_length".into(), u(config.head_dim)));
    }
    kv.push(("general.file_type".into(), GgufValue::U32(mix.file_type())));
    kv.push(("llama.vocab_size".into(), u(config.vocab_size)));
    kv.push(("llama.rope.dimension_count".into(), u(config.head_dim)));
    kv.push(("general.quantization_version".into(), GgufValue::U32(2)));
    kv
}

fn bytes_of(ty: TensorType, shape: &[usize]) -> usize {
    let n: usize = shape.iter().product();
    match ty {
        TensorType::F32 => 4 * n,
        TensorType::F16 => 2 * n,
        TensorType::Packed(f) => n / f.block_len() * f.block_bytes(),
    }
}

/// Writes the folder `input` as a GGUF file `output` of llama.cpp file type `mix`.
pub fn quantize_to_gguf(input: &Path, output: &Path, mix: GgufMix) -> Result<GgufExportReport> {
    if output.exists() {
        return Err(Error::load(
            output,
            "the output already exists; not overwriting it",
        ));
    }
    let config_path = input.join("config.json");
    let config = MistralConfig::from_file(&config_path)?;
    if config.wrapped || config.vision.is_some() || config.attention_bias {
        return Err(Error::load(
            &config_path,
            "kiln writes GGUF files of plain Mistral / Llama decoders only (no vision tower, no \
             attention biases, no wrapped language_model)",
        ));
    }
    let json = read_config(&config_path)?;
    let mut metadata = hparams(&config, &json, mix);
    metadata.extend(folder_vocab_metadata(input, &json)?);

    let source = FileSource::new(folder_weight_files(input)?);
    let names = source.names();
    let tied = config.tie_word_embeddings || !names.iter().any(|n| n == "lm_head.weight");
    let model = ModelShape {
        layers: config.num_hidden_layers,
        heads: config.num_attention_heads,
        kv_heads: config.num_key_value_heads,
        tied,
    };
    let mut plan = Vec::new();
    for hf in &names {
        if tied && hf == "lm_head.weight" {
            continue;
        }
        let Some(name) = gguf_name(hf) else { continue };
        let name = name?;
        let shape = source
            .shape_of(hf)
            .ok_or_else(|| Error::load(input, format!("`{hf}` has no shape")))?;
        let ty = tensor_type(mix, &model, &name, &shape)?;
        let rope_heads = if name.ends_with("attn_q.weight") {
            Some(config.num_attention_heads)
        } else if name.ends_with("attn_k.weight") {
            Some(config.num_key_value_heads)
        } else {
            None
        };
        plan.push(Planned {
            source: hf.clone(),
            name,
            shape,
            ty,
            rope_heads,
        });
    }
    // llama-quantize's order: tensors outside layers first, then by layer, by name within each.
    let layer = |n: &str| -> i64 {
        n.strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse().ok())
            .unwrap_or(-1)
    };
    plan.sort_by(|a, b| (layer(&a.name), &a.name).cmp(&(layer(&b.name), &b.name)));

    let infos: Vec<GgufTensorInfo> = plan
        .iter()
        .map(|p| GgufTensorInfo {
            name: p.name.clone(),
            shape: p.shape.clone(),
            ggml_type: p.ty.ggml_type(),
            bytes: bytes_of(p.ty, &p.shape),
        })
        .collect();
    let mut report = GgufExportReport::default();
    write_gguf_streaming(output, &metadata, &infos, |i| {
        let p = &plan[i];
        let values = source
            .load(&p.source, None, &Device::Cpu, DType::F32)?
            .to_vec_f32()?;
        report.bytes_in += 4 * values.len() as u64;
        let values = match p.rope_heads {
            Some(heads) => permute_rows(&values, &p.shape, heads, &p.name)?,
            None => values,
        };
        let bytes = encode(p.ty, &p.shape, &values)
            .map_err(|e| Error::load(&p.name, format!("{e} (from `{}`)", p.source)))?;
        report.bytes_out += bytes.len() as u64;
        report.tensors.push((p.name.clone(), p.ty));
        Ok(bytes)
    })?;
    Ok(report)
}

/// The converter's Q / K permutation: Hugging Face row r of a head is stored at `rope_rows[r]`.
fn permute_rows(values: &[f32], shape: &[usize], heads: usize, name: &str) -> Result<Vec<f32>> {
    let &[rows, cols] = shape else {
        return Err(Error::shape(
            "quantize",
            format!("`{name}` {shape:?} is not a matrix"),
        ));
    };
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(Error::shape(
            "quantize",
            format!("`{name}` {shape:?} does not split into {heads} heads of an even size"),
        ));
    }
    let mut out = vec![0.0f32; values.len()];
    for (r, &to) in rope_rows(heads, rows / heads).iter().enumerate() {
        out[to * cols..][..cols].copy_from_slice(&values[r * cols..][..cols]);
    }
    Ok(out)
}

fn encode(ty: TensorType, shape: &[usize], values: &[f32]) -> Result<Vec<u8>> {
    Ok(match ty {
        TensorType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        TensorType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        TensorType::Packed(f) => quantize_ggml(f, shape, values)?,
    })
}
