//! Rotary position embedding (RoPE) for attention queries and keys laid out `[B, L, H, D]`: angles
//! from positions (`rope`, `rope_at`) or from a caller's cos/sin table (`rope_table`).

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
    let [seq_len, dim] = check(name, x)?;
    check_theta(name, theta)?;
    match x.device() {
        Device::Cpu => cpu::rope(x, position_offset, theta, style),
        Device::Gpu(_) => {
            // The last position must fit in u32 as well as the first.
            Params::new().dim(name, position_offset.saturating_add(seq_len))?;
            launch(
                name,
                x,
                Table::Offset,
                position_offset,
                [seq_len, dim],
                theta,
                style,
            )
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
    rank_3_or_4(name, x)?;
    let [seq_len, dim] = check(name, x)?;
    check_theta(name, theta)?;
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
        Device::Gpu(_) => launch(
            name,
            x,
            Table::Positions(positions),
            0,
            [seq_len, dim],
            theta,
            style,
        ),
    }
}

/// RoPE with a caller's table: pair `i` of token `l` turns by the angle whose cosine and sine are
/// `cos[l, i]` and `sin[l, i]`, pairs chosen by `style`. `x` is `[L, H, D]` or `[B, L, H, D]` (f32 or
/// f16; every batch entry shares the table) with `D` even; `cos` and `sin` are F32 `[L, D/2]` on x's
/// device. The result has x's shape and dtype.
///
/// For angles that are not one position times one frequency per pair, e.g. Pixtral's 2-D RoPE, where a
/// patch's pairs take their frequencies alternately from its row and its column: the caller builds
/// the table on the host as the reference implementation does. A table of `cos/sin(p_l * inv_freq)`
/// gives exactly `rope_at` on the CPU.
pub fn rope_table(x: &Tensor, cos: &Tensor, sin: &Tensor, style: RopeStyle) -> Result<Tensor> {
    let name = "rope_table";
    common::same_device(name, &[("x", x), ("cos", cos), ("sin", sin)])?;
    rank_3_or_4(name, x)?;
    let [seq_len, dim] = check(name, x)?;
    for (table_name, table) in [("cos", cos), ("sin", sin)] {
        if table.dtype() != DType::F32 {
            return Err(Error::dtype(
                name,
                format!(
                    "{} for `{table_name}` {:?} (f32 expected)",
                    table.dtype(),
                    table.shape()
                ),
            ));
        }
        if table.shape() != [seq_len, dim / 2] {
            return Err(Error::shape(
                name,
                format!(
                    "`{table_name}` {:?} must be [L, D/2] = [{seq_len}, {}] for `x` {:?}",
                    table.shape(),
                    dim / 2,
                    x.shape()
                ),
            ));
        }
    }
    match x.device() {
        Device::Cpu => match (cos.cpu_data(), sin.cpu_data()) {
            (Some(CpuData::F32(c)), Some(CpuData::F32(s))) => cpu::rope_table(x, c, s, style),
            _ => Err(Error::dtype(name, "`cos` or `sin` is not CPU f32")),
        },
        // No offset or theta: the table holds the angles.
        Device::Gpu(_) => launch(
            name,
            x,
            Table::CosSin(cos, sin),
            0,
            [seq_len, dim],
            1.0,
            style,
        ),
    }
}

/// `x` must be `[L, H, D]` or `[B, L, H, D]`.
fn rank_3_or_4(name: &str, x: &Tensor) -> Result<()> {
    if x.rank() != 3 && x.rank() != 4 {
        return Err(Error::shape(
            name,
            format!(
                "`x` must be [L, H, D] or [B, L, H, D], got shape {:?}",
                x.shape()
            ),
        ));
    }
    Ok(())
}

/// Checks shared by all three ops (rank aside); returns `[L, D]` of the trailing `[L, H, D]`.
fn check(name: &str, x: &Tensor) -> Result<[usize; 2]> {
    common::same_float_dtype(name, &[("x", x)])?;
    common::non_empty(name, &[("x", x)])?;
    let [seq_len, _, dim] = x.shape()[x.rank() - 3..].try_into().expect("rank checked");
    if !dim.is_multiple_of(2) {
        return Err(Error::shape(
            name,
            format!("head dimension of `x` {:?} must be even", x.shape()),
        ));
    }
    Ok([seq_len, dim])
}

fn check_theta(name: &str, theta: f32) -> Result<()> {
    if !(theta.is_finite() && theta > 0.0) {
        return Err(Error::shape(
            name,
            format!("theta must be finite and positive, got {theta}"),
        ));
    }
    Ok(())
}

/// Where a GPU dispatch takes its angles from.
enum Table<'a> {
    /// Position `offset + l`, times the frequencies.
    Offset,
    /// Position `positions[l]`, times the frequencies.
    Positions(&'a Tensor),
    /// The caller's cosines and sines, `[L, D/2]` each.
    CosSin(&'a Tensor, &'a Tensor),
}

/// One GPU dispatch.
fn launch(
    name: &str,
    x: &Tensor,
    table: Table<'_>,
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
    let entry = match table {
        Table::Offset => "rope_pairs",
        Table::Positions(positions) => {
            buffers.push(BufferArg::new(3, "positions", positions));
            "rope_at"
        }
        Table::CosSin(cos, sin) => {
            buffers.push(BufferArg::new(4, "cos", cos));
            buffers.push(BufferArg::new(5, "sin", sin));
            "rope_table"
        }
    };
    ctx.dispatch(Dispatch {
        op: name,
        kernel: &SOURCE,
        entry,
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
        .flat_map(|dtype| {
            ["rope_pairs", "rope_at", "rope_table"].map(|e| (&SOURCE, e, Variant::new(dtype)))
        })
        .collect()
}
