//! 2-D convolution (as `torch.nn.functional.conv2d` with groups 1 and dilation 1): an implicit-GEMM
//! WGSL kernel and a CPU backend built on im2col + `gemm`. The weight is float, or packed quantised
//! blocks (`qconv2d_padded`) that both backends unpack a tile or a few rows at a time.

mod cpu;
#[cfg(test)]
mod packed_tests;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, QTensor, QuantFormat, Result, Tensor};

use crate::common::{self, Params};

pub static SOURCE: KernelSource = KernelSource {
    file: "conv2d.wgsl",
    source: include_str!("conv2d.wgsl"),
};

/// The same kernel reading packed weights through the quantised block readers.
pub static PACKED_SOURCE: KernelSource = KernelSource {
    file: "qconv2d.wgsl",
    source: concat!(
        crate::quant::block_readers_wgsl!(),
        include_str!("conv2d.wgsl")
    ),
};

/// Output tile of one workgroup (output channels x folded output pixels), as in conv2d.wgsl.
const TILE_M: usize = 64;
const TILE_N: usize = 64;

/// Stride and zero padding, the same along height and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    pub stride: usize,
    pub padding: usize,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions {
            stride: 1,
            padding: 0,
        }
    }
}

/// Zero padding per side, for convolutions padded unevenly: diffusers' VAE encoder downsampler pads
/// only the bottom and right (`F.pad(x, (0, 1, 0, 1))`) before a stride-2 3x3 convolution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Padding2d {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding2d {
    /// The same padding on both sides of each axis.
    pub fn symmetric(height: usize, width: usize) -> Padding2d {
        Padding2d {
            top: height,
            bottom: height,
            left: width,
            right: width,
        }
    }
}

/// Every size of one convolution, resolved and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    /// Top and left padding: where the window starts. The bottom and right padding only shows in
    /// `ho` and `wo`, because every read past the input is a zero anyway.
    pub pad: [usize; 2],
    pub ho: usize,
    pub wo: usize,
}

impl Geometry {
    /// GEMM depth: one weight row.
    pub fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }
    pub fn pixels(&self) -> usize {
        self.ho * self.wo
    }
}

/// `x` [N, Cin, H, W] convolved with `weight` [Cout, Cin, KH, KW], plus `bias` [Cout] if given:
/// [N, Cout, Ho, Wo] with Ho = (H + 2 padding - KH) / stride + 1 (likewise Wo).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: Conv2dOptions,
) -> Result<Tensor> {
    conv2d_hw(x, weight, bias, [opts.stride; 2], [opts.padding; 2])
}

/// As `conv2d`, with separate (height, width) stride and padding.
pub fn conv2d_hw(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Result<Tensor> {
    let pad = Padding2d::symmetric(padding[0], padding[1]);
    conv2d_padded(x, weight, bias, stride, pad)
}

/// As `conv2d_hw`, with the zero padding of each side given separately (as `F.pad` then an unpadded
/// convolution): Ho = (H + top + bottom - KH) / stride + 1 (likewise Wo).
pub fn conv2d_padded(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: [usize; 2],
    padding: Padding2d,
) -> Result<Tensor> {
    common::rank("conv2d", "weight", weight, 4)?;
    run("conv2d", x, Weight::Float(weight), bias, stride, padding)
}

/// `conv2d_padded` with a packed weight: `weight` is `[Cout, Cin * KH * KW]` blocks (the PyTorch
/// `[Cout, Cin, KH, KW]` weight flattened per output channel), `kernel` is `[KH, KW]`. Accumulates
/// in f32; the output has `x`'s dtype.
pub fn qconv2d_padded(
    x: &Tensor,
    weight: &QTensor,
    kernel: [usize; 2],
    bias: Option<&Tensor>,
    stride: [usize; 2],
    padding: Padding2d,
) -> Result<Tensor> {
    run(
        "qconv2d",
        x,
        Weight::Packed(weight, kernel),
        bias,
        stride,
        padding,
    )
}

/// A convolution's weight as the kernels read it.
#[derive(Clone, Copy)]
pub(crate) enum Weight<'a> {
    Float(&'a Tensor),
    Packed(&'a QTensor, [usize; 2]),
}

impl Weight<'_> {
    fn storage(&self) -> &Tensor {
        match self {
            Weight::Float(t) => t,
            Weight::Packed(q, _) => q.words(),
        }
    }

    /// `[Cout, Cin, KH, KW]`; a packed weight's Cin is K / (KH KW).
    fn shape(&self, op: &str) -> Result<[usize; 4]> {
        match self {
            Weight::Float(t) => Ok([t.dim(0), t.dim(1), t.dim(2), t.dim(3)]),
            Weight::Packed(q, [kh, kw]) => {
                let (cout, k) = (q.shape()[0], q.shape()[1]);
                if *kh == 0 || *kw == 0 || !k.is_multiple_of(kh * kw) {
                    return Err(Error::shape(
                        op,
                        format!(
                            "packed weight {:?} is not [Cout, Cin * {kh} * {kw}]",
                            q.shape()
                        ),
                    ));
                }
                Ok([cout, k / (kh * kw), *kh, *kw])
            }
        }
    }

    fn format(&self) -> Option<QuantFormat> {
        match self {
            Weight::Float(_) => None,
            Weight::Packed(q, _) => Some(q.format()),
        }
    }
}

fn run(
    name: &str,
    x: &Tensor,
    weight: Weight,
    bias: Option<&Tensor>,
    stride: [usize; 2],
    padding: Padding2d,
) -> Result<Tensor> {
    // A packed weight's storage is u32 words: only the float tensors must share a dtype.
    let mut floats = vec![("x", x)];
    if let Weight::Float(w) = weight {
        floats.push(("weight", w));
    }
    floats.extend(bias.map(|b| ("bias", b)));
    let mut tensors = floats.clone();
    if let Weight::Packed(q, _) = weight {
        tensors.push(("weight", q.words()));
    }
    common::same_device(name, &tensors)?;
    let dtype = common::same_float_dtype(name, &floats)?;
    common::rank(name, "x", x, 4)?;
    common::non_empty(name, &tensors)?;
    let wshape = weight.shape(name)?;
    let g = geometry_padded(name, x.shape(), &wshape, stride, padding)?;
    if let Some(b) = bias {
        if b.shape() != [g.cout] {
            return Err(Error::shape(
                name,
                format!(
                    "`bias` shape {:?} does not match weight {wshape:?} ({} output channels)",
                    b.shape(),
                    g.cout
                ),
            ));
        }
    }
    match x.device() {
        Device::Cpu => cpu::conv2d(x, weight, bias, &g),
        Device::Gpu(ctx) => {
            let shape = [g.n, g.cout, g.ho, g.wo];
            let out = Tensor::empty(x.device(), &shape, dtype, name)?;
            // The kernel indexes every buffer with u32.
            let dim = |what: &str, v: usize| {
                u32::try_from(v).map_err(|_| {
                    Error::limit(
                        name,
                        format!(
                            "{what} {v} exceeds u32 (x {:?}, weight {wshape:?})",
                            x.shape()
                        ),
                    )
                })
            };
            dim("input elements", x.numel())?;
            dim("output elements", out.numel())?;
            dim("weight elements", g.cout * g.k())?;
            let cols = g.n * g.pixels();
            let tiles_m = g.cout.div_ceil(TILE_M);
            let params = Params::new()
                .dim(name, g.cin)?
                .dim(name, g.h)?
                .dim(name, g.w)?
                .dim(name, g.cout)?
                .dim(name, g.wo)?
                .dim(name, g.kh)?
                .dim(name, g.kw)?
                .dim(name, g.k())?
                .dim(name, g.stride[0])?
                .dim(name, g.stride[1])?
                .dim(name, g.pad[0])?
                .dim(name, g.pad[1])?
                .dim(name, g.pixels())?
                .dim(name, cols)?
                .dim(name, tiles_m)?
                .u32(0);
            let mut buffers = vec![
                BufferArg::new(1, "x", x),
                BufferArg::new(2, "weight", weight.storage()),
                BufferArg::new(4, "out", &out),
            ];
            if let Some(b) = bias {
                buffers.push(BufferArg::new(3, "bias", b));
            }
            let groups = (tiles_m * cols.div_ceil(TILE_N)) as u64;
            let (kernel, variant) = match weight.format() {
                None => (&SOURCE, variant(dtype, bias.is_some())),
                Some(f) => (&PACKED_SOURCE, packed_variant(dtype, f, bias.is_some())),
            };
            ctx.dispatch(Dispatch {
                op: name,
                kernel,
                entry: "conv2d",
                variant,
                params: params.bytes(),
                buffers: &buffers,
                workgroups: ctx.grid(name, groups)?,
            })?;
            Ok(out)
        }
    }
}

/// Resolves the output size of a symmetrically padded convolution.
#[cfg(test)]
pub(crate) fn geometry(
    op: &str,
    x: &[usize],
    weight: &[usize],
    stride: [usize; 2],
    pad: [usize; 2],
) -> Result<Geometry> {
    geometry_padded(op, x, weight, stride, Padding2d::symmetric(pad[0], pad[1]))
}

/// Resolves the output size, rejecting shapes torch would reject.
pub(crate) fn geometry_padded(
    op: &str,
    x: &[usize],
    weight: &[usize],
    stride: [usize; 2],
    pad: Padding2d,
) -> Result<Geometry> {
    let ctx = || format!("x {x:?}, weight {weight:?}, stride {stride:?}, padding {pad:?}");
    if stride.contains(&0) {
        return Err(Error::shape(op, format!("stride must be >= 1 ({})", ctx())));
    }
    let (n, cin, h, w) = (x[0], x[1], x[2], x[3]);
    let (cout, wcin, kh, kw) = (weight[0], weight[1], weight[2], weight[3]);
    if wcin != cin {
        return Err(Error::shape(
            op,
            format!(
                "`x` has {cin} input channels but `weight` expects {wcin} ({})",
                ctx()
            ),
        ));
    }
    let (hp, wp) = (h + pad.top + pad.bottom, w + pad.left + pad.right);
    if kh > hp || kw > wp {
        return Err(Error::shape(
            op,
            format!(
                "kernel {kh}x{kw} is larger than the padded input {hp}x{wp} ({})",
                ctx()
            ),
        ));
    }
    Ok(Geometry {
        n,
        cin,
        h,
        w,
        cout,
        kh,
        kw,
        stride,
        pad: [pad.top, pad.left],
        ho: (hp - kh) / stride[0] + 1,
        wo: (wp - kw) / stride[1] + 1,
    })
}

fn variant(dtype: DType, bias: bool) -> Variant {
    Variant::new(dtype).define("BIAS", u32::from(bias))
}

fn packed_variant(dtype: DType, format: QuantFormat, bias: bool) -> Variant {
    crate::quant::format_variant(dtype, format, bias).define("PACKED", 1)
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for bias in [false, true] {
            v.push((&SOURCE, "conv2d", variant(dtype, bias)));
            for format in QuantFormat::ALL {
                v.push((
                    &PACKED_SOURCE,
                    "conv2d",
                    packed_variant(dtype, format, bias),
                ));
            }
        }
    }
    v
}
