//! The diffusers UNet config of an original-layout UNet, read off its tensor names and shapes.
//!
//! diffusers' single-file loader takes the config of a default repository per model type and only
//! checks the weights against it; kiln reads every size from the weights instead, so fine-tunes with
//! other widths load too, and gives the same config for the published SD models. What the weights
//! cannot show is taken per family as diffusers' configs have it: the head count (SD 1.x: 8 heads per
//! block; SD 2.x and SDXL: 64-wide heads, so `channels / 64`), 32 GroupNorm groups, the sample size.
//!
//! SDXL's text_time conditioning: `label_emb.0.0` takes the pooled bigG embedding (as wide as bigG's
//! `text_projection`) followed by each time id's sinusoidal features, so its input width gives
//! `projection_class_embeddings_input_dim` and, less the pooled width, `addition_time_embed_dim` times
//! the number of time ids (6 for base, 5 for the refiner).

use serde_json::{json, Value};

use kiln_runtime::{Error, Result};

use super::infer_clip::pooled_width;
use super::inventory::Inventory;
use super::kind::ModelKind;
use super::unet_names::{ADD_EMBEDDING, UNET_PREFIX};

/// SD 1.x configs give 8 heads to every block (`attention_head_dim: 8`, really a head count).
const SD1_HEADS: usize = 8;
/// SD 2.x's and SDXL's `num_head_channels: 64` in the CompVis config.
const HEAD_WIDTH_64: usize = 64;
/// The pooled width SDXL's UNets were trained with (bigG's projection), for a UNet-only file.
const SDXL_POOLED: usize = 1280;

/// A per-block list, written as one value when all blocks agree (as the published configs do).
fn per_block(values: &[usize]) -> Value {
    match values.split_first() {
        Some((first, rest)) if rest.iter().all(|v| v == first) => json!(first),
        _ => json!(values),
    }
}

/// What one spatial transformer (`<block>.1`) says about the config.
struct Transformer {
    depth: usize,
    linear: bool,
    cross: usize,
}

fn transformer(inv: &Inventory, block: &str) -> Result<Option<Transformer>> {
    let proj_in = format!("{block}proj_in.weight");
    let Some(shape) = inv.get(&proj_in) else {
        return Ok(None);
    };
    let depth = inv.count(&format!("{block}transformer_blocks."));
    let to_k = format!("{block}transformer_blocks.0.attn2.to_k.weight");
    let cross = inv.shape(&to_k, 2, "cross_attention_dim")?[1];
    Ok(Some(Transformer {
        depth,
        linear: shape.len() == 2,
        cross,
    }))
}

pub fn unet_config(inv: &Inventory, kind: ModelKind) -> Result<Value> {
    let p = UNET_PREFIX;
    let bad = |msg: String| Error::load(&inv.origin, format!("UNet (`{p}*`): {msg}"));
    let conv_in = inv.shape(&format!("{p}input_blocks.0.0.weight"), 4, "in_channels")?;
    let (c0, in_channels, kernel_in) = (conv_in[0], conv_in[1], conv_in[2]);
    let conv_out = inv.shape(&format!("{p}out.2.weight"), 4, "out_channels")?;
    let time = inv.shape(&format!("{p}time_embed.0.weight"), 2, "the time embedding")?;

    // Resnets per level: input blocks up to each downsampler (`input_blocks.i.0.op`).
    let inputs = inv.indices(&format!("{p}input_blocks."));
    let last = inputs.iter().max().copied().unwrap_or(0);
    let mut layers = Vec::new();
    let mut current = 0;
    for i in 1..=last {
        if !inputs.contains(&i) {
            return Err(bad(format!("`input_blocks.{i}` is missing")));
        }
        if inv.has(&format!("{p}input_blocks.{i}.0.op.weight")) {
            layers.push(current);
            current = 0;
        } else {
            current += 1;
        }
    }
    layers.push(current);
    if layers.contains(&0) {
        return Err(bad(format!(
            "input blocks 1..={last} do not split into levels of resnets and downsamplers ({layers:?} resnets per level)"
        )));
    }
    let n = layers.len();

    let mut channels = Vec::with_capacity(n);
    let mut down_types = Vec::with_capacity(n);
    let mut depth = Vec::with_capacity(n);
    let mut transformers = Vec::new();
    let mut first = 1;
    for &count in &layers {
        let block = format!("{p}input_blocks.{first}.");
        channels.push(
            inv.shape(
                &format!("{block}0.out_layers.3.weight"),
                4,
                "block_out_channels",
            )?[0],
        );
        match transformer(inv, &format!("{block}1."))? {
            Some(t) => {
                down_types.push("CrossAttnDownBlock2D");
                depth.push(Some(t.depth));
                transformers.push(t);
            }
            None => {
                down_types.push("DownBlock2D");
                depth.push(None);
            }
        }
        first += count + 1;
    }

    let mid = transformer(inv, &format!("{p}middle_block.1."))?;
    let has_mid = inv.any_under(&format!("{p}middle_block."));
    if has_mid && mid.is_none() {
        return Err(bad(
            "a mid block without attention (UNetMidBlock2D) is not supported".into(),
        ));
    }

    let mut up_types = Vec::with_capacity(n);
    let mut first = 0;
    for i in 0..n {
        let count = layers[n - 1 - i] + 1;
        let block = format!("{p}output_blocks.{first}.1.");
        match transformer(inv, &block)? {
            Some(t) => {
                up_types.push("CrossAttnUpBlock2D");
                transformers.push(t);
            }
            None => up_types.push("UpBlock2D"),
        }
        first += count;
    }
    if let Some(t) = mid {
        // diffusers gives the mid block the last entry of transformer_layers_per_block.
        match depth[n - 1] {
            Some(d) if d != t.depth => {
                return Err(bad(format!(
                    "the mid block has {} transformer blocks but the last down block {d}; diffusers' config cannot express that",
                    t.depth
                )))
            }
            _ => depth[n - 1] = Some(t.depth),
        }
        transformers.push(t);
    }
    let Some(t0) = transformers.first() else {
        return Err(bad("no spatial transformers: not an SD UNet".into()));
    };
    let cross = t0.cross;
    let linear = t0.linear;
    if let Some(t) = transformers
        .iter()
        .find(|t| t.cross != cross || t.linear != linear)
    {
        return Err(bad(format!(
            "transformers disagree: cross-attention widths {cross} and {}, projections linear {linear} and {}",
            t.cross, t.linear
        )));
    }
    // Blocks without attention have no depth; they take the depth all others share (one value, as
    // the published configs write it: SD 1.x 1, the SDXL refiner 4), else 1 (SDXL base [1, 2, 10]).
    let known: Vec<usize> = depth.iter().flatten().copied().collect();
    let shared = match known.split_first() {
        Some((first, rest)) if rest.iter().all(|d| d == first) => *first,
        _ => 1,
    };
    let depth: Vec<usize> = depth.into_iter().map(|d| d.unwrap_or(shared)).collect();
    let heads: Vec<usize> = if kind.is_sd2() || kind.is_sdxl() {
        channels.iter().map(|c| c / HEAD_WIDTH_64).collect()
    } else {
        vec![SD1_HEADS; n]
    };

    let mut config = json!({
        "_class_name": "UNet2DConditionModel",
        "in_channels": in_channels,
        "out_channels": conv_out[0],
        "block_out_channels": channels,
        "layers_per_block": per_block(&layers),
        "down_block_types": down_types,
        "mid_block_type": if has_mid { json!("UNetMidBlock2DCrossAttn") } else { Value::Null },
        "up_block_types": up_types,
        "cross_attention_dim": cross,
        "attention_head_dim": per_block(&heads),
        "transformer_layers_per_block": per_block(&depth),
        "use_linear_projection": linear,
        "conv_in_kernel": kernel_in,
        "conv_out_kernel": conv_out[2],
        "norm_num_groups": 32,
        "sample_size": kind.image_size() / 8,
        "upcast_attention": kind == ModelKind::Sd2,
    });
    if time[0] != 4 * c0 {
        config["time_embedding_dim"] = json!(time[0]);
    }
    let label = format!("{p}{ADD_EMBEDDING}0.weight");
    if inv.has(&label) {
        let input = inv.shape(&label, 2, "projection_class_embeddings_input_dim")?[1];
        let ids = kind.time_ids().unwrap_or(6);
        let pooled = pooled_width(inv, kind)?.unwrap_or(SDXL_POOLED);
        if input <= pooled || !(input - pooled).is_multiple_of(ids) {
            return Err(bad(format!(
                "`{label}` takes {input} features, which is not the pooled text embedding ({pooled}) \
                 plus {ids} time ids of equal width (SDXL's text_time conditioning)"
            )));
        }
        config["addition_embed_type"] = json!("text_time");
        config["addition_embed_type_num_heads"] = json!(64);
        config["addition_time_embed_dim"] = json!((input - pooled) / ids);
        config["projection_class_embeddings_input_dim"] = json!(input);
    }
    Ok(config)
}
