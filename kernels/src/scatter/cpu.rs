//! CPU row scatter: `x` copied, then the replaced rows overwritten, in the tensors' own dtype.

use half::f16;

use kiln_runtime::{DType, Result, Tensor};

use crate::layout::cpu::{elems, Elem};

/// `rows` are already checked (in range, distinct).
pub fn scatter_rows(x: &Tensor, rows: &[u32], src: &Tensor) -> Result<Tensor> {
    fn run<T: Elem>(x: &Tensor, rows: &[u32], src: &Tensor) -> Result<Tensor> {
        let name = "scatter_rows";
        let dim = x.shape()[1];
        let mut out = elems::<T>(name, x)?.to_vec();
        let src = elems::<T>(name, src)?;
        for (&row, values) in rows.iter().zip(src.chunks_exact(dim)) {
            out[row as usize * dim..][..dim].copy_from_slice(values);
        }
        Tensor::from_cpu_data(T::wrap(out), x.shape())
    }
    match x.dtype() {
        DType::F16 => run::<f16>(x, rows, src),
        _ => run::<f32>(x, rows, src),
    }
}
