//! The diffusers VAE config of a VAE's tensors, read off their shapes: an original-layout
//! `first_stage_model` or a VAE file of its own (`--vae`) in either layout.
//! Not in the weights: the GroupNorm group count (32 in every SD VAE) and the latent scaling factor
//! (0.18215 for SD 1.x / 2.x, diffusers' `LDM_VAE_DEFAULT_SCALING_FACTOR`; 0.13025 for SDXL, whose
//! VAE also overflows in f16, hence `force_upcast`).

use serde_json::{json, Value};

use kiln_runtime::{Error, Result};

use super::inventory::Inventory;
use super::kind::ModelKind;

const SCALING_FACTOR: f64 = 0.18215;
const SDXL_SCALING_FACTOR: f64 = 0.13025;

/// How a VAE's tensors are named: CompVis' names under `prefix` (`first_stage_model.` in a
/// checkpoint, nothing in a VAE file), or diffusers' names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaeLayout {
    Original(&'static str),
    Diffusers,
}

impl VaeLayout {
    pub fn prefix(self) -> &'static str {
        match self {
            VaeLayout::Original(p) => p,
            VaeLayout::Diffusers => "",
        }
    }

    /// (encoder levels, a level's resnets, the mid-block attention) in this layout.
    fn parts(self) -> (&'static str, &'static str, &'static str) {
        match self {
            VaeLayout::Original(_) => ("encoder.down.", "block.", "encoder.mid.attn_1."),
            VaeLayout::Diffusers => (
                "encoder.down_blocks.",
                "resnets.",
                "encoder.mid_block.attentions.0.",
            ),
        }
    }
}

pub fn vae_config(inv: &Inventory, layout: VaeLayout, kind: ModelKind) -> Result<Value> {
    let p = layout.prefix();
    let (down, block, attention) = layout.parts();
    let conv_in = inv.shape(
        &format!("{p}encoder.conv_in.weight"),
        4,
        "the VAE's in_channels",
    )?;
    let levels = inv.count(&format!("{p}{down}"));
    if levels == 0 {
        return Err(Error::load(
            &inv.origin,
            format!("no `{p}{down}0.*` tensors: not an SD VAE"),
        ));
    }
    let channels = (0..levels)
        .map(|i| {
            let name = format!("{p}{down}{i}.{block}0.conv1.weight");
            inv.shape(&name, 4, "the VAE's block_out_channels")
                .map(|s| s[0])
        })
        .collect::<Result<Vec<_>>>()?;
    let layers = inv.count(&format!("{p}{down}0.{block}"));
    let decoder_in = inv.shape(&format!("{p}decoder.conv_in.weight"), 4, "latent_channels")?;
    let decoder_out = inv.shape(
        &format!("{p}decoder.conv_out.weight"),
        4,
        "the VAE's out_channels",
    )?;
    let mut config = json!({
        "_class_name": "AutoencoderKL",
        "in_channels": conv_in[1],
        "out_channels": decoder_out[0],
        "down_block_types": vec!["DownEncoderBlock2D"; levels],
        "up_block_types": vec!["UpDecoderBlock2D"; levels],
        "block_out_channels": channels,
        "layers_per_block": layers,
        "latent_channels": decoder_in[1],
        "norm_num_groups": 32,
        "sample_size": kind.image_size(),
        "scaling_factor": SCALING_FACTOR,
        "use_quant_conv": inv.has(&format!("{p}quant_conv.weight")),
        "use_post_quant_conv": inv.has(&format!("{p}post_quant_conv.weight")),
        "mid_block_add_attention": inv.any_under(&format!("{p}{attention}")),
    });
    if kind.is_sdxl() {
        config["scaling_factor"] = json!(SDXL_SCALING_FACTOR);
        config["force_upcast"] = json!(true);
    }
    Ok(config)
}
