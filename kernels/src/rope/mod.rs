//! Rotary position embedding (RoPE) for attention queries and keys laid out `[B, L, H, D]`.

mod cpu;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "rope.wgsl",
    source: include_str!("rope.wgsl"),
};

const WORKGROUP: usize = 256;

/// Which feature pairs a rotation acts on; checkpoints differ, and mixing them up scrambles attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(i, i + D/2)` (`rotate_half`), as Hugging Face Llama, Mistral and Qwen.
    HalfSplit,
    /// Pairs `(2i, 2i + 1)`, as GPT-J and the original RoFormer.
    Interleaved,
}

/// Rotates each feature pair `i` of token `l` by `(position_offset + l) * theta^(-2i/D)`.
///
/// `x` is `[B, L, H, D]` with `D` even; the result has its shape and dtype. Angles are computed in f32
/// as Hugging Face does (`position * inv_freq`, both f32), so at position `p` the angle itself is only
/// good to about `p * 1e-7` radians; the GPU adds a few ulps from its `exp2`.
pub fn rope(x: &Tensor, position_offset: usize, theta: f32, style: RopeStyle) -> Result<Tensor> {
    let name = "rope";
    let dtype = common::same_float_dtype(name, &[("x", x)])?;
    common::rank(name, "x", x, 4)?;
    common::non_empty(name, &[("x", x)])?;
    let [_, seq_len, heads, dim] = x.shape().try_into().expect("rank checked");
    if !dim.is_multiple_of(2) {
        return Err(Error::shape(
            name,
            format!("head dimension of `x` {:?} must be even", x.shape()),
        ));
    }
    if !(theta.is_finite() && theta > 0.0) {
        return Err(Error::shape(
            name,
            format!("theta must be finite and positive, got {theta}"),
        ));
    }
    match x.device() {
        Device::Cpu => cpu::rope(x, position_offset, theta, style),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(x.device(), x.shape(), dtype, name)?;
            let n = x.numel() / 2;
            let freq_step = (-2.0 * (theta as f64).log2() / dim as f64) as f32;
            // The last position must fit in u32 as well as the first.
            Params::new().dim(name, position_offset.saturating_add(seq_len))?;
            let params = Params::new()
                .dim(name, n)?
                .dim(name, seq_len)?
                .dim(name, heads)?
                .dim(name, dim / 2)?
                .dim(name, position_offset)?
                .u32(u32::from(style == RopeStyle::Interleaved))
                .f32(freq_step)
                .align16();
            ctx.dispatch(Dispatch {
                op: name,
                kernel: &SOURCE,
                entry: "rope_pairs",
                variant: Variant::new(dtype),
                params: params.bytes(),
                buffers: &[BufferArg::new(1, "x", x), BufferArg::new(2, "out", &out)],
                workgroups: ctx.grid(name, common::groups_for(n, WORKGROUP))?,
            })?;
            Ok(out)
        }
    }
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    [DType::F32, DType::F16]
        .into_iter()
        .map(|dtype| (&SOURCE, "rope_pairs", Variant::new(dtype)))
        .collect()
}
