//! Matrix multiplication: batched GEMM with an optional transposed (PyTorch `Linear`) right operand and
//! a fused bias, plus `linear` on top of it.

mod cpu;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch, GpuContext};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "matmul.wgsl",
    source: include_str!("matmul.wgsl"),
};

/// Output tile of one GEMM workgroup (square), as in matmul.wgsl.
const TILE: usize = 64;
/// Output columns of one GEMV workgroup (transposed b, plain b), as in matmul.wgsl.
const GEMV_COLS: (usize, usize) = (8, 32);

#[derive(Clone, Copy, Debug, Default)]
pub struct MatmulOptions<'a> {
    /// `b` is `[..batch, N, K]` (a PyTorch `Linear` weight) rather than `[..batch, K, N]`.
    pub transpose_b: bool,
    /// `[N]`, added to every output row.
    pub bias: Option<&'a Tensor>,
}

/// The problem after shape checks. When `b` is shared across the batch, the batch is folded into the
/// rows of `a` (one bigger GEMM fills tiles better than many small ones), so `batch` is then 1.
#[derive(Clone, Debug, PartialEq)]
struct Plan {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    /// Elements between consecutive batch matrices of `b`: 0 when shared (and then `batch` is 1).
    b_batch_stride: usize,
    out_shape: Vec<usize>,
}

fn plan(a: &Tensor, b: &Tensor, opts: &MatmulOptions) -> Result<Plan> {
    let name = "matmul";
    let (sa, sb) = (a.shape(), b.shape());
    if a.rank() < 2 || b.rank() < 2 {
        return Err(Error::shape(
            name,
            format!("`a` {sa:?} and `b` {sb:?} must both have rank >= 2"),
        ));
    }
    let (m, k) = (a.dim(-2), a.dim(-1));
    let (kb, n) = if opts.transpose_b {
        (b.dim(-1), b.dim(-2))
    } else {
        (b.dim(-2), b.dim(-1))
    };
    if k != kb {
        let layout = if opts.transpose_b {
            "[..batch, N, K] (transpose_b)"
        } else {
            "[..batch, K, N]"
        };
        return Err(Error::shape(
            name,
            format!("inner dimensions differ: `a` {sa:?} has K={k} but `b` {sb:?} as {layout} has K={kb}"),
        ));
    }
    let a_batch = &sa[..sa.len() - 2];
    let b_batch = &sb[..sb.len() - 2];
    let shared = b_batch.iter().all(|&d| d == 1) && b_batch.len() <= a_batch.len();
    if !shared && a_batch != b_batch {
        return Err(Error::shape(
            name,
            format!(
                "batch dimensions of `a` {sa:?} and `b` {sb:?} differ (`b` may also have none, or all 1)"
            ),
        ));
    }
    if let Some(bias) = opts.bias {
        if bias.shape() != [n] {
            return Err(Error::shape(
                name,
                format!(
                    "`bias` {:?} must be [{n}] for `a` {sa:?} and `b` {sb:?}",
                    bias.shape()
                ),
            ));
        }
    }
    let batch: usize = a_batch.iter().product();
    let mut out_shape = a_batch.to_vec();
    out_shape.extend([m, n]);
    Ok(if shared {
        Plan {
            batch: 1,
            m: batch * m,
            n,
            k,
            b_batch_stride: 0,
            out_shape,
        }
    } else {
        Plan {
            batch,
            m,
            n,
            k,
            b_batch_stride: k * n,
            out_shape,
        }
    })
}

/// `a @ b` (or `a @ b^T` with `transpose_b`) over the batch dimensions, plus an optional bias.
pub fn matmul(a: &Tensor, b: &Tensor, opts: MatmulOptions) -> Result<Tensor> {
    let name = "matmul";
    let mut named = vec![("a", a), ("b", b)];
    if let Some(bias) = opts.bias {
        named.push(("bias", bias));
    }
    common::same_device(name, &named)?;
    let dtype = common::same_float_dtype(name, &named)?;
    common::non_empty(name, &named)?;
    let plan = plan(a, b, &opts)?;
    match a.device() {
        Device::Cpu => cpu::matmul(a, b, &opts, &plan),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(a.device(), &plan.out_shape, dtype, name)?;
            if plan.m == 1 {
                gemv(ctx, a, b, &opts, &plan, &out)?;
            } else {
                gemm(ctx, a, b, &opts, &plan, &out)?;
            }
            Ok(out)
        }
    }
}

/// PyTorch's `Linear`: `x @ weight^T + bias` with `x` `[..., K]` and `weight` `[N, K]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if weight.rank() != 2 || x.rank() == 0 {
        return Err(Error::shape(
            "linear",
            format!(
                "`x` {:?} must be [..., K] and `weight` {:?} must be [N, K]",
                x.shape(),
                weight.shape()
            ),
        ));
    }
    let opts = MatmulOptions {
        transpose_b: true,
        bias,
    };
    if x.rank() == 1 {
        let y = matmul(&x.reshape(&[1, x.dim(0)])?, weight, opts)?;
        return y.reshape(&[weight.dim(0)]);
    }
    matmul(x, weight, opts)
}

fn params(plan: &Plan, tiles_m: usize, tiles_n: usize) -> Result<Params> {
    let name = "matmul";
    Params::new()
        .dim(name, plan.m)?
        .dim(name, plan.n)?
        .dim(name, plan.k)?
        .dim(name, plan.batch)?
        .dim(name, tiles_m)?
        .dim(name, tiles_n)?
        .dim(name, plan.m * plan.k)?
        .dim(name, plan.b_batch_stride)
}

fn variant(dtype: DType, transpose_b: bool, bias: bool, vec_a: bool, vec_b: bool) -> Variant {
    Variant::new(dtype)
        .define("TRANS_B", u32::from(transpose_b))
        .define("BIAS", u32::from(bias))
        .define("VEC_A", u32::from(vec_a))
        .define("VEC_B", u32::from(vec_b))
}

fn buffers<'t>(
    a: &'t Tensor,
    b: &'t Tensor,
    opts: &MatmulOptions<'t>,
    out: &'t Tensor,
) -> Vec<BufferArg<'t>> {
    let mut v = vec![BufferArg::new(1, "a", a), BufferArg::new(2, "b", b)];
    if let Some(bias) = opts.bias {
        v.push(BufferArg::new(3, "bias", bias));
    }
    v.push(BufferArg::new(4, "out", out));
    v
}

/// Vector loads need every vec4 to start at a multiple of 4 elements: the operand's contiguous
/// dimension must be a multiple of 4 (batch strides then are too).
fn vec_flags(plan: &Plan, transpose_b: bool) -> (bool, bool) {
    let b_contiguous = if transpose_b { plan.k } else { plan.n };
    (plan.k.is_multiple_of(4), b_contiguous.is_multiple_of(4))
}

fn gemm(
    ctx: &GpuContext,
    a: &Tensor,
    b: &Tensor,
    opts: &MatmulOptions,
    plan: &Plan,
    out: &Tensor,
) -> Result<()> {
    let name = "matmul";
    let (tiles_m, tiles_n) = (plan.m.div_ceil(TILE), plan.n.div_ceil(TILE));
    let groups = (plan.batch * tiles_m * tiles_n) as u64;
    let (vec_a, vec_b) = vec_flags(plan, opts.transpose_b);
    let params = params(plan, tiles_m, tiles_n)?;
    ctx.dispatch(Dispatch {
        op: name,
        kernel: &SOURCE,
        entry: "gemm",
        variant: variant(
            a.dtype(),
            opts.transpose_b,
            opts.bias.is_some(),
            vec_a,
            vec_b,
        ),
        params: params.bytes(),
        buffers: &buffers(a, b, opts, out),
        workgroups: ctx.grid(name, groups)?,
    })
}

/// One row of `a` per batch (LLM decode): a 64x64 tile would leave 63 of its rows idle, so each
/// workgroup instead reduces a few full columns of `b`.
fn gemv(
    ctx: &GpuContext,
    a: &Tensor,
    b: &Tensor,
    opts: &MatmulOptions,
    plan: &Plan,
    out: &Tensor,
) -> Result<()> {
    let name = "matmul";
    let cols = if opts.transpose_b {
        GEMV_COLS.0
    } else {
        GEMV_COLS.1
    };
    let tiles_n = plan.n.div_ceil(cols);
    let groups = (plan.batch * tiles_n) as u64;
    let (vec_a, vec_b) = vec_flags(plan, opts.transpose_b);
    let params = params(plan, 1, tiles_n)?;
    ctx.dispatch(Dispatch {
        op: name,
        kernel: &SOURCE,
        entry: "gemv",
        variant: variant(
            a.dtype(),
            opts.transpose_b,
            opts.bias.is_some(),
            vec_a,
            vec_b,
        ),
        params: params.bytes(),
        buffers: &buffers(a, b, opts, out),
        workgroups: ctx.grid(name, groups)?,
    })
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for bits in 0..16u32 {
            let flag = |i: u32| bits & (1 << i) != 0;
            let variant = variant(dtype, flag(0), flag(1), flag(2), flag(3));
            v.push((&SOURCE, "gemm", variant.clone()));
            v.push((&SOURCE, "gemv", variant));
        }
    }
    v
}
