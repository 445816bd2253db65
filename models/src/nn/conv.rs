use kiln_kernels::conv::{conv2d, Conv2dOptions};
use kiln_runtime::{Result, Tensor};

use crate::weights::Weights;

/// A 2-D convolution with PyTorch's [out, in, kh, kw] weight layout and a bias.
pub struct Conv2d {
    pub weight: Tensor,
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
        let weight = w.get("weight", &[cout, cin, kernel, kernel])?;
        let bias = Some(w.get("bias", &[cout])?);
        Ok(Conv2d {
            weight,
            bias,
            options: Conv2dOptions { stride, padding },
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, &self.weight, self.bias.as_ref(), self.options)
    }
}
