//! Rotary position embedding (RoPE) for attention queries and keys laid out `[B, L, H, D]`.

mod cpu;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{CpuData, DType, Device, Error, Result, Tensor};

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
    common::rank(name, "x", x, 4)?;
    let [seq_len, dim] = check(name, x, theta)?;
    match x.device() {
        Device::Cpu => cpu::rope(x, position_offset, theta, style),
        Device::Gpu(_) => {
            // The last position must fit in u32 as well as the first.
            Params::new().dim(name, position_offset.saturating_add(seq_len))?;
            launch(name, x, None, position_offset, [seq_len, dim], theta, style)
        }
    }
}

/// RoPE with explicit positions: token `l` is rotated as if at position `positions[l]`, with the
/// angles `rope` uses (f32 `position * inv_freq`), so `positions = offset..offset + L` gives exactly
/// `rope(x, offset, ..)`. `x` is `[L, H, D]` or `[B, L, H, D]` (every batch entry shares the
/// positions); `positions` is U32 `[L]` on x's device.
pub fn rope_at(x: &Tensor, positions: &Tensor, theta: f32, style: RopeStyle) -> Result<Tensor> {
    let name = "rope_at";
    common::same_device(name, &[("x", x), ("positions", positions)])?;
    if x.rank() != 3 && x.rank() != 4 {
        return Err(Error::shape(
            name,
            format!(
                "`x` must be [L, H, D] or [B, L, H, D], got shape {:?}",
                x.shape()
            ),
        ));
    }
    let [seq_len, dim] = check(name, x, theta)?;
    if positions.dtype() != DType::U32 {
        return Err(Error::dtype(
            name,
            format!("{} for `positions` (u32 expected)", positions.dtype()),
        ));
    }
    if positions.shape() != [seq_len] {
        return Err(Error::shape(
            name,
            format!(
                "`positions` {:?} must be [L] = [{seq_len}] for `x` {:?}",
                positions.shape(),
                x.shape()
            ),
        ));
    }
    match x.device() {
        Device::Cpu => match positions.cpu_data() {
            Some(CpuData::U32(p)) => cpu::rope_at(x, p, theta, style),
            _ => Err(Error::dtype(name, "`positions` is not CPU u32")),
        },
        Device::Gpu(_) => launch(name, x, Some(positions), 0, [seq_len, dim], theta, style),
    }
}

/// Checks shared by both ops (rank aside); returns `[L, D]` of the trailing `[L, H, D]`.
fn check(name: &str, x: &Tensor, theta: f32) -> Result<[usize; 2]> {
    common::same_float_dtype(name, &[("x", x)])?;
    common::non_empty(name, &[("x", x)])?;
    let [seq_len, _, dim] = x.shape()[x.rank() - 3..].try_into().expect("rank checked");
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
    Ok([seq_len, dim])
}

/// One GPU dispatch: positions from `positions` when bound, else `offset + l`.
fn launch(
    name: &str,
    x: &Tensor,
    positions: Option<&Tensor>,
    offset: usize,
    [seq_len, dim]: [usize; 2],
    theta: f32,
    style: RopeStyle,
) -> Result<Tensor> {
    let ctx = common::gpu(x.device()).expect("called for GPU tensors");
    let heads = x.dim(-2);
    let out = Tensor::empty(x.device(), x.shape(), x.dtype(), name)?;
    let n = x.numel() / 2;
    let freq_step = (-2.0 * (theta as f64).log2() / dim as f64) as f32;
    let params = Params::new()
        .dim(name, n)?
        .dim(name, seq_len)?
        .dim(name, heads)?
        .dim(name, dim / 2)?
        .dim(name, offset)?
        .u32(u32::from(style == RopeStyle::Interleaved))
        .f32(freq_step)
        .align16();
    let mut buffers = vec![BufferArg::new(1, "x", x), BufferArg::new(2, "out", &out)];
    buffers.extend(positions.map(|p| BufferArg::new(3, "positions", p)));
    ctx.dispatch(Dispatch {
        op: name,
        kernel: &SOURCE,
        entry: if positions.is_some() {
            "rope_at"
        } else {
            "rope_pairs"
        },
        variant: Variant::new(x.dtype()),
        params: params.bytes(),
        buffers: &buffers,
        workgroups: ctx.grid(name, common::groups_for(n, WORKGROUP))?,
    })?;
    Ok(out)
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    [DType::F32, DType::F16]
        .into_iter()
        .flat_map(|dtype| ["rope_pairs", "rope_at"].map(|e| (&SOURCE, e, Variant::new(dtype))))
        .collect()
}
