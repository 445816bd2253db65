//! CPU matmul through the `gemm` crate in f32 (f16 inputs are widened and the result rounded back, the
//! same f32 accumulation the GPU kernels use). Transposed `b` is just other strides: nothing is copied.

use gemm::Parallelism;
use rayon::prelude::*;

use kiln_runtime::{Result, Tensor};

use super::{MatmulOptions, Plan};
use crate::common::{cpu_f32, cpu_output};

/// Below this many multiply-adds per matrix, batches run in parallel with one thread each instead of
/// one after another with gemm's own threading (which would not split such small problems anyway).
const SMALL_MATRIX: usize = 1 << 21;

pub fn matmul(a: &Tensor, b: &Tensor, opts: &MatmulOptions, plan: &Plan) -> Result<Tensor> {
    let (va, vb) = (cpu_f32(a)?, cpu_f32(b)?);
    let Plan { batch, m, n, k, .. } = *plan;
    let mut out = vec![0.0f32; batch * m * n];
    if let Some(bias) = opts.bias {
        let bias = cpu_f32(bias)?;
        out.par_chunks_mut(n)
            .with_min_len(64)
            .for_each(|row| row.copy_from_slice(&bias));
    }
    let read_dst = opts.bias.is_some();
    // gemm takes (column stride, row stride) for each matrix.
    let (rhs_cs, rhs_rs) = if opts.transpose_b {
        (k as isize, 1)
    } else {
        (1, n as isize)
    };
    let one = |i: usize, dst: &mut [f32], parallelism: Parallelism| {
        let lhs = &va[i * m * k..(i + 1) * m * k];
        let b0 = i * plan.b_batch_stride;
        let rhs = &vb[b0..b0 + k * n];
        debug_assert_eq!(dst.len(), m * n);
        // SAFETY: each slice holds exactly its row-major m x k, k x n (or n x k) or m x n matrix, and
        // the strides below address only elements inside it; dst does not alias the inputs.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                read_dst,
                lhs.as_ptr(),
                1,
                k as isize,
                rhs.as_ptr(),
                rhs_cs,
                rhs_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            )
        }
    };
    if batch > 1 && m * n * k < SMALL_MATRIX {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, dst)| one(i, dst, Parallelism::None));
    } else {
        for (i, dst) in out.chunks_mut(m * n).enumerate() {
            one(i, dst, Parallelism::Rayon(0));
        }
    }
    cpu_output(&plan.out_shape, a.dtype(), out)
}
