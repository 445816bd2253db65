//! A packed quantised weight matrix: the block bytes of one format on a device, stored as a `u32`
//! tensor (WGSL storage has no byte type), plus the logical `[N, K]` shape. It is a separate type
//! rather than more `DType` variants because a packed tensor is not an array of elements: no op but
//! the dequantising matmul can read it, and keeping it apart means no existing op has to reject it.
//!
//! The packing arithmetic lives in `kiln_kernels::quant`; this holds only the layout facts.

use std::fmt;
use std::str::FromStr;

use crate::{DType, Device, Error, Result, Tensor};

/// A block format. Blocks run along K (a row of a PyTorch `[out, in]` weight).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuantFormat {
    /// ggml q8_0: f16 scale, 32 x i8. 34 bytes per 32 weights.
    Q8_0,
    /// ggml q4_0: f16 scale, 16 bytes of nibbles (byte j: weight j low, weight j+16 high). 18 bytes.
    Q4_0,
    /// bitsandbytes nf4 (block 64): f32 absmax, then 32 bytes of code-table indices with element 2j in
    /// the high nibble. bitsandbytes keeps absmax in a separate array; here it heads its block (36
    /// bytes, word aligned) so one buffer holds the weight, like the ggml formats.
    Nf4,
}

impl QuantFormat {
    pub const ALL: [QuantFormat; 3] = [QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::Nf4];

    /// Weights per block.
    pub fn block_len(self) -> usize {
        match self {
            QuantFormat::Q8_0 | QuantFormat::Q4_0 => 32,
            QuantFormat::Nf4 => 64,
        }
    }

    pub fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q8_0 => 34,
            QuantFormat::Q4_0 => 18,
            QuantFormat::Nf4 => 36,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Q4_0 => "q4_0",
            QuantFormat::Nf4 => "nf4",
        }
    }

    /// Bytes of a `[n, k]` matrix, or an error when `k` is not a whole number of blocks.
    pub fn packed_bytes(self, what: &str, shape: &[usize]) -> Result<usize> {
        let [n, k] = *shape else {
            return Err(Error::shape(
                what,
                format!("{} weights must be [N, K], got {shape:?}", self.name()),
            ));
        };
        if k == 0 || n == 0 || !k.is_multiple_of(self.block_len()) {
            return Err(Error::shape(
                what,
                format!(
                    "{} needs K (the last dimension) to be a non-zero multiple of its block size {}, got shape {shape:?}",
                    self.name(),
                    self.block_len()
                ),
            ));
        }
        Ok(n * k / self.block_len() * self.block_bytes())
    }
}

impl fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        QuantFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::dtype(
                    "quantisation",
                    format!("unknown format `{s}` (expected q8_0, q4_0 or nf4)"),
                )
            })
    }
}

/// A packed `[N, K]` weight on one device.
#[derive(Clone, Debug)]
pub struct QTensor {
    /// The block bytes, zero-padded to whole u32 words, as a 1-D u32 tensor.
    words: Tensor,
    shape: [usize; 2],
    format: QuantFormat,
}

impl QTensor {
    /// Wraps packed block bytes (exactly `format.packed_bytes(shape)` of them) on `device`.
    pub fn from_packed(
        device: &Device,
        format: QuantFormat,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<QTensor> {
        let what = "quantised weight";
        let expected = format.packed_bytes(what, shape)?;
        if bytes.len() != expected {
            return Err(Error::shape(
                what,
                format!(
                    "{} bytes given for {format} shape {shape:?} ({expected} bytes)",
                    bytes.len()
                ),
            ));
        }
        let mut padded = bytes.to_vec();
        padded.resize(expected.next_multiple_of(4), 0);
        let words = Tensor::from_bytes(device, &[padded.len() / 4], DType::U32, &padded)?;
        Ok(QTensor {
            words,
            shape: [shape[0], shape[1]],
            format,
        })
    }

    /// `[N, K]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn format(&self) -> QuantFormat {
        self.format
    }

    pub fn device(&self) -> &Device {
        self.words.device()
    }

    /// The packed words as a u32 tensor, for kernels to bind.
    pub fn words(&self) -> &Tensor {
        &self.words
    }

    /// Bytes the packed data occupies (without word padding).
    pub fn packed_len(&self) -> usize {
        self.shape[0] * self.shape[1] / self.format.block_len() * self.format.block_bytes()
    }

    /// The packed block bytes, copied back to the host.
    pub fn to_packed_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes = self.words.to_bytes()?;
        bytes.truncate(self.packed_len());
        Ok(bytes)
    }

    pub fn to_device(&self, device: &Device) -> Result<QTensor> {
        Ok(QTensor {
            words: self.words.to_device(device)?,
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_sizes_and_k_multiple_errors() {
        assert_eq!(
            QuantFormat::Q8_0.packed_bytes("w", &[3, 64]).unwrap(),
            3 * 2 * 34
        );
        assert_eq!(
            QuantFormat::Nf4.packed_bytes("w", &[2, 128]).unwrap(),
            2 * 2 * 36
        );
        let err = QuantFormat::Nf4
            .packed_bytes("w", &[2, 96])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("multiple of its block size 64") && err.contains("[2, 96]"),
            "{err}"
        );
        let err = QuantFormat::Q4_0
            .packed_bytes("w", &[2, 3, 32])
            .unwrap_err()
            .to_string();
        assert!(err.contains("[N, K]"), "{err}");
    }

    #[test]
    fn packed_bytes_round_trip_and_length_is_checked() {
        let bytes: Vec<u8> = (0..34u8).collect();
        let q = QTensor::from_packed(&Device::Cpu, QuantFormat::Q8_0, &[1, 32], &bytes).unwrap();
        assert_eq!(q.words().shape(), &[9]);
        assert_eq!(q.to_packed_bytes().unwrap(), bytes);
        let err = QTensor::from_packed(&Device::Cpu, QuantFormat::Q8_0, &[1, 32], &bytes[1..])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("33 bytes") && err.contains("34 bytes"),
            "{err}"
        );
    }

    #[test]
    fn format_names_parse() {
        assert_eq!("Q4_0".parse::<QuantFormat>().unwrap(), QuantFormat::Q4_0);
        let err = "q5_k".parse::<QuantFormat>().unwrap_err().to_string();
        assert!(err.contains("q5_k") && err.contains("nf4"), "{err}");
    }
}
