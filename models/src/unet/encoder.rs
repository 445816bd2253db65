//! The half of the UNet a ControlNet copies: conv_in, the time embedding (with SDXL's added
//! conditioning), the down blocks and the mid block. `Unet` and `ControlNetModel` both hold one, so
//! both run the same code under the same diffusers weight names.

use kiln_kernels::elementwise::{add, silu};
use kiln_runtime::{Error, Result, Tensor};

use super::added::{AddedCond, AddedEmbedding};
use super::blocks::{Common, DownBlock, MidBlock};
use super::config::{Resolved, UnetConfig};
use super::time::TimeEmbedding;
use kiln_nn::weights::Weights;
use kiln_nn::Conv2d;

pub struct Encoder {
    conv_in: Conv2d,
    time_embedding: TimeEmbedding,
    /// SDXL's `add_embedding` (with `add_time_proj`), when the config asks for it.
    added: Option<AddedEmbedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
}

impl Encoder {
    /// `w` is the model's root view (`conv_in`, `time_embedding`, `down_blocks.N`, `mid_block`).
    pub fn new(
        config: &UnetConfig,
        resolved: &Resolved,
        common: &Common,
        w: &Weights,
    ) -> Result<Encoder> {
        let levels = &resolved.levels;
        let n = levels.len();
        let c0 = levels[0].channels;
        let kin = config.conv_in_kernel;
        let conv_in = Conv2d::new(&w.pp("conv_in"), config.in_channels, c0, kin, 1, kin / 2)?;
        let time_embedding = TimeEmbedding::new(
            &w.pp("time_embedding"),
            resolved.time_proj_dim,
            resolved.time_embed_dim,
            config.flip_sin_to_cos,
            config.freq_shift,
        )?;
        let added = match resolved.added {
            Some(spec) => Some(AddedEmbedding::new(
                w,
                spec,
                resolved.time_embed_dim,
                config.flip_sin_to_cos,
                config.freq_shift,
            )?),
            None => None,
        };
        let mut down_blocks = Vec::with_capacity(n);
        for (i, level) in levels.iter().enumerate() {
            let cin = if i == 0 { c0 } else { levels[i - 1].channels };
            down_blocks.push(DownBlock::new(
                &w.pp(format!("down_blocks.{i}")),
                common,
                level,
                cin,
                resolved.down_attention[i],
                i + 1 < n,
            )?);
        }
        let mid_block = if resolved.mid_block {
            let scale = config.mid_block_scale_factor;
            Some(MidBlock::new(
                &w.pp("mid_block"),
                common,
                &levels[n - 1],
                scale,
            )?)
        } else {
            None
        };
        Ok(Encoder {
            conv_in,
            time_embedding,
            added,
            down_blocks,
            mid_block,
        })
    }

    /// The time embedding every resnet receives, SiLU already applied (each resnet would apply it
    /// to the same tensor). `op` names the model in errors; `b` is the batch.
    pub fn embed(
        &self,
        op: &str,
        timesteps: &Tensor,
        added: Option<AddedCond>,
        b: usize,
    ) -> Result<Tensor> {
        let aug =
            match (&self.added, added) {
                (Some(embedding), Some(cond)) => Some(embedding.forward(&cond, b)?),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(Error::shape(
                        op,
                        "this model has addition_embed_type \"text_time\" (SDXL): it needs \
                     `text_embeds` and `time_ids`",
                    ))
                }
                (None, Some(_)) => return Err(Error::shape(
                    op,
                    "`text_embeds` / `time_ids` given, but the config has no addition_embed_type",
                )),
            };
        let temb = self.time_embedding.forward(timesteps)?;
        // diffusers adds the augmented embedding before any activation (`emb = emb + aug_emb`);
        // a [1, T] time embedding broadcasts over the batch.
        match aug {
            Some(aug) => silu(&add(&temb, &aug)?),
            None => silu(&temb),
        }
    }

    pub fn conv_in(&self, sample: &Tensor) -> Result<Tensor> {
        self.conv_in.forward(sample)
    }

    /// The down blocks and the mid block from `h` (conv_in's output, which is the first skip).
    /// Returns the mid block's output and every skip in diffusers' `down_block_res_samples` order.
    pub fn encode(
        &self,
        h: Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut skips = vec![h.clone()];
        let mut h = h;
        for block in &self.down_blocks {
            h = block.forward(h, temb, context, &mut skips)?;
        }
        if let Some(mid) = &self.mid_block {
            h = mid.forward(&h, temb, context)?;
        }
        Ok((h, skips))
    }
}

/// The number of skip connections (`down_block_res_samples`) a config's down path makes: conv_in's
/// output, one per resnet, one per downsampler.
pub fn skip_count(resolved: &Resolved) -> usize {
    let n = resolved.levels.len();
    1 + resolved.levels.iter().map(|l| l.layers).sum::<usize>() + (n - 1)
}
