//! CPU quantised linear. q4_0 and q8_0 weights take the integer path (`int8.rs`: activations
//! rounded to 8 bits per block, as llama.cpp does), and so do q2_K .. q6_K, q4_1, q5_0 and q5_1
//! below `ROW_DOT_MAX_ROWS` input rows (`int8_kquants.rs`, `int8_legacy.rs`), and q4_K / q6_K at
//! any row count where the AVX-512 VNNI tiles run (`int8_kquants_avx512.rs`). nf4, larger batches
//! of those, and `qlinear_exact` for every format, keep f32 activations: packed rows of W are
//! unpacked a chunk at a time (never the whole matrix) and multiplied with the `gemm` crate in
//! f32, the same f32 accumulation the WGSL kernels use; a single input row (batch-1 decode) skips
//! the unpacking: each block is dotted with x as it is read.

use gemm::Parallelism;
use rayon::prelude::*;

use kiln_runtime::{CpuData, Error, QTensor, QuantFormat, Result, Tensor};

use super::blocks::{dot_block, unpack_blocks};
use super::int8::{self, Q8Rows};
use super::int8_panel::{self, Panel};
use crate::common::{cpu_f32, cpu_output};

/// Input rows from which formats without integer panels (all but q4_0 / q8_0) take the f32 path
/// (unpacked rows and the f32 GEMM) rather than integer row dots, which decode each weight once
/// per input row. Measured on the 2-vCPU
/// AVX-512 box with a 4096 x 4096 weight (`ggml_tests::cpu_qlinear_timings`): q4_K integer / f32
/// 9.7 / 16.8 ms at 4 rows, 74 / 70 ms at 32, 297 / 154 ms at 128; q6_K 62 / 105 ms at 32 and
/// 380 / 209 ms at 128. The AVX-512 tiles of q4_K / q6_K unpack a block once for 4 input rows and
/// beat the f32 path at every row count (`kiln bench kernels --filter prefill`, 64 rows of Mistral
/// 7B's FFN on the same box, shared: q4_K 249 ms against 385, q6_K 300 against 448).
const ROW_DOT_MAX_ROWS: usize = 32;

/// Rows of W unpacked together: large enough for gemm to be efficient, small enough to stay in cache.
const ROWS: usize = 32;

/// `x [M, K] @ W^T + bias` for a packed `W [N, K]`; `out_shape` is `[..., N]`.
pub fn qlinear(
    x: &Tensor,
    w: &QTensor,
    bias: Option<&Tensor>,
    m: usize,
    out_shape: &[usize],
) -> Result<Tensor> {
    let format = w.format();
    // Past a few rows, q4_0 / q8_0 (panels or AVX2 row dots) and the AVX-512 K-quant paths beat
    // the f32 GEMM; the AVX2 K-quant row dots do not.
    let batched =
        matches!(format, QuantFormat::Q4_0 | QuantFormat::Q8_0) || int8::has_wide_tiles(format);
    if int8::supports(format) && (m < ROW_DOT_MAX_ROWS || batched) {
        qlinear_int8(x, w, bias, out_shape)
    } else {
        qlinear_exact(x, w, bias, m, out_shape)
    }
}

/// The integer path: `x` rounded to 8 bits once, then every (weight row, input row) pair is one
/// `int8` row dot. Chunks of weight rows run in parallel; each chunk stays in cache while every
/// input row passes over it.
fn qlinear_int8(
    x: &Tensor,
    w: &QTensor,
    bias: Option<&Tensor>,
    out_shape: &[usize],
) -> Result<Tensor> {
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let format = w.format();
    let row_bytes = k / format.block_len() * format.block_bytes();
    let xq = Q8Rows::quantize(&cpu_f32(x)?, k, format);
    let m = xq.rows();
    let packed = packed_bytes("qlinear", w)?;
    let bias = bias.map(cpu_f32).transpose()?;
    let panel_dot = int8_panel::panel_dot_for_this_cpu()
        .filter(|_| m >= int8_panel::MIN_ROWS && int8_panel::supports(format));
    let dot = int8::tile_dot_for_this_cpu(format);
    let rows_per_task = match (panel_dot, m) {
        (Some(_), _) => int8_panel::PANEL_ROWS,
        // Batch-1 rows are cheap: a few large tasks per thread, each streaming a long run of
        // weights, keep the scheduler's cost per task out of decode.
        (None, 1) => n.div_ceil(4 * rayon::current_num_threads()).max(16),
        (None, _) => ROWS,
    };
    // Each chunk of weight rows gives an [M, rows] slab of the output, as in `qlinear_exact`.
    let slabs: Vec<Vec<f32>> = packed
        .par_chunks(rows_per_task * row_bytes)
        .map(|chunk| {
            let rows = chunk.len() / row_bytes;
            let mut slab = vec![0.0f32; m * rows];
            if let Some(panel_dot) = panel_dot {
                let mut panel = Panel::new(k);
                panel.repack(format, chunk, row_bytes);
                let mut tile = [[0.0f32; int8_panel::PANEL_ROWS]; int8_panel::TILE_ROWS];
                for first in (0..m).step_by(int8_panel::TILE_ROWS) {
                    let t = int8_panel::TILE_ROWS.min(m - first);
                    panel_dot(&panel, &xq, first, &mut tile[..t]);
                    for (i, outs) in tile[..t].iter().enumerate() {
                        slab[(first + i) * rows..][..rows].copy_from_slice(&outs[..rows]);
                    }
                }
                return slab;
            }
            let mut tile = [0.0f32; int8::TILE_ROWS];
            for first in (0..m).step_by(int8::TILE_ROWS) {
                let t = int8::TILE_ROWS.min(m - first);
                for (r, row) in chunk.chunks_exact(row_bytes).enumerate() {
                    dot(format, row, &xq, first, &mut tile[..t]);
                    for (i, &v) in tile[..t].iter().enumerate() {
                        slab[(first + i) * rows + r] = v;
                    }
                }
            }
            slab
        })
        .collect();
    let out = assemble(&slabs, m, n, rows_per_task, bias.as_deref());
    cpu_output(out_shape, x.dtype(), out)
}

/// f32 activations throughout: the exact reference (the GPU kernels compute the same) and the
/// path for nf4.
pub fn qlinear_exact(
    x: &Tensor,
    w: &QTensor,
    bias: Option<&Tensor>,
    m: usize,
    out_shape: &[usize],
) -> Result<Tensor> {
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let format = w.format();
    let (bl, bb) = (format.block_len(), format.block_bytes());
    let xv = cpu_f32(x)?;
    let packed = packed_bytes("qlinear", w)?;
    let row_bytes = k / bl * bb;
    if m == 1 {
        return gemv(&xv, packed, format, row_bytes, bias, out_shape, x);
    }
    // Each chunk of ROWS weight rows gives an [M, rows] slab of the output, transposed into place below.
    let slabs: Vec<Vec<f32>> = packed
        .par_chunks(ROWS * row_bytes)
        .map(|rows_packed| {
            let rows = rows_packed.len() / row_bytes;
            let mut wt = vec![0.0f32; rows * k];
            unpack_blocks(format, rows_packed, &mut wt);
            let mut slab = vec![0.0f32; m * rows];
            // SAFETY: x is row-major m x k, wt row-major rows x k read as its transpose (k x rows,
            // column stride k), slab row-major m x rows; all strides stay inside those slices.
            unsafe {
                gemm::gemm(
                    m,
                    rows,
                    k,
                    slab.as_mut_ptr(),
                    1,
                    rows as isize,
                    false,
                    xv.as_ptr(),
                    1,
                    k as isize,
                    wt.as_ptr(),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                )
            };
            slab
        })
        .collect();
    let bias = bias.map(cpu_f32).transpose()?;
    let out = assemble(&slabs, m, n, ROWS, bias.as_deref());
    cpu_output(out_shape, x.dtype(), out)
}

/// The `[m, n]` output from per-chunk slabs, `slabs[c]` being `[m, rows of chunk c]` for chunks of
/// `chunk_rows` weight rows, plus the bias; output rows are filled in parallel.
fn assemble(
    slabs: &[Vec<f32>],
    m: usize,
    n: usize,
    chunk_rows: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    out.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (c, slab) in slabs.iter().enumerate() {
            let rows = slab.len() / m;
            let dst = &mut row[c * chunk_rows..c * chunk_rows + rows];
            dst.copy_from_slice(&slab[i * rows..(i + 1) * rows]);
        }
        if let Some(b) = bias {
            row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
        }
    });
    out
}

/// Batch-1 decode: each output is one packed row's dot product with `x`, its blocks decoded in
/// registers as they stream past (no unpacked buffer); rows run in parallel.
fn gemv(
    xv: &[f32],
    packed: &[u8],
    format: kiln_runtime::QuantFormat,
    row_bytes: usize,
    bias: Option<&Tensor>,
    out_shape: &[usize],
    x: &Tensor,
) -> Result<Tensor> {
    let (bl, bb) = (format.block_len(), format.block_bytes());
    let bias = bias.map(cpu_f32).transpose()?;
    let dot = row_dot_for_this_cpu();
    let out: Vec<f32> = packed
        .par_chunks(row_bytes)
        .with_min_len(16)
        .enumerate()
        .map(|(r, row)| dot(format, row, xv, bl, bb) + bias.as_ref().map_or(0.0, |b| b[r]))
        .collect();
    cpu_output(out_shape, x.dtype(), out)
}

type RowDot = fn(kiln_runtime::QuantFormat, &[u8], &[f32], usize, usize) -> f32;

/// One packed row dotted with `x`. The same arithmetic in the same order on every CPU (Rust never
/// fuses a multiply and an add on its own), so the AVX2 build below gives bit-identical results.
#[inline(always)]
fn row_dot(format: kiln_runtime::QuantFormat, row: &[u8], x: &[f32], bl: usize, bb: usize) -> f32 {
    row.chunks_exact(bb)
        .zip(x.chunks_exact(bl))
        .map(|(b, x)| dot_block(format, b, x))
        .sum()
}

/// The portable build targets baseline x86-64 (SSE2); decode is bound by this loop, so where the
/// CPU has AVX2 the same code is compiled again with it (twice the lanes for the decode-and-FMA).
fn row_dot_for_this_cpu() -> RowDot {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return |format, row, x, bl, bb| {
            // SAFETY: AVX2 was detected on this CPU just above.
            unsafe { row_dot_avx2(format, row, x, bl, bb) }
        };
    }
    row_dot
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_dot_avx2(
    format: kiln_runtime::QuantFormat,
    row: &[u8],
    x: &[f32],
    bl: usize,
    bb: usize,
) -> f32 {
    row_dot(format, row, x, bl, bb)
}

/// A CPU weight's block bytes, as stored (the u32 words' padding cut off).
pub(crate) fn packed_bytes<'a>(op: &str, w: &'a QTensor) -> Result<&'a [u8]> {
    match w.words().cpu_data() {
        Some(CpuData::U32(words)) => Ok(&bytemuck::cast_slice(words)[..w.packed_len()]),
        _ => Err(Error::Device(format!("{op}: CPU op given a GPU weight"))),
    }
}
