use kiln_kernels::embedding::embedding;
use kiln_kernels::quant::dequantize_rows;
use kiln_runtime::{DType, Device, Error, Result, Tensor};

use crate::weight::LayerWeight;
use crate::weights::Weights;

/// A token embedding table `[vocab, width]`, kept in host memory (the CPU backend) whatever the
/// model's device: a prompt reads a few rows of it, so only those rows are uploaded (an LLM's table
/// is its largest tensor after the LM head: 1.3 GB in f16 for Mistral Small). A table stored
/// packed (a GGUF file's q4_K or q8_0 `token_embd`) stays packed, as llama.cpp keeps it.
pub struct Embedding {
    table: LayerWeight,
    device: Device,
    dtype: DType,
}

impl Embedding {
    pub fn new(w: &Weights, vocab: usize, width: usize) -> Result<Embedding> {
        Ok(Embedding {
            table: w
                .in_host_memory()
                .get_packable("weight", &[vocab, width], vocab, width)?,
            device: w.device().clone(),
            dtype: w.dtype(),
        })
    }

    pub fn vocab(&self) -> usize {
        self.table.shape()[0]
    }

    /// `[ids.len(), width]` rows on the model's device in its dtype. Ids are checked here, on the
    /// host, because the GPU lookup cannot report a bad one.
    pub fn forward(&self, ids: &[u32]) -> Result<Tensor> {
        let vocab = self.vocab();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::shape(
                "embedding",
                format!("token id {bad} is outside the vocabulary of {vocab}"),
            ));
        }
        let rows = match &self.table {
            LayerWeight::Float(table) => {
                embedding(&Tensor::from_u32(&Device::Cpu, &[ids.len()], ids)?, table)?
            }
            LayerWeight::Packed(table) => dequantize_rows(table, ids)?,
        };
        let rows = if rows.dtype() == self.dtype {
            rows
        } else {
            kiln_kernels::elementwise::cast(&rows, self.dtype)?
        };
        rows.to_device(&self.device)
    }
}
