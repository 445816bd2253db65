//! The Mistral3 multimodal projector (transformers `Mistral3MultiModalProjector`): RMSNorm, the
//! patch merger (each 2x2 block of neighbouring patches concatenated channel-major, as
//! `F.unfold(kernel = stride = 2)` orders them, then `merging_layer` 4d -> d), `linear_1`, GELU,
//! `linear_2` into the text model's width.

use kiln_kernels::elementwise::{gelu, silu};
use kiln_kernels::layout::permute;
use kiln_nn::weights::Weights;
use kiln_nn::{Linear, RmsNorm};
use kiln_runtime::{Error, Result, Tensor};

use super::config::{Activation, VisionConfig};

pub struct Projector {
    pub norm: RmsNorm,
    pub merging_layer: Linear,
    pub linear_1: Linear,
    pub linear_2: Linear,
    pub merge: usize,
    pub act: Activation,
}

impl Projector {
    pub fn new(w: &Weights, c: &VisionConfig) -> Result<Projector> {
        let d = c.encoder.hidden_size;
        let m = c.spatial_merge_size;
        let text = c.text_hidden_size;
        Ok(Projector {
            norm: RmsNorm::new(&w.pp("norm"), d, c.text_rms_norm_eps)?,
            merging_layer: Linear::new(&w.pp("patch_merger.merging_layer"), d * m * m, d, false)?,
            linear_1: Linear::new(&w.pp("linear_1"), d, text, c.projector_bias)?,
            linear_2: Linear::new(&w.pp("linear_2"), text, text, c.projector_bias)?,
            merge: m,
            act: c.projector_hidden_act,
        })
    }

    /// `features` `[rows * cols, d]`: one image's patches in row-major order over a
    /// `rows x cols` patch grid (both multiples of the merge size). Returns
    /// `[(rows / m) * (cols / m), text_hidden]`, one row per `[IMG]` token in prompt order.
    pub fn forward(&self, features: &Tensor, rows: usize, cols: usize) -> Result<Tensor> {
        let m = self.merge;
        let shape = features.shape();
        if shape.len() != 2
            || shape[0] != rows * cols
            || !rows.is_multiple_of(m)
            || !cols.is_multiple_of(m)
        {
            return Err(Error::shape(
                "mistral3 projector",
                format!(
                    "features {shape:?} for a {rows}x{cols} patch grid: expected [{}, d] with both sides multiples of {m}",
                    rows * cols
                ),
            ));
        }
        let d = shape[1];
        let x = self.norm.forward(features)?;
        // [R/m, m, C/m, m, d] -> [R/m, C/m, d, m, m]: feature index c * m * m + kh * m + kw.
        let merged = permute(
            &x.reshape(&[rows / m, m, cols / m, m, d])?,
            &[0, 2, 4, 1, 3],
        )?
        .reshape(&[(rows / m) * (cols / m), d * m * m])?;
        let x = self
            .linear_1
            .forward(&self.merging_layer.forward(&merged)?)?;
        let x = match self.act {
            Activation::Gelu => gelu(&x)?,
            Activation::Silu => silu(&x)?,
        };
        self.linear_2.forward(&x)
    }
}
