//! Normalisation: GroupNorm (with an optional fused SiLU, as diffusion UNets and VAEs follow it with
//! one), LayerNorm and RMSNorm (also fused with a decoder's residual add). All normalise contiguous
//! rows, so they share one description (`Rows`) and one kernel file; LayerNorm is GroupNorm with one
//! group per row.

mod cpu;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch, GpuContext};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "norm.wgsl",
    source: include_str!("norm.wgsl"),
};

const WORKGROUP: usize = 256;
/// Elements per workgroup on the split path.
const CHUNK: usize = 4096;
/// Rows at least this long take the split path, so a few big GroupNorm groups (SD: 10 channels x 4096
/// pixels, two samples -> 64 rows) are spread over many workgroups instead of one each.
const SPLIT_WIDTH: usize = 4 * CHUNK;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stats {
    /// Subtract the mean, divide by the standard deviation.
    MeanVar,
    /// Divide by the root mean square.
    Rms,
}

/// One normalisation over contiguous rows of `x`: row `r`, element `i` uses channel
/// `(r % groups) * cpg + i / spatial` of the weight and bias.
struct Rows<'a> {
    op: &'static str,
    x: &'a Tensor,
    weight: Option<&'a Tensor>,
    bias: Option<&'a Tensor>,
    eps: f32,
    silu: bool,
    stats: Stats,
    rows: usize,
    width: usize,
    spatial: usize,
    groups: usize,
    cpg: usize,
}

/// `torch.nn.GroupNorm` (then `F.silu` when `silu`): `x` is `[N, C, *spatial]`; each (sample, group of
/// `C / groups` channels) is normalised over its channels and positions, then scaled and shifted per
/// channel by `weight` and `bias` (`[C]`).
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
    silu: bool,
) -> Result<Tensor> {
    run(&group_rows(x, groups, weight, bias, eps, silu)?)
}

/// Checks GroupNorm's inputs and describes its rows.
fn group_rows<'a>(
    x: &'a Tensor,
    groups: usize,
    weight: Option<&'a Tensor>,
    bias: Option<&'a Tensor>,
    eps: f32,
    silu: bool,
) -> Result<Rows<'a>> {
    let op = "group_norm";
    if x.rank() < 2 {
        return Err(Error::shape(
            op,
            format!(
                "`x` must be [N, C, *spatial] (rank 2 or more), got shape {:?}",
                x.shape()
            ),
        ));
    }
    guard(op, x, weight, bias, x.dim(1))?;
    let (n, c) = (x.dim(0), x.dim(1));
    if groups == 0 || c % groups != 0 {
        return Err(Error::shape(
            op,
            format!(
                "{c} channels of `x` {:?} do not split into {groups} groups",
                x.shape()
            ),
        ));
    }
    let spatial = x.numel() / (n * c);
    let cpg = c / groups;
    Ok(Rows {
        op,
        x,
        weight,
        bias,
        eps,
        silu,
        stats: Stats::MeanVar,
        rows: n * groups,
        width: cpg * spatial,
        spatial,
        groups,
        cpg,
    })
}

/// `torch.nn.LayerNorm` over the last dimension, with optional elementwise `weight` and `bias`.
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<Tensor> {
    last_dim_norm("layer_norm", x, weight, bias, eps, Stats::MeanVar)
}

/// RMSNorm as Llama and Mistral use it: `x * rsqrt(mean(x^2) + eps) * weight` over the last dimension.
/// Everything is computed in f32 and rounded once (PyTorch rounds to f16 before the weight multiply,
/// so f16 results can differ from it by one ulp).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    last_dim_norm("rms_norm", x, Some(weight), None, eps, Stats::Rms)
}

/// The residual add of a decoder layer fused with the next RMSNorm: returns `(x + residual,
/// rms_norm(x + residual, weight, eps))`, exactly `add` then `rms_norm` (the sum is rounded to the
/// dtype before it is normalised, as the two-op form does), in one pass over the rows on the GPU.
pub fn add_rms_norm(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let op = "add_rms_norm";
    common::same_device(op, &[("x", x), ("residual", residual)])?;
    common::same_float_dtype(op, &[("x", x), ("residual", residual)])?;
    if x.shape() != residual.shape() {
        return Err(Error::shape(
            op,
            format!(
                "`x` {:?} and `residual` {:?} must have the same shape",
                x.shape(),
                residual.shape()
            ),
        ));
    }
    if x.rank() == 0 {
        return Err(Error::shape(
            op,
            "`x` is a scalar; it needs a last dimension",
        ));
    }
    let width = x.dim(-1);
    guard(op, x, Some(weight), None, width)?;
    let rows = Rows {
        op,
        x,
        weight: Some(weight),
        bias: None,
        eps,
        silu: false,
        stats: Stats::Rms,
        rows: x.numel() / width,
        width,
        spatial: 1,
        groups: 1,
        cpg: width,
    };
    match x.device() {
        Device::Cpu => {
            let sum = cpu::add(x, residual)?;
            let normed = cpu::norm(&Rows { x: &sum, ..rows })?;
            Ok((sum, normed))
        }
        Device::Gpu(ctx) => {
            if u32::try_from(x.numel()).is_err() {
                return Err(Error::limit(
                    op,
                    format!("`x` {:?} is too large for u32 indexing", x.shape()),
                ));
            }
            let params = Params::new()
                .dim(op, rows.rows)?
                .dim(op, width)?
                .dim(op, 1)?
                .dim(op, 1)?
                .dim(op, width)?
                .dim(op, width)?
                .dim(op, 1)?
                .f32(eps);
            let sum = Tensor::empty(x.device(), x.shape(), x.dtype(), op)?;
            let normed = Tensor::empty(x.device(), x.shape(), x.dtype(), op)?;
            dispatch(
                ctx,
                &rows,
                "add_rms_norm",
                variant(x.dtype(), true, false, false),
                &params,
                &[
                    BufferArg::new(1, "x", x),
                    BufferArg::new(2, "weight", weight),
                    BufferArg::new(4, "out", &normed),
                    BufferArg::new(7, "residual", residual),
                    BufferArg::new(8, "sum", &sum),
                ],
                rows.rows as u64,
            )?;
            Ok((sum, normed))
        }
    }
}

fn last_dim_norm(
    op: &'static str,
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
    stats: Stats,
) -> Result<Tensor> {
    if x.rank() == 0 {
        return Err(Error::shape(
            op,
            "`x` is a scalar; it needs a last dimension",
        ));
    }
    let width = x.dim(-1);
    guard(op, x, weight, bias, width)?;
    run(&Rows {
        op,
        x,
        weight,
        bias,
        eps,
        silu: false,
        stats,
        rows: x.numel() / width,
        width,
        spatial: 1,
        groups: 1,
        cpg: width,
    })
}

/// Device, dtype and size checks shared by the three ops; `channels` is the affine parameters' length.
fn guard(
    op: &str,
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    channels: usize,
) -> Result<()> {
    let mut all = vec![("x", x)];
    all.extend(weight.map(|w| ("weight", w)));
    all.extend(bias.map(|b| ("bias", b)));
    common::same_device(op, &all)?;
    common::same_float_dtype(op, &all)?;
    common::non_empty(op, &all)?;
    for (name, t) in &all[1..] {
        if t.shape() != [channels] {
            return Err(Error::shape(
                op,
                format!(
                    "`{name}` must have shape [{channels}] for `x` {:?}, got {:?}",
                    x.shape(),
                    t.shape()
                ),
            ));
        }
    }
    Ok(())
}

fn run(rows: &Rows) -> Result<Tensor> {
    match rows.x.device() {
        Device::Cpu => cpu::norm(rows),
        Device::Gpu(ctx) => {
            let split = rows.stats == Stats::MeanVar && rows.width >= SPLIT_WIDTH;
            launch(ctx, rows, split.then_some(CHUNK))
        }
    }
}

fn variant(dtype: DType, weight: bool, bias: bool, silu: bool) -> Variant {
    Variant::new(dtype)
        .define("WEIGHT", u32::from(weight))
        .define("BIAS", u32::from(bias))
        .define("SILU", u32::from(silu))
}

/// Runs on the GPU: one workgroup per row, or with `chunk` the three-step split path (mean and
/// variance only; RMSNorm always takes one workgroup per row).
fn launch(ctx: &GpuContext, rows: &Rows, chunk: Option<usize>) -> Result<Tensor> {
    let (op, x) = (rows.op, rows.x);
    let dtype = x.dtype();
    let chunk = match (rows.stats, chunk) {
        (Stats::MeanVar, Some(c)) => c.max(1),
        _ => rows.width,
    };
    let chunks = rows.width.div_ceil(chunk);
    let params = Params::new()
        .dim(op, rows.rows)?
        .dim(op, rows.width)?
        .dim(op, rows.spatial)?
        .dim(op, rows.groups)?
        .dim(op, rows.cpg)?
        .dim(op, chunk)?
        .dim(op, chunks)?
        .f32(rows.eps);
    // The kernels index with u32, the split path's scratch at twice the (row, chunk) count.
    if u32::try_from(x.numel().max(2 * rows.rows * chunks)).is_err() {
        return Err(Error::limit(
            op,
            format!("`x` {:?} is too large for u32 indexing", x.shape()),
        ));
    }
    let out = Tensor::empty(x.device(), x.shape(), dtype, op)?;
    let mut buffers = vec![BufferArg::new(1, "x", x), BufferArg::new(4, "out", &out)];
    buffers.extend(rows.weight.map(|w| BufferArg::new(2, "weight", w)));
    buffers.extend(rows.bias.map(|b| BufferArg::new(3, "bias", b)));
    let epilogue = variant(dtype, rows.weight.is_some(), rows.bias.is_some(), rows.silu);
    if chunks == 1 {
        let entry = match rows.stats {
            Stats::MeanVar => "norm",
            Stats::Rms => "rms_norm",
        };
        return dispatch(
            ctx,
            rows,
            entry,
            epilogue,
            &params,
            &buffers,
            rows.rows as u64,
        )
        .map(|()| out);
    }
    let partials = Tensor::empty(x.device(), &[2 * rows.rows * chunks], DType::F32, op)?;
    let stats = Tensor::empty(x.device(), &[2 * rows.rows], DType::F32, op)?;
    let groups = (rows.rows * chunks) as u64;
    dispatch(
        ctx,
        rows,
        "norm_stats",
        Variant::new(dtype),
        &params,
        &[
            BufferArg::new(1, "x", x),
            BufferArg::new(5, "partials", &partials),
        ],
        groups,
    )?;
    dispatch(
        ctx,
        rows,
        "norm_finish",
        Variant::new(dtype),
        &params,
        &[
            BufferArg::new(5, "partials", &partials),
            BufferArg::new(6, "stats", &stats),
        ],
        common::groups_for(rows.rows, WORKGROUP),
    )?;
    buffers.push(BufferArg::new(6, "stats", &stats));
    dispatch(
        ctx,
        rows,
        "norm_apply",
        epilogue,
        &params,
        &buffers,
        common::groups_for(x.numel(), WORKGROUP),
    )?;
    Ok(out)
}

fn dispatch(
    ctx: &GpuContext,
    rows: &Rows,
    entry: &'static str,
    variant: Variant,
    params: &Params,
    buffers: &[BufferArg],
    groups: u64,
) -> Result<()> {
    ctx.dispatch(Dispatch {
        op: rows.op,
        kernel: &SOURCE,
        entry,
        variant,
        params: params.bytes(),
        buffers,
        workgroups: ctx.grid(rows.op, groups)?,
    })
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for bits in 0..8u32 {
            let epilogue = variant(dtype, bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            v.push((&SOURCE, "norm", epilogue.clone()));
            v.push((&SOURCE, "norm_apply", epilogue));
        }
        v.push((&SOURCE, "rms_norm", variant(dtype, true, false, false)));
        v.push((&SOURCE, "add_rms_norm", variant(dtype, true, false, false)));
        v.push((&SOURCE, "norm_stats", Variant::new(dtype)));
        v.push((&SOURCE, "norm_finish", Variant::new(dtype)));
    }
    v
}
