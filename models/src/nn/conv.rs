use kiln_kernels::conv::{conv2d, Conv2dOptions};
use kiln_kernels::layout::permute;
use kiln_kernels::quant::qlinear;
use kiln_runtime::{Result, Tensor};

use super::LayerWeight;
use crate::weights::Weights;

/// A 2-D convolution with PyTorch's [out, in, kh, kw] weight layout and a bias. A 1x1 convolution
/// (stride 1, no padding) may hold a packed weight: it is then a Linear over channels-last pixels.
/// Larger kernels stay float (see `weights::WeightType` for why).
pub struct Conv2d {
    pub weight: LayerWeight,
    pub bias: Option<Tensor>,
    pub options: Conv2dOptions,
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
        let weight = if kernel == 1 && stride == 1 && padding == 0 {
            w.get_packable("weight", &shape, cout, cin)?
        } else {
            LayerWeight::Float(w.get("weight", &shape)?)
        };
        let bias = Some(w.get("bias", &[cout])?);
        Ok(Conv2d {
            weight,
            bias,
            options: Conv2dOptions { stride, padding },
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            LayerWeight::Float(weight) => conv2d(x, weight, self.bias.as_ref(), self.options),
            LayerWeight::Packed(weight) => {
                let y = qlinear(&permute(x, &[0, 2, 3, 1])?, weight, self.bias.as_ref())?;
                permute(&y, &[0, 3, 1, 2])
            }
        }
    }
}
