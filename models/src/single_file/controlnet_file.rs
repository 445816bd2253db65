//! lllyasviel's original ControlNet 1.0 / 1.1 files (`control_v11p_sd15_canny.safetensors`): the
//! UNet encoder under CompVis names (`input_blocks.*`, `middle_block.*`, `time_embed.*`, SDXL's
//! `label_emb.*`), the hint encoder `input_hint_block.N` (convs at even N, SiLU between), the zero
//! convs `zero_convs.N.0` and `middle_block_out.0`, optionally under `control_model.`: diffusers'
//! `convert_controlnet_checkpoint` mapping, read in place like a single-file SD checkpoint.
//!
//! A ControlNet is a copy of its base UNet's encoder, so what the weights cannot show (head counts,
//! norm groups, projections) comes from the base model's UNet config, as diffusers' single-file
//! loader takes it from a default repository; the hint encoder's widths come from the file.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kiln_runtime::loader::WeightFile;
use kiln_runtime::{Device, Error, Result};

use super::inventory::Inventory;
use super::renamed::{RenamedSource, UsedNames};
use super::stored::Stored;
use super::unet_names::{UnetNames, UNET_PREFIX};
use super::{check_all_used, refuse_pickles, NameMap};
use crate::controlnet::{ControlNetConfig, ControlNetLoad, ControlNetModel};
use crate::unet::UnetConfig;

const PREFIX: &str = "control_model.";

struct ControlNames {
    prefix: &'static str,
    unet: UnetNames,
    /// `input_hint_block` conv indices, in order.
    hint: Vec<usize>,
}

impl NameMap for ControlNames {
    fn stored(&self, name: &str) -> Option<Stored> {
        let p = self.prefix;
        let whole = |s: String| Some(Stored::whole(format!("{p}{s}")));
        if let Some(rest) = name.strip_prefix("controlnet_cond_embedding.") {
            let (layer, param) = rest.split_once('.')?;
            let index = match layer {
                "conv_in" => *self.hint.first()?,
                "conv_out" => *self.hint.last()?,
                "blocks" => {
                    let (k, param) = param.split_once('.')?;
                    let k: usize = k.parse().ok()?;
                    let i = *self.hint.get(1 + k)?;
                    // Not the last one, which is conv_out.
                    if 1 + k + 1 >= self.hint.len() {
                        return None;
                    }
                    return whole(format!("input_hint_block.{i}.{param}"));
                }
                _ => return None,
            };
            return whole(format!("input_hint_block.{index}.{param}"));
        }
        if let Some(rest) = name.strip_prefix("controlnet_down_blocks.") {
            let (n, param) = rest.split_once('.')?;
            return whole(format!("zero_convs.{n}.0.{param}"));
        }
        if let Some(param) = name.strip_prefix("controlnet_mid_block.") {
            return whole(format!("middle_block_out.0.{param}"));
        }
        let stored = self.unet.stored(name)?;
        whole(stored.name.strip_prefix(UNET_PREFIX)?.to_string())
    }
}

/// Loads an original-layout ControlNet file for a base model whose UNet config is `base`.
pub fn load_controlnet_file(
    path: &Path,
    base: &UnetConfig,
    device: &Device,
    load: &ControlNetLoad,
) -> Result<ControlNetModel> {
    refuse_pickles(path)?;
    let source = load.source(WeightFile::open(path)?);
    let inv = Inventory::of(source.as_ref());
    let prefix = if inv.any_under(PREFIX) { PREFIX } else { "" };
    let bad = |msg: String| Error::load(path, msg);
    let hint: Vec<usize> = inv
        .indices(&format!("{prefix}input_hint_block."))
        .into_iter()
        .filter(|i| inv.has(&format!("{prefix}input_hint_block.{i}.weight")))
        .collect();
    if hint.len() < 2
        || !hint.len().is_multiple_of(2)
        || !inv.has(&format!("{prefix}zero_convs.0.0.weight"))
    {
        return Err(bad(format!(
            "not a ControlNet file: expected `input_hint_block.N` convs and `zero_convs.N.0` \
             (optionally under `{PREFIX}`); found {}",
            inv.found()
        )));
    }
    let out = |i: usize| -> Result<&[usize]> {
        inv.shape(
            &format!("{prefix}input_hint_block.{i}.weight"),
            4,
            "the hint encoder",
        )
    };
    let conditioning_channels = out(hint[0])?[1];
    let mut widths = vec![out(hint[0])?[0]];
    for pair in hint[1..hint.len() - 1].chunks(2) {
        widths.push(out(pair[1])?[0]);
    }
    // The base must fit before any weight loads: cross-attention width and added conditioning.
    let base_cross = base.resolve()?.levels[0].cross_attention_dim;
    let cross = inv
        .under(prefix)
        .find(|n| n.ends_with("attn2.to_k.weight") && !n.contains("hint"))
        .and_then(|n| inv.get(n))
        .map(|s| s[1]);
    let sdxl_file = inv.any_under(&format!("{prefix}label_emb."));
    let sdxl_base = base.addition_embed_type.is_some();
    if cross.is_some_and(|c| c != base_cross) || sdxl_file != sdxl_base {
        let what = |c: Option<usize>, xl: bool| {
            format!(
                "cross_attention_dim {}, {}",
                c.map_or("?".into(), |c| c.to_string()),
                if xl {
                    "SDXL added conditioning"
                } else {
                    "no added conditioning"
                }
            )
        };
        return Err(bad(format!(
            "this ControlNet was made for another base model: it has {}, the model's UNet has {}",
            what(cross, sdxl_file),
            what(Some(base_cross), sdxl_base)
        )));
    }
    let mut unet = base.clone();
    unet.in_channels = inv.shape(&format!("{prefix}input_blocks.0.0.weight"), 4, "conv_in")?[1];
    unet.up_block_types = unet
        .down_block_types
        .iter()
        .rev()
        .map(|t| t.replace("Down", "Up"))
        .collect();
    let config = ControlNetConfig {
        unet,
        conditioning_channels,
        conditioning_embedding_out_channels: widths,
        bgr: false,
        global_pool_conditions: false,
    };
    config.resolve()?;
    let names = ControlNames {
        prefix,
        unet: UnetNames::new(&config.unet)?,
        hint,
    };
    let used: UsedNames = Arc::new(Mutex::new(BTreeSet::new()));
    let renamed = Arc::new(RenamedSource::new(source, Box::new(names), used.clone()));
    let (weights, tally) = load.weights(renamed, device);
    let model = ControlNetModel::new(&config, &weights)?;
    check_all_used(&inv, prefix, &used, |_| false, "ControlNet")?;
    Ok(model.with_tally(tally))
}
