//! What a UNet evaluation takes beyond the latents: [`UnetInputs`], with the ControlNet residuals
//! added as diffusers' `UNet2DConditionModel` adds `down_block_additional_residuals` (one per skip
//! connection) and `mid_block_additional_residual` (to the mid block's output).

use kiln_kernels::elementwise::{add, cast};
use kiln_runtime::{Error, Result, Tensor};

use super::added::AddedCond;

/// Every input of one UNet forward pass.
#[derive(Clone, Copy)]
pub struct UnetInputs<'a> {
    /// `[B, in_channels, H, W]` latents.
    pub sample: &'a Tensor,
    /// `[B]` or `[1]` float timesteps.
    pub timesteps: &'a Tensor,
    /// `[B, L, cross_attention_dim]` text embeddings.
    pub context: &'a Tensor,
    /// SDXL's pooled text embedding and time ids.
    pub added: Option<AddedCond<'a>>,
    /// Summed ControlNet residuals, already scaled.
    pub control: Option<&'a ControlResiduals>,
}

/// A ControlNet's output (or several ControlNets' outputs summed): one tensor per skip connection
/// of the down path, in diffusers' `down_block_res_samples` order, and one for the mid block.
#[derive(Clone)]
pub struct ControlResiduals {
    pub down: Vec<Tensor>,
    pub mid: Tensor,
}

impl ControlResiduals {
    /// Element-wise sum with `other` (diffusers' `MultiControlNetModel`: earlier + later).
    pub fn sum(&self, other: &ControlResiduals) -> Result<ControlResiduals> {
        if self.down.len() != other.down.len() {
            return Err(Error::shape(
                "controlnet residuals",
                format!(
                    "cannot sum {} and {} down residuals: the ControlNets have different down paths",
                    self.down.len(),
                    other.down.len()
                ),
            ));
        }
        Ok(ControlResiduals {
            down: self
                .down
                .iter()
                .zip(&other.down)
                .map(|(a, b)| add(a, b))
                .collect::<Result<_>>()?,
            mid: add(&self.mid, &other.mid)?,
        })
    }

    /// `skips[i] + down[i]` and `h + mid`, after checking every shape.
    pub(super) fn apply(&self, h: Tensor, skips: Vec<Tensor>) -> Result<(Tensor, Vec<Tensor>)> {
        const OP: &str = "unet control residuals";
        if self.down.len() != skips.len() {
            return Err(Error::shape(
                OP,
                format!(
                    "{} down residuals for {} skip connections: the ControlNet's down path differs \
                     from the UNet's",
                    self.down.len(),
                    skips.len()
                ),
            ));
        }
        // A residual may be [B, C, 1, 1] (global_pool_conditions) and broadcast over the plane.
        let fits = |r: &Tensor, s: &Tensor| {
            r.rank() == 4
                && r.dim(0) == s.dim(0)
                && r.dim(1) == s.dim(1)
                && ((r.dim(2), r.dim(3)) == (s.dim(2), s.dim(3)) || (r.dim(2), r.dim(3)) == (1, 1))
        };
        let mut out = Vec::with_capacity(skips.len());
        for (i, (s, r)) in skips.into_iter().zip(&self.down).enumerate() {
            if !fits(r, &s) {
                return Err(Error::shape(
                    OP,
                    format!(
                        "down residual {i} {:?} does not fit skip connection {:?}",
                        r.shape(),
                        s.shape()
                    ),
                ));
            }
            out.push(add(&s, &cast(r, s.dtype())?)?);
        }
        if !fits(&self.mid, &h) {
            return Err(Error::shape(
                OP,
                format!(
                    "mid residual {:?} does not fit the mid block's output {:?}",
                    self.mid.shape(),
                    h.shape()
                ),
            ));
        }
        let h = add(&h, &cast(&self.mid, h.dtype())?)?;
        Ok((h, out))
    }
}
