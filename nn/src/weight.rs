use kiln_runtime::{QTensor, Tensor};

/// The weight of a Linear or 1x1 convolution: float, or packed quantised blocks (`--weight-type`).
#[derive(Clone, Debug)]
pub enum LayerWeight {
    /// In the stored shape (`[out, in]`, or `[out, in, kh, kw]` for a convolution).
    Float(Tensor),
    /// `[out, in]` packed blocks, read directly by the dequantising kernels.
    Packed(QTensor),
}

impl LayerWeight {
    pub fn shape(&self) -> &[usize] {
        match self {
            LayerWeight::Float(t) => t.shape(),
            LayerWeight::Packed(q) => q.shape(),
        }
    }
}
