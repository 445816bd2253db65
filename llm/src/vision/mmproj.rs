//! llama.cpp's `mmproj` GGUF files of Mistral3 / Pixtral (`general.architecture` "clip",
//! `clip.projector_type` "pixtral"): the vision tower and projector that `--mmproj FILE` adds to a
//! GGUF text model. Sizes come from the `clip.vision.*` metadata; the projector's output width
//! from `mm.2`; each name kiln's builder asks for maps to llama.cpp's (`v.patch_embd`, `v.pre_ln`,
//! `v.blk.N.{attn_q, attn_k, attn_v, attn_out, ln1, ln2, ffn_gate, ffn_up, ffn_down}`,
//! `mm.input_norm`, `mm.patch_merger`, `mm.1`, `mm.2`). The converter permutes the tower's q and
//! k rows per head as it does the text model's; they are read back in Hugging Face's order.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use kiln_nn::weights::{GgufName, GgufSource, TensorSource, WeightType, Weights};
use kiln_runtime::gguf::GgufFile;
use kiln_runtime::{Device, Error, Result};

use super::config::{Activation, PixtralConfig, VisionConfig};
use super::model::VisionModel;
use crate::config::MistralConfig;
use crate::model::rope_rows;

/// Pixtral's RoPE base: llama.cpp's files do not store it (its clip code uses 10000 too).
const PIXTRAL_ROPE_THETA: f32 = 10000.0;

/// Loads an mmproj file for the text model `text` (whose width the projector must reach).
pub fn load_mmproj(
    path: &Path,
    text: &MistralConfig,
    device: &Device,
    weight_type: WeightType,
) -> Result<VisionModel> {
    let file = GgufFile::open(path)?;
    let config = mmproj_config(&file, text)?;
    let names = mmproj_names(&config);
    let source: Arc<dyn TensorSource> = Arc::new(GgufSource::renamed(file, names)?);
    let weights = Weights::from_source(source, device, weight_type.float_dtype())
        .quantized(weight_type.quantization());
    VisionModel::with_prefixes(config, &weights, "vision_tower", "multi_modal_projector")
}

/// The vision settings of an mmproj file for `text` (for memory plans before loading).
pub fn read_mmproj_config(path: &Path, text: &MistralConfig) -> Result<VisionConfig> {
    mmproj_config(&GgufFile::open(path)?, text)
}

fn mmproj_config(file: &GgufFile, text: &MistralConfig) -> Result<VisionConfig> {
    let path = file.path();
    let arch = file.get_str("general.architecture").unwrap_or("");
    let projector = file.get_str("clip.projector_type").unwrap_or("");
    if arch != "clip" || projector != "pixtral" {
        return Err(Error::load(
            path,
            format!(
                "not a Pixtral mmproj file (general.architecture `{arch}`, clip.projector_type \
                 `{projector}`; kiln reads llama.cpp's pixtral projector for Mistral Small 3.x)"
            ),
        ));
    }
    let size = |key: &str| -> Result<usize> {
        file.get_u64(&format!("clip.vision.{key}"))
            .filter(|&v| v > 0 && v < 1 << 20)
            .map(|v| v as usize)
            .ok_or_else(|| {
                Error::load(
                    path,
                    format!("`clip.vision.{key}` is missing or out of range"),
                )
            })
    };
    let hidden = size("embedding_length")?;
    let heads = size("attention.head_count")?;
    if !hidden.is_multiple_of(heads) || !(hidden / heads).is_multiple_of(4) {
        return Err(Error::load(
            path,
            format!("{heads} heads do not split a width of {hidden} into heads of a multiple of 4"),
        ));
    }
    let layers = size("block_count")?;
    let text_hidden = file
        .tensor("mm.2.weight")
        .and_then(|t| t.shape.first().copied())
        .ok_or_else(|| Error::load(path, "no `mm.2.weight` (the projector's last layer)"))?;
    if text_hidden != text.hidden_size {
        return Err(Error::load(
            path,
            format!(
                "the projector writes rows of {text_hidden}, the text model is {} wide: an mmproj \
                 file of another model",
                text.hidden_size
            ),
        ));
    }
    let hidden_act = if file.get_bool("clip.use_gelu") == Some(true) {
        Activation::Gelu
    } else {
        Activation::Silu
    };
    let encoder = PixtralConfig {
        hidden_size: hidden,
        intermediate_size: size("feed_forward_length")?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        head_dim: hidden / heads,
        num_channels: 3,
        patch_size: size("patch_size")?,
        image_size: size("image_size")?,
        rope_theta: PIXTRAL_ROPE_THETA,
        hidden_act,
    };
    if encoder.image_size < encoder.patch_size {
        return Err(Error::load(
            path,
            "clip.vision.image_size is under its patch size",
        ));
    }
    Ok(VisionConfig {
        spatial_merge_size: file
            .get_u64("clip.vision.spatial_merge_size")
            .filter(|&v| (1..=8).contains(&v))
            .unwrap_or(2) as usize,
        image_token_index: 10,
        projector_hidden_act: Activation::Gelu,
        projector_bias: file.tensor("mm.1.bias").is_some(),
        feature_layers: layers,
        text_hidden_size: text_hidden,
        text_rms_norm_eps: text.rms_norm_eps,
        encoder,
    })
}

/// Each Hugging Face name the tower and projector builders ask for, read from llama.cpp's.
fn mmproj_names(c: &VisionConfig) -> HashMap<String, GgufName> {
    let e = &c.encoder;
    let rows = rope_rows(e.num_attention_heads, e.head_dim);
    let mut names = HashMap::new();
    let mut add = |hf: String, name: GgufName| {
        names.insert(hf, name);
    };
    let tower = "vision_tower";
    add(
        format!("{tower}.patch_conv.weight"),
        GgufName::new("v.patch_embd.weight"),
    );
    add(
        format!("{tower}.ln_pre.weight"),
        GgufName::new("v.pre_ln.weight"),
    );
    for i in 0..e.num_hidden_layers {
        let (hf, gg) = (
            format!("{tower}.transformer.layers.{i}"),
            format!("v.blk.{i}"),
        );
        for (kiln, stored) in [
            ("attention_norm", "ln1"),
            ("ffn_norm", "ln2"),
            ("attention.v_proj", "attn_v"),
            ("attention.o_proj", "attn_out"),
            ("feed_forward.gate_proj", "ffn_gate"),
            ("feed_forward.up_proj", "ffn_up"),
            ("feed_forward.down_proj", "ffn_down"),
        ] {
            add(
                format!("{hf}.{kiln}.weight"),
                GgufName::new(format!("{gg}.{stored}.weight")),
            );
        }
        for (kiln, stored) in [
            ("attention.q_proj", "attn_q"),
            ("attention.k_proj", "attn_k"),
        ] {
            add(
                format!("{hf}.{kiln}.weight"),
                GgufName::with_rows(format!("{gg}.{stored}.weight"), rows.clone()),
            );
        }
    }
    let projector = "multi_modal_projector";
    let biases: &[(&str, &str)] = if c.projector_bias {
        &[
            ("linear_1.bias", "mm.1.bias"),
            ("linear_2.bias", "mm.2.bias"),
        ]
    } else {
        &[]
    };
    for (kiln, stored) in [
        ("norm.weight", "mm.input_norm.weight"),
        (
            "patch_merger.merging_layer.weight",
            "mm.patch_merger.weight",
        ),
        ("linear_1.weight", "mm.1.weight"),
        ("linear_2.weight", "mm.2.weight"),
    ]
    .iter()
    .chain(biases)
    {
        add(format!("{projector}.{kiln}"), GgufName::new(*stored));
    }
    names
}
