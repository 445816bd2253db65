use kiln_kernels::conv::{conv2d_padded, qconv2d_padded, Conv2dOptions, Padding2d};
use kiln_kernels::layout::permute;
use kiln_kernels::quant::qlinear;
use kiln_runtime::{Result, Tensor};

use super::LayerWeight;
use crate::lora::{LoraSlot, LoraTarget};
use crate::weights::Weights;
use std::sync::Arc;

/// A 2-D convolution with PyTorch's [out, in, kh, kw] weight layout and a bias. The weight may be
/// packed (`--weight-type`) as [out, in * kh * kw] blocks when that row length is a whole number of
/// blocks: a 1x1 convolution (stride 1, no padding) then runs as a Linear over channels-last pixels,
/// larger kernels through the packed-weight convolution kernel.
pub struct Conv2d {
    pub weight: LayerWeight,
    pub bias: Option<Tensor>,
    pub kernel: usize,
    pub options: Conv2dOptions,
    /// Adapters added to the output, when the model registers its layers (`Weights::with_lora`).
    pub lora: Option<Arc<LoraSlot>>,
}

impl Conv2d {
    pub fn new(
        w: &Weights,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Conv2d> {
        let shape = [cout, cin, kernel, kernel];
        let weight = w.get_packable("weight", &shape, cout, cin * kernel * kernel)?;
        let bias = Some(w.get("bias", &[cout])?);
        Ok(Conv2d {
            weight,
            bias,
            kernel,
            options: Conv2dOptions { stride, padding },
            lora: w.lora_slot(LoraTarget::Conv { cin, cout, kernel }),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let Conv2dOptions { stride, padding } = self.options;
        let pointwise = self.kernel == 1 && stride == 1 && padding == 0;
        let pad = Padding2d::symmetric(padding, padding);
        let y = match &self.weight {
            LayerWeight::Packed(weight) if pointwise => {
                let y = qlinear(&permute(x, &[0, 2, 3, 1])?, weight, self.bias.as_ref())?;
                permute(&y, &[0, 3, 1, 2])?
            }
            _ => self.base_padded(x, pad)?,
        };
        self.with_lora(x, y, pad)
    }

    /// The convolution with its own stride and the given padding of each side (as `F.pad` first).
    pub fn forward_padded(&self, x: &Tensor, padding: Padding2d) -> Result<Tensor> {
        let y = self.base_padded(x, padding)?;
        self.with_lora(x, y, padding)
    }

    fn with_lora(&self, x: &Tensor, y: Tensor, padding: Padding2d) -> Result<Tensor> {
        match &self.lora {
            Some(slot) if !slot.is_empty() => slot.apply_conv(x, y, self.options.stride, padding),
            _ => Ok(y),
        }
    }

    fn base_padded(&self, x: &Tensor, padding: Padding2d) -> Result<Tensor> {
        let stride = [self.options.stride; 2];
        let bias = self.bias.as_ref();
        match &self.weight {
            LayerWeight::Float(weight) => conv2d_padded(x, weight, bias, stride, padding),
            LayerWeight::Packed(weight) => {
                qconv2d_padded(x, weight, [self.kernel; 2], bias, stride, padding)
            }
        }
    }
}
