//! The layers models are assembled from: each a struct built from `Weights` with its shapes checked,
//! and a `forward` that calls kernels.

mod conv;
mod linear;
mod norm;
mod weight;

pub use conv::Conv2d;
pub use linear::Linear;
pub use norm::{GroupNorm, LayerNorm};
pub use weight::LayerWeight;
