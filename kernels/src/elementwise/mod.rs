//! Elementwise ops: activations, broadcasting arithmetic, GEGLU, SwiGLU and dtype casts.

mod cpu;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "elementwise.wgsl",
    source: include_str!("elementwise.wgsl"),
};
pub static CAST_SOURCE: KernelSource = KernelSource {
    file: "cast.wgsl",
    source: include_str!("cast.wgsl"),
};

/// Broadcasting supports up to this many dimensions.
pub const MAX_RANK: usize = 8;
const WORKGROUP: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `mul * x + add`
    Scale {
        mul: f32,
        add: f32,
    },
    Silu,
    /// GELU with the exact erf (PyTorch's default).
    GeluErf,
    /// GELU with the tanh approximation.
    GeluTanh,
    /// `x * sigmoid(1.702 x)`, as OpenAI's CLIP uses.
    QuickGelu,
    /// `x` where `x >= 0`, else `slope * x` (ESRGAN's `LeakyReLU(0.2)`; slope 0 is ReLU).
    LeakyRelu {
        slope: f32,
    },
}

impl Unary {
    fn code(self) -> (u32, f32, f32) {
        match self {
            Unary::Scale { mul, add } => (0, mul, add),
            Unary::Silu => (1, 1.0, 0.0),
            Unary::GeluErf => (2, 1.0, 0.0),
            Unary::GeluTanh => (3, 1.0, 0.0),
            Unary::QuickGelu => (4, 1.0, 0.0),
            Unary::LeakyRelu { slope } => (5, slope, 0.0),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

pub fn unary(x: &Tensor, op: Unary) -> Result<Tensor> {
    let name = "unary";
    let dtype = common::same_float_dtype(name, &[("x", x)])?;
    common::non_empty(name, &[("x", x)])?;
    match x.device() {
        Device::Cpu => cpu::unary(x, op),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(x.device(), x.shape(), dtype, name)?;
            let (code, alpha, beta) = op.code();
            let params = Params::new()
                .dim(name, x.numel())?
                .u32(code)
                .f32(alpha)
                .f32(beta)
                .align16();
            ctx.dispatch(Dispatch {
                op: name,
                kernel: &SOURCE,
                entry: "unary",
                variant: Variant::new(dtype),
                params: params.bytes(),
                buffers: &[BufferArg::new(1, "x", x), BufferArg::new(3, "out", &out)],
                workgroups: ctx.grid(name, common::groups_for(x.numel(), WORKGROUP))?,
            })?;
            Ok(out)
        }
    }
}

pub fn silu(x: &Tensor) -> Result<Tensor> {
    unary(x, Unary::Silu)
}

pub fn gelu(x: &Tensor) -> Result<Tensor> {
    unary(x, Unary::GeluErf)
}

pub fn leaky_relu(x: &Tensor, slope: f32) -> Result<Tensor> {
    unary(x, Unary::LeakyRelu { slope })
}

pub fn scale(x: &Tensor, mul: f32) -> Result<Tensor> {
    unary(x, Unary::Scale { mul, add: 0.0 })
}

/// The shape two operands broadcast to, with each operand's element strides (0 where broadcast).
pub fn broadcast(
    op: &str,
    a: &[usize],
    b: &[usize],
) -> Result<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    let rank = a.len().max(b.len());
    if rank > MAX_RANK {
        return Err(Error::shape(
            op,
            format!("rank {rank} over {MAX_RANK}: {a:?} and {b:?}"),
        ));
    }
    let pad = |s: &[usize]| {
        let mut v = vec![1; rank - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (pa, pb) = (pad(a), pad(b));
    let mut out = Vec::with_capacity(rank);
    for (&x, &y) in pa.iter().zip(&pb) {
        if x != y && x != 1 && y != 1 {
            return Err(Error::shape(
                op,
                format!("shapes {a:?} and {b:?} do not broadcast"),
            ));
        }
        out.push(if x == 1 { y } else { x });
    }
    let strides = |s: &[usize]| {
        let mut st = vec![0; rank];
        let mut acc = 1;
        for d in (0..rank).rev() {
            st[d] = if s[d] == 1 && out[d] != 1 { 0 } else { acc };
            acc *= s[d];
        }
        st
    };
    let (sa, sb) = (strides(&pa), strides(&pb));
    Ok((out, sa, sb))
}

pub fn binary(a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    let name = match op {
        Binary::Add => "add",
        Binary::Sub => "sub",
        Binary::Mul => "mul",
        Binary::Div => "div",
    };
    common::same_device(name, &[("a", a), ("b", b)])?;
    let dtype = common::same_float_dtype(name, &[("a", a), ("b", b)])?;
    common::non_empty(name, &[("a", a), ("b", b)])?;
    let (shape, sa, sb) = broadcast(name, a.shape(), b.shape())?;
    match a.device() {
        Device::Cpu => cpu::binary(a, b, op, &shape, &sa, &sb),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(a.device(), &shape, dtype, name)?;
            let n = out.numel();
            let mut params = Params::new()
                .dim(name, n)?
                .u32(op as u32)
                .f32(0.0)
                .f32(0.0)
                .u32(shape.len() as u32)
                .u32(0)
                .u32(0)
                .u32(0);
            for list in [&shape, &sa, &sb] {
                for d in 0..MAX_RANK {
                    params = params.dim(name, list.get(d).copied().unwrap_or(1))?;
                }
            }
            ctx.dispatch(Dispatch {
                op: name,
                kernel: &SOURCE,
                entry: "binary",
                variant: Variant::new(dtype),
                params: params.bytes(),
                buffers: &[
                    BufferArg::new(1, "a", a),
                    BufferArg::new(2, "b", b),
                    BufferArg::new(3, "out", &out),
                ],
                workgroups: ctx.grid(name, common::groups_for(n, WORKGROUP))?,
            })?;
            Ok(out)
        }
    }
}

pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::Add)
}

pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::Sub)
}

pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::Mul)
}

pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::Div)
}

/// GEGLU: splits the last dimension into halves `[x, gate]` and returns `x * gelu(gate)`.
pub fn geglu(x: &Tensor) -> Result<Tensor> {
    let name = "geglu";
    let dtype = common::same_float_dtype(name, &[("x", x)])?;
    common::non_empty(name, &[("x", x)])?;
    let width = x.dim(-1);
    if !width.is_multiple_of(2) {
        return Err(Error::shape(
            name,
            format!("last dimension of {:?} must be even", x.shape()),
        ));
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("non-empty shape") = width / 2;
    match x.device() {
        Device::Cpu => cpu::geglu(x, &shape),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(x.device(), &shape, dtype, name)?;
            let params = Params::new()
                .dim(name, out.numel())?
                .u32(0)
                .f32(0.0)
                .f32(0.0)
                .u32(0)
                .dim(name, width / 2)?
                .align16();
            ctx.dispatch(Dispatch {
                op: name,
                kernel: &SOURCE,
                entry: "geglu",
                variant: Variant::new(dtype),
                params: params.bytes(),
                buffers: &[BufferArg::new(1, "x", x), BufferArg::new(3, "out", &out)],
                workgroups: ctx.grid(name, common::groups_for(out.numel(), WORKGROUP))?,
            })?;
            Ok(out)
        }
    }
}

/// SwiGLU, the gated MLP activation of Llama and Mistral: `silu(gate) * up` in one pass. `gate` and
/// `up` must have the same shape, dtype and device.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let name = "swiglu";
    common::same_device(name, &[("gate", gate), ("up", up)])?;
    let dtype = common::same_float_dtype(name, &[("gate", gate), ("up", up)])?;
    common::non_empty(name, &[("gate", gate), ("up", up)])?;
    if gate.shape() != up.shape() {
        return Err(Error::shape(
            name,
            format!(
                "`gate` {:?} and `up` {:?} must have the same shape",
                gate.shape(),
                up.shape()
            ),
        ));
    }
    match gate.device() {
        Device::Cpu => cpu::swiglu(gate, up),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(gate.device(), gate.shape(), dtype, name)?;
            let params = Params::new().dim(name, out.numel())?.align16();
            ctx.dispatch(Dispatch {
                op: name,
                kernel: &SOURCE,
                entry: "swiglu",
                variant: Variant::new(dtype),
                params: params.bytes(),
                buffers: &[
                    BufferArg::new(1, "gate", gate),
                    BufferArg::new(2, "up", up),
                    BufferArg::new(3, "out", &out),
                ],
                workgroups: ctx.grid(name, common::groups_for(out.numel(), WORKGROUP))?,
            })?;
            Ok(out)
        }
    }
}

/// Converts between f32 and f16.
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    let name = "cast";
    let from = common::same_float_dtype(name, &[("x", x)])?;
    if !dtype.is_float() {
        return Err(Error::dtype(name, format!("{from} to {dtype}")));
    }
    if from == dtype {
        return Ok(x.clone());
    }
    match x.device() {
        Device::Cpu => common::cpu_output(x.shape(), dtype, common::cpu_f32(x)?.into_owned()),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(x.device(), x.shape(), dtype, name)?;
            let params = Params::new().dim(name, x.numel())?.align16();
            ctx.dispatch(Dispatch {
                op: name,
                kernel: &CAST_SOURCE,
                entry: "convert",
                variant: Variant::new(DType::F16).define("TO_F16", u32::from(dtype == DType::F16)),
                params: params.bytes(),
                buffers: &[BufferArg::new(1, "x", x), BufferArg::new(2, "out", &out)],
                workgroups: ctx.grid(name, common::groups_for(x.numel(), WORKGROUP))?,
            })?;
            Ok(out)
        }
    }
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for entry in ["unary", "binary", "geglu", "swiglu"] {
            v.push((&SOURCE, entry, Variant::new(dtype)));
        }
        v.push((
            &CAST_SOURCE,
            "convert",
            Variant::new(DType::F16).define("TO_F16", u32::from(dtype == DType::F16)),
        ));
    }
    v
}
