//! kohya's SDXL LoRA names. Its trainer runs Stability's original (SGM / CompVis) UNet, so SDXL
//! files name `lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`, `middle_block_1_...`,
//! `output_blocks_...` and, for LoCon, a resnet's `in_layers_2` (conv1), `out_layers_3` (conv2),
//! `emb_layers_1` (time_emb_proj), `skip_connection` (conv_shortcut) and a downsampler's `op`.
//! diffusers renames such keys to its own (`_maybe_map_sgm_blocks_to_diffusers` +
//! `_convert_unet_lora_key`); kiln gives each registered UNet module its CompVis name as an alias,
//! from the same block numbering the single-file loader reads checkpoints with
//! (`single_file::UnetNames`, worked out from the model's config), so any block layout maps.
//!
//! One difference from diffusers: its renaming takes `output_blocks.N.1` as an attention always,
//! where CompVis puts the upsampler of a block without attentions there. SDXL's one such block is
//! the last, which has no upsampler, so SDXL files map the same either way.

use std::collections::BTreeMap;

use crate::single_file::{compvis_module, UnetNames};
use crate::unet::UnetConfig;

/// kohya's underscored CompVis name (`input_blocks_4_1_proj_in`) -> registered diffusers module
/// name, for each of `names` that has one; empty when the config has no CompVis numbering (its
/// block lists disagree), and then only diffusers names match.
pub(crate) fn sgm_aliases(config: &UnetConfig, names: &[String]) -> BTreeMap<String, String> {
    let Ok(map) = UnetNames::new(config) else {
        return BTreeMap::new();
    };
    names
        .iter()
        .filter_map(|n| Some((compvis_module(&map, n)?.replace('.', "_"), n.clone())))
        .collect()
}
