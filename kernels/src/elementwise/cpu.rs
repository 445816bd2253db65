//! CPU reference for the elementwise family, computing in f32 (f64 for erf).

use rayon::prelude::*;

use kiln_runtime::{Result, Tensor};

use super::{Binary, Unary};
use crate::common::{cpu_f32, cpu_output};

pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erf(x as f64 * std::f64::consts::FRAC_1_SQRT_2) as f32)
}

pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044715 * x * x * x)).tanh())
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn apply_unary(op: Unary, x: f32) -> f32 {
    match op {
        Unary::Scale { mul, add } => mul * x + add,
        Unary::Silu => x * sigmoid(x),
        Unary::GeluErf => gelu_erf(x),
        Unary::GeluTanh => gelu_tanh(x),
        Unary::QuickGelu => x * sigmoid(1.702 * x),
    }
}

pub fn unary(x: &Tensor, op: Unary) -> Result<Tensor> {
    let values = cpu_f32(x)?;
    let out: Vec<f32> = values
        .par_iter()
        .with_min_len(4096)
        .map(|&v| apply_unary(op, v))
        .collect();
    cpu_output(x.shape(), x.dtype(), out)
}

pub fn binary(
    a: &Tensor,
    b: &Tensor,
    op: Binary,
    shape: &[usize],
    sa: &[usize],
    sb: &[usize],
) -> Result<Tensor> {
    let (va, vb) = (cpu_f32(a)?, cpu_f32(b)?);
    let n: usize = shape.iter().product();
    let f = |x: f32, y: f32| match op {
        Binary::Add => x + y,
        Binary::Sub => x - y,
        Binary::Mul => x * y,
        Binary::Div => x / y,
    };
    let out: Vec<f32> = (0..n)
        .into_par_iter()
        .with_min_len(4096)
        .map(|i| {
            let (mut rest, mut ia, mut ib) = (i, 0, 0);
            for d in (0..shape.len()).rev() {
                let c = rest % shape[d];
                rest /= shape[d];
                ia += c * sa[d];
                ib += c * sb[d];
            }
            f(va[ia], vb[ib])
        })
        .collect();
    cpu_output(shape, a.dtype(), out)
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
