//! CPU convolution: per image, C[Cout, pixels] = W[Cout, K] x col[K, pixels] with the `gemm` crate,
//! where col is the im2col matrix built a block of pixels at a time (bounded memory). A 1x1 convolution
//! with stride 1 and no padding needs no im2col: the image itself is the right-hand matrix. f16 is
//! widened to f32, computed, and rounded back. A packed weight is unpacked `PACKED_ROWS` output
//! channels at a time, never whole.

use gemm::Parallelism;
use rayon::prelude::*;

use kiln_runtime::{QuantFormat, Result, Tensor};

use super::{Geometry, Weight};
use crate::common::{cpu_f32, cpu_output};
use crate::quant::blocks::unpack_blocks;
use crate::quant::cpu::packed_bytes;

/// Most f32 values one im2col block holds (32 MiB): large enough for efficient GEMMs, small enough
/// that a 512x512 VAE layer does not allocate gigabytes.
const COL_BUDGET: usize = 8 << 20;
/// Below this many multiply-adds per image, images run in parallel with single-threaded GEMMs.
const SMALL_IMAGE_FLOPS: usize = 1 << 22;
/// Output channels of a packed weight unpacked together: enough rows for an efficient GEMM, a few
/// MiB at most (64 x 11,520 f32 for SD's widest 3x3 convolution).
const PACKED_ROWS: usize = 64;

/// The weight matrix [Cout, K] as the GEMMs read it.
#[derive(Clone, Copy)]
pub(crate) enum Rows<'a> {
    F32(&'a [f32]),
    Packed {
        format: QuantFormat,
        bytes: &'a [u8],
    },
}

impl<'a> Rows<'a> {
    /// Output channels per GEMM: all of them for a float weight.
    fn chunk(&self, cout: usize) -> usize {
        match self {
            Rows::F32(_) => cout,
            Rows::Packed { .. } => PACKED_ROWS,
        }
    }

    /// Rows r0 .. r0 + rows as f32, unpacked into `scratch` if packed.
    fn get<'s>(&'s self, r0: usize, rows: usize, k: usize, scratch: &'s mut Vec<f32>) -> &'s [f32] {
        match *self {
            Rows::F32(w) => &w[r0 * k..(r0 + rows) * k],
            Rows::Packed { format, bytes } => {
                let row_bytes = k / format.block_len() * format.block_bytes();
                scratch.resize(rows * k, 0.0);
                let src = &bytes[r0 * row_bytes..(r0 + rows) * row_bytes];
                unpack_blocks(format, src, scratch);
                scratch
            }
        }
    }
}

pub(crate) fn conv2d(
    x: &Tensor,
    weight: Weight,
    bias: Option<&Tensor>,
    g: &Geometry,
) -> Result<Tensor> {
    let xv = cpu_f32(x)?;
    let bv = bias.map(cpu_f32).transpose()?;
    let block = (COL_BUDGET / g.k()).max(64);
    let out = match weight {
        Weight::Float(w) => {
            let wv = cpu_f32(w)?;
            conv2d_blocked(&xv, Rows::F32(&wv), bv.as_deref(), g, block)
        }
        Weight::Packed(q, _) => {
            let rows = Rows::Packed {
                format: q.format(),
                bytes: packed_bytes("qconv2d", q)?,
            };
            conv2d_blocked(&xv, rows, bv.as_deref(), g, block)
        }
    };
    cpu_output(&[g.n, g.cout, g.ho, g.wo], x.dtype(), out)
}

/// The convolution on plain f32 slices in NCHW / OIHW layout.
#[cfg(test)]
pub(crate) fn conv2d_f32(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Geometry) -> Vec<f32> {
    let block = (COL_BUDGET / g.k()).max(64);
    conv2d_blocked(x, Rows::F32(w), bias, g, block)
}

/// `conv2d_f32` with im2col blocks of at most `block` output pixels (tests use tiny blocks).
pub(crate) fn conv2d_blocked(
    x: &[f32],
    w: Rows,
    bias: Option<&[f32]>,
    g: &Geometry,
    block: usize,
) -> Vec<f32> {
    let (k, pixels) = (g.k(), g.pixels());
    let in_img = g.cin * g.h * g.w;
    let out_img = g.cout * pixels;
    let mut out = vec![0.0f32; g.n * out_img];
    let block = block.clamp(1, pixels);
    let per_image = |(img, dst): (usize, &mut [f32]), col: &mut Vec<f32>, par: Parallelism| {
        image(
            &x[img * in_img..][..in_img],
            w,
            bias,
            g,
            dst,
            col,
            block,
            par,
        );
    };
    if g.n > 1 && g.cout * k * pixels < SMALL_IMAGE_FLOPS {
        out.par_chunks_mut(out_img)
            .enumerate()
            .for_each_init(Vec::new, |col, item| {
                per_image(item, col, Parallelism::None)
            });
    } else {
        let mut col = Vec::new();
        for item in out.chunks_mut(out_img).enumerate() {
            per_image(item, &mut col, Parallelism::Rayon(0));
        }
    }
    out
}

/// One image: `dst` is its [Cout, pixels] output.
#[allow(clippy::too_many_arguments)]
fn image(
    x: &[f32],
    w: Rows,
    bias: Option<&[f32]>,
    g: &Geometry,
    dst: &mut [f32],
    col: &mut Vec<f32>,
    block: usize,
    par: Parallelism,
) {
    let (k, pixels) = (g.k(), g.pixels());
    // The GEMM accumulates onto dst, so start from the bias.
    match bias {
        Some(b) => {
            for (row, &v) in dst.chunks_mut(pixels).zip(b) {
                row.fill(v);
            }
        }
        None => dst.fill(0.0),
    }
    // Bottom/right padding shows only as a larger output, so check the output size too.
    let pointwise = g.kh == 1
        && g.kw == 1
        && g.stride == [1, 1]
        && g.pad == [0, 0]
        && (g.ho, g.wo) == (g.h, g.w);
    let mut rows_scratch = Vec::new();
    let mut multiply = |b: &[f32], p0: usize, len: usize| {
        let chunk = w.chunk(g.cout);
        for r0 in (0..g.cout).step_by(chunk) {
            let rows = chunk.min(g.cout - r0);
            let a = w.get(r0, rows, k, &mut rows_scratch);
            // b's rows are `len` long: the im2col block, or the whole image when pointwise.
            gemm_block(
                rows,
                len,
                k,
                a,
                b,
                len,
                &mut dst[r0 * pixels + p0..],
                pixels,
                par,
            );
        }
    };
    if pointwise {
        multiply(x, 0, pixels);
        return;
    }
    for p0 in (0..pixels).step_by(block) {
        let len = block.min(pixels - p0);
        col.resize(k * len, 0.0);
        im2col(x, g, p0, len, &mut col[..k * len], par);
        multiply(&col[..k * len], p0, len);
    }
}

/// dst[m, n] += sum_k a[m, k] * b[k, n], all row-major: a is [m, k] packed, b has row stride `b_rs`,
/// dst has row stride `dst_rs`.
#[allow(clippy::too_many_arguments)]
fn gemm_block(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    b_rs: usize,
    dst: &mut [f32],
    dst_rs: usize,
    par: Parallelism,
) {
    assert!(a.len() >= m * k && b.len() >= (k - 1) * b_rs + n);
    assert!(dst.len() >= (m - 1) * dst_rs + n);
    // SAFETY: the asserts above keep every access inside the slices; dst does not alias a or b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            b_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

/// Fills col[k, j] = X[ci, oh*sh + kh - ph, ow*sw + kw - pw] (0 in the padding) for output pixels
/// p0 .. p0 + len, k = (ci, kh, kw).
fn im2col(x: &[f32], g: &Geometry, p0: usize, len: usize, col: &mut [f32], par: Parallelism) {
    let fill_row = |(kidx, row): (usize, &mut [f32])| {
        let ci = kidx / (g.kh * g.kw);
        let dy = kidx / g.kw % g.kh;
        let dx = kidx % g.kw;
        let plane = &x[ci * g.h * g.w..][..g.h * g.w];
        // Output columns whose input column lies inside the image: ow*sw + dx - pw in [0, w).
        let [sh, sw] = g.stride;
        let ow_lo = g.pad[1].saturating_sub(dx).div_ceil(sw).min(g.wo);
        let ow_hi = if g.w + g.pad[1] > dx {
            ((g.w + g.pad[1] - dx - 1) / sw + 1).min(g.wo)
        } else {
            0
        }
        .max(ow_lo);
        let mut p = p0;
        while p < p0 + len {
            let (oh, ow0) = (p / g.wo, p % g.wo);
            let ow1 = g.wo.min(ow0 + p0 + len - p);
            let seg = &mut row[p - p0..][..ow1 - ow0];
            let ih = (oh * sh + dy).wrapping_sub(g.pad[0]);
            if ih >= g.h {
                seg.fill(0.0);
            } else {
                let src = &plane[ih * g.w..][..g.w];
                let (lo, hi) = (ow_lo.clamp(ow0, ow1), ow_hi.clamp(ow0, ow1));
                seg[..lo - ow0].fill(0.0);
                seg[hi - ow0..].fill(0.0);
                let inner = &mut seg[lo - ow0..hi - ow0];
                // Only meaningful (and in range) when some column is inside the image.
                let start = (lo * sw + dx).wrapping_sub(g.pad[1]);
                if !inner.is_empty() {
                    if sw == 1 {
                        inner.copy_from_slice(&src[start..][..inner.len()]);
                    } else {
                        for (j, v) in inner.iter_mut().enumerate() {
                            *v = src[start + j * sw];
                        }
                    }
                }
            }
            p += ow1 - ow0;
        }
    };
    match par {
        Parallelism::None => col.chunks_mut(len).enumerate().for_each(fill_row),
        _ => col
            .par_chunks_mut(len)
            .enumerate()
            .with_min_len(4)
            .for_each(fill_row),
    }
}
