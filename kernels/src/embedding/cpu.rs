//! CPU embedding lookup: ids are checked, then rows are copied in the table's own dtype.

use half::f16;
use rayon::prelude::*;

use kiln_runtime::{DType, Error, Result, Tensor};

use crate::layout::cpu::{elems, Elem, MIN_TASK};

pub fn embedding(ids: &Tensor, table: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let name = "embedding";
    let ids_v = elems::<u32>(name, ids)?;
    let (vocab, dim) = (table.shape()[0], table.shape()[1]);
    if let Some((at, &id)) = ids_v
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= vocab)
    {
        return Err(Error::shape(
            name,
            format!(
                "id {id} (flat position {at} of `ids` {:?}) is out of range for a table of V = {vocab} rows ({:?})",
                ids.shape(),
                table.shape()
            ),
        ));
    }
    fn run<T: Elem>(ids: &[u32], table: &Tensor, dim: usize, shape: &[usize]) -> Result<Tensor> {
        let rows = elems::<T>("embedding", table)?;
        let mut out = vec![T::default(); ids.len() * dim];
        out.par_chunks_mut(dim)
            .with_min_len(MIN_TASK.div_ceil(dim))
            .zip(ids)
            .for_each(|(row, &id)| {
                let at = id as usize * dim;
                row.copy_from_slice(&rows[at..at + dim]);
            });
        Tensor::from_cpu_data(T::wrap(out), shape)
    }
    match table.dtype() {
        DType::F16 => run::<f16>(ids_v, table, dim, shape),
        _ => run::<f32>(ids_v, table, dim, shape),
    }
}
