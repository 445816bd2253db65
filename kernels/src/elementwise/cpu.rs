//! CPU reference for the elementwise family, computing in f32 (f64 for erf).

use rayon::prelude::*;

use kiln_runtime::{Result, Tensor};

use super::{Binary, Unary};
use crate::common::{cpu_f32, cpu_output, fast_exp};

pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erf(x as f64 * std::f64::consts::FRAC_1_SQRT_2) as f32)
}

pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044715 * x * x * x)).tanh())
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

/// Elements per parallel task of a flat map: large enough to amortise scheduling.
const CHUNK: usize = 16 * 1024;

/// `f` over every element, in parallel chunks; `f` is a concrete closure per op so the loop inlines
/// and vectorises (a per-element match on the op would not).
fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, i)| o.iter_mut().zip(i).for_each(|(o, &v)| *o = f(v)));
    out
}

pub fn unary(x: &Tensor, op: Unary) -> Result<Tensor> {
    let v = cpu_f32(x)?;
    let out = match op {
        Unary::Scale { mul, add } => map(&v, move |x| mul * x + add),
        Unary::Silu => map(&v, |x| x * sigmoid(x)),
        Unary::GeluErf => map(&v, gelu_erf),
        Unary::GeluTanh => map(&v, gelu_tanh),
        Unary::QuickGelu => map(&v, |x| x * sigmoid(1.702 * x)),
        Unary::LeakyRelu { slope } => map(&v, move |x| if x >= 0.0 { x } else { slope * x }),
    };
    cpu_output(x.shape(), x.dtype(), out)
}

/// `a op b` with broadcasting: `sa`/`sb` are each operand's element strides over the output
/// `shape` (0 along broadcast dimensions).
pub fn binary(
    a: &Tensor,
    b: &Tensor,
    op: Binary,
    shape: &[usize],
    sa: &[usize],
    sb: &[usize],
) -> Result<Tensor> {
    let (va, vb) = (cpu_f32(a)?, cpu_f32(b)?);
    let out = match op {
        Binary::Add => broadcast(&va, &vb, shape, sa, sb, |x, y| x + y),
        Binary::Sub => broadcast(&va, &vb, shape, sa, sb, |x, y| x - y),
        Binary::Mul => broadcast(&va, &vb, shape, sa, sb, |x, y| x * y),
        Binary::Div => broadcast(&va, &vb, shape, sa, sb, |x, y| x / y),
    };
    cpu_output(shape, a.dtype(), out)
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

fn broadcast(
    va: &[f32],
    vb: &[f32],
    shape: &[usize],
    sa: &[usize],
    sb: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut out = vec![0.0f32; n];
    let dense = contiguous_strides(shape);
    if sa == dense.as_slice() && sb == dense.as_slice() {
        // Same shapes: one flat loop.
        out.par_chunks_mut(CHUNK)
            .zip(va.par_chunks(CHUNK).zip(vb.par_chunks(CHUNK)))
            .for_each(|(o, (x, y))| {
                for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                    *o = f(x, y);
                }
            });
        return out;
    }
    // Row by row over the last dimension, each operand either walking it (stride 1) or holding one
    // value (stride 0); row offsets are computed once per row instead of once per element.
    let rank = shape.len();
    let inner = shape.last().copied().unwrap_or(1).max(1);
    let (ia, ib) = (
        sa.last().copied().unwrap_or(0),
        sb.last().copied().unwrap_or(0),
    );
    out.par_chunks_mut(inner)
        .with_min_len((4096 / inner).max(1))
        .enumerate()
        .for_each(|(row, o)| {
            let (mut rest, mut ba, mut bb) = (row, 0, 0);
            for d in (0..rank.saturating_sub(1)).rev() {
                let c = rest % shape[d];
                rest /= shape[d];
                ba += c * sa[d];
                bb += c * sb[d];
            }
            match (ia, ib) {
                (1, 1) => {
                    let (x, y) = (&va[ba..ba + inner], &vb[bb..bb + inner]);
                    for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                        *o = f(x, y);
                    }
                }
                (1, 0) => {
                    let y = vb[bb];
                    for (o, &x) in o.iter_mut().zip(&va[ba..ba + inner]) {
                        *o = f(x, y);
                    }
                }
                (0, 1) => {
                    let x = va[ba];
                    for (o, &y) in o.iter_mut().zip(&vb[bb..bb + inner]) {
                        *o = f(x, y);
                    }
                }
                _ => {
                    for (j, o) in o.iter_mut().enumerate() {
                        *o = f(va[ba + j * ia], vb[bb + j * ib]);
                    }
                }
            }
        });
    out
}

pub fn geglu(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let values = cpu_f32(x)?;
    let half = *shape.last().expect("non-empty shape");
    let out: Vec<f32> = values
        .par_chunks(2 * half)
        .flat_map_iter(|row| (0..half).map(move |c| row[c] * gelu_erf(row[half + c])))
        .collect();
    cpu_output(shape, x.dtype(), out)
}

pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let (g, u) = (cpu_f32(gate)?, cpu_f32(up)?);
    let mut out = vec![0.0f32; g.len()];
    out.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g * sigmoid(g) * u;
            }
        });
    cpu_output(gate.shape(), gate.dtype(), out)
}
