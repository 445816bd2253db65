//! Quantised weights: ggml q8_0 / q4_0 and bitsandbytes nf4 blocks (`blocks.rs`), packing a float
//! weight into a `QTensor`, and the dequantising linear layer `qlinear`, which reads packed blocks
//! directly (no dequantised copy of the weight is ever made on the device) and accumulates in f32.
//!
//! GPU paths: `qgemv` for up to `GEMV_MAX_M` rows (decode-like: each weight read once, partial sums
//! reduced across the workgroup) and `qgemm`, a 64x64 tiled GEMM that unpacks a 64x32 weight tile into
//! workgroup memory per K step.

pub mod blocks;
pub(crate) mod cpu;
pub mod formats;
pub mod ggml_pack;
#[cfg(test)]
mod ggml_pack_tests;
#[cfg(test)]
mod ggml_tests;
pub mod int8;
#[cfg(test)]
mod int8_ggml_tests;
pub mod int8_kquants;
#[cfg(target_arch = "x86_64")]
mod int8_kquants_avx512;
pub mod int8_legacy;
pub mod int8_panel;
#[cfg(test)]
mod int8_tests;
#[cfg(test)]
mod tests;

use kiln_runtime::gpu::{BufferArg, Dispatch, GpuContext};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Error, QTensor, QuantFormat, Result, Tensor};

use crate::common::{self, Params};

/// The block readers' WGSL, to be `concat!`ed ahead of a kernel that reads packed weights:
/// blocks.wgsl (the shared helpers and q8_0 / q4_0 / nf4), then one file per ggml format.
macro_rules! block_readers_wgsl {
    () => {
        concat!(
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/quant/blocks.wgsl"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/quant/formats/q4_1.wgsl"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/quant/formats/q5_0.wgsl"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/quant/formats/q5_1.wgsl"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/quant/formats/q2_k.wgsl"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/quant/formats/q3_k.wgsl"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/quant/formats/q4_k.wgsl"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/quant/formats/q5_k.wgsl"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/quant/formats/q6_k.wgsl"
            )),
        )
    };
}
pub(crate) use block_readers_wgsl;

/// The block readers (shared with the packed-weight convolution) followed by the matmuls.
pub static SOURCE: KernelSource = KernelSource {
    file: "quant.wgsl",
    source: concat!(block_readers_wgsl!(), include_str!("quant.wgsl")),
};

/// Largest M the GEMV path takes (its per-thread accumulators), as in quant.wgsl.
pub const GEMV_MAX_M: usize = 8;
/// Output columns per GEMV workgroup, and the GEMM output tile, as in quant.wgsl.
const GEMV_COLS: usize = 8;
const TILE: usize = 64;

/// Packs f32 values of a `[N, K]` matrix into `format`'s blocks (K a multiple of the block size).
pub fn quantize(format: QuantFormat, shape: &[usize], values: &[f32]) -> Result<Vec<u8>> {
    if !format.packable() {
        return Err(Error::dtype(
            "quantize",
            format!(
                "kiln reads {format} weights from GGUF files but does not pack them (it packs {})",
                QuantFormat::PACKABLE.map(QuantFormat::name).join(", ")
            ),
        ));
    }
    let bytes = format.packed_bytes("quantize", shape)?;
    if values.len() != shape.iter().product::<usize>() {
        return Err(Error::shape(
            "quantize",
            format!("{} values for shape {shape:?}", values.len()),
        ));
    }
    let mut out = vec![0u8; bytes];
    for (x, b) in values
        .chunks(format.block_len())
        .zip(out.chunks_mut(format.block_bytes()))
    {
        blocks::pack_block(format, x, b);
    }
    Ok(out)
}

/// Unpacks whole blocks to f32 (for tests and inspection; the matmul never does this to a full weight).
pub fn dequantize(format: QuantFormat, bytes: &[u8]) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(format.block_bytes()) {
        return Err(Error::shape(
            "dequantize",
            format!(
                "{} bytes is not a whole number of {format} blocks of {} bytes",
                bytes.len(),
                format.block_bytes()
            ),
        ));
    }
    let mut out = vec![0.0f32; bytes.len() / format.block_bytes() * format.block_len()];
    blocks::unpack_blocks(format, bytes, &mut out);
    Ok(out)
}

/// Rows `ids` of a packed `[N, K]` weight in host memory, unpacked to f32 `[ids.len(), K]` on the
/// CPU: a GGUF file's token embeddings stay packed (4.5 bits a weight at q4_K, where f32 would
/// take 2.7 GB for Mistral Small's table) and only a prompt's rows are ever unpacked.
pub fn dequantize_rows(w: &QTensor, ids: &[u32]) -> Result<Tensor> {
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let format = w.format();
    let bytes = cpu::packed_bytes("dequantize_rows", w)?;
    let row_bytes = k / format.block_len() * format.block_bytes();
    let mut out = vec![0.0f32; ids.len() * k];
    for (&id, row) in ids.iter().zip(out.chunks_exact_mut(k)) {
        let id = id as usize;
        if id >= n {
            return Err(Error::shape(
                "dequantize_rows",
                format!("row {id} of a [{n}, {k}] {format} weight"),
            ));
        }
        blocks::unpack_blocks(format, &bytes[id * row_bytes..][..row_bytes], row);
    }
    Tensor::from_f32(&Device::Cpu, &[ids.len(), k], DType::F32, &out)
}

/// Quantises a float `[N, K]` tensor (on any device) into a packed weight on `device`.
pub fn quantize_tensor(t: &Tensor, format: QuantFormat, device: &Device) -> Result<QTensor> {
    let bytes = quantize(format, t.shape(), &t.to_vec_f32()?)?;
    QTensor::from_packed(device, format, t.shape(), &bytes)
}

/// PyTorch's `Linear` with a packed weight: `x [..., K] @ W^T + bias`, `W` `[N, K]`, output `[..., N]`
/// in `x`'s dtype.
pub fn qlinear(x: &Tensor, w: &QTensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let name = "qlinear";
    let (n, k) = (w.shape()[0], w.shape()[1]);
    if x.rank() == 0 || x.dim(-1) != k {
        return Err(Error::shape(
            name,
            format!(
                "`x` {:?} must be [..., {k}] for the {} weight [{n}, {k}]",
                x.shape(),
                w.format()
            ),
        ));
    }
    let mut named = vec![("x", x), ("weight", w.words())];
    if let Some(bias) = bias {
        named.push(("bias", bias));
        if bias.shape() != [n] {
            return Err(Error::shape(
                name,
                format!("`bias` {:?} must be [{n}]", bias.shape()),
            ));
        }
    }
    common::same_device(name, &named)?;
    let mut floats = vec![("x", x)];
    floats.extend(bias.map(|b| ("bias", b)));
    let dtype = common::same_float_dtype(name, &floats)?;
    common::non_empty(name, &floats)?;
    let m = x.numel() / k;
    let mut out_shape = x.shape().to_vec();
    *out_shape.last_mut().expect("rank checked") = n;
    match x.device() {
        Device::Cpu => cpu::qlinear(x, w, bias, m, &out_shape),
        Device::Gpu(ctx) => {
            let out = Tensor::empty(x.device(), &out_shape, dtype, name)?;
            let gemv = m <= GEMV_MAX_M;
            let (tiles_m, tiles_n) = if gemv {
                (1, n.div_ceil(GEMV_COLS))
            } else {
                (m.div_ceil(TILE), n.div_ceil(TILE))
            };
            launch(ctx, x, w, bias, &out, m, gemv, tiles_m, tiles_n)?;
            Ok(out)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn launch(
    ctx: &GpuContext,
    x: &Tensor,
    w: &QTensor,
    bias: Option<&Tensor>,
    out: &Tensor,
    m: usize,
    gemv: bool,
    tiles_m: usize,
    tiles_n: usize,
) -> Result<()> {
    let name = "qlinear";
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let params = Params::new()
        .dim(name, m)?
        .dim(name, n)?
        .dim(name, k)?
        .dim(name, tiles_n)?;
    let mut buffers = vec![
        BufferArg::new(1, "x", x),
        BufferArg::new(2, "weight", w.words()),
    ];
    if let Some(bias) = bias {
        buffers.push(BufferArg::new(3, "bias", bias));
    }
    buffers.push(BufferArg::new(4, "out", out));
    ctx.dispatch(Dispatch {
        op: name,
        kernel: &SOURCE,
        entry: if gemv { "qgemv" } else { "qgemm" },
        variant: format_variant(x.dtype(), w.format(), bias.is_some()),
        params: params.bytes(),
        buffers: &buffers,
        workgroups: ctx.grid(name, (tiles_m * tiles_n) as u64)?,
    })
}

/// The defines the block readers read (the format's, set to 1) and the bias switch both users of
/// them share.
pub(crate) fn format_variant(dtype: DType, format: QuantFormat, bias: bool) -> Variant {
    Variant::new(dtype)
        .define(format_define(format), 1)
        .define("BIAS", u32::from(bias))
}

/// The WGSL `#if` name of a format's block reader (blocks.wgsl, formats/*.wgsl).
fn format_define(format: QuantFormat) -> &'static str {
    match format {
        QuantFormat::Q8_0 => "Q8",
        QuantFormat::Q4_0 => "Q4",
        QuantFormat::Nf4 => "NF4",
        QuantFormat::Q4_1 => "Q4_1",
        QuantFormat::Q5_0 => "Q5_0",
        QuantFormat::Q5_1 => "Q5_1",
        QuantFormat::Q2K => "Q2_K",
        QuantFormat::Q3K => "Q3_K",
        QuantFormat::Q4K => "Q4_K",
        QuantFormat::Q5K => "Q5_K",
        QuantFormat::Q6K => "Q6_K",
    }
}

/// Every compiled variant of this family, for the offline shader validation test.
pub fn variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    let mut v = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        for format in QuantFormat::ALL {
            for bias in [false, true] {
                for entry in ["qgemv", "qgemm"] {
                    v.push((&SOURCE, entry, format_variant(dtype, format, bias)));
                }
            }
        }
    }
    v
}
