//! A packed quantised weight matrix: the block bytes of one format on a device, stored as a `u32`
//! tensor (WGSL storage has no byte type), plus the logical `[N, K]` shape. It is a separate type
//! rather than more `DType` variants because a packed tensor is not an array of elements: no op but
//! the dequantising matmul can read it, and keeping it apart means no existing op has to reject it.
//!
//! The packing arithmetic lives in `kiln_kernels::quant`; this holds only the layout facts.

use std::fmt;
use std::str::FromStr;

use crate::{DType, Device, Error, Result, Tensor};

/// A block format. Blocks run along K (a row of a PyTorch `[out, in]` weight). Every ggml format
/// here is stored exactly as in a GGUF file (ggml-common.h's `block_*` structs, little-endian, no
/// padding), so a file's tensor bytes are the packed weight as they are. f16 fields are IEEE halves.
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
    /// ggml q4_1: f16 d, f16 m, 16 bytes of nibbles packed as q4_0; `x = q * d + m`. 20 bytes per 32.
    Q4_1,
    /// ggml q5_0: f16 d, u32 qh (bit j: the fifth bit of weight j), 16 bytes of low nibbles packed as
    /// q4_0; `x = ((nibble | bit << 4) - 16) * d`. 22 bytes per 32.
    Q5_0,
    /// ggml q5_1: f16 d, f16 m, u32 qh, 16 bytes of nibbles as q5_0; `x = (nibble | bit << 4) * d + m`.
    /// 24 bytes per 32.
    Q5_1,
    /// ggml q2_K: 256-weight super-block of 16 sub-blocks of 16. scales[16] (low nibble: the
    /// sub-block's scale, high nibble: its min), qs[64] (2-bit codes), f16 d, f16 dmin;
    /// `x = (d * sc) * q - dmin * m`. Weight `128 n + 32 j + l` is bits `2j..2j+2` of `qs[32 n + l]`,
    /// sub-block `8 n + 2 j + l / 16`. 84 bytes per 256.
    Q2K,
    /// ggml q3_K: hmask[32] (bit `4 n + j` of byte l: the third bit of weight `128 n + 32 j + l`), qs[64]
    /// (low 2 bits, placed as q2_K), scales[12] (16 six-bit scales: the low 4 bits of scale i in
    /// nibble `i / 8` of byte `i % 8`, the top 2 in bits `2 (i / 4)` of byte `8 + i % 4`), f16 d;
    /// `x = (d * (sc - 32)) * (q - (hbit ? 0 : 4))`. 110 bytes per 256.
    Q3K,
    /// ggml q4_K: f16 d, f16 dmin, scales[12] (8 six-bit scale/min pairs, `get_scale_min_k4`),
    /// qs[128]: in each 64-weight chunk, byte l's low nibble is weight l, its high nibble weight
    /// 32 + l; `x = (d * sc) * q - dmin * m` per 32-weight sub-block. 144 bytes per 256.
    Q4K,
    /// ggml q5_K: q4_K's d, dmin, scales[12], then qh[32] (bit c of byte l: the fifth bit of weight
    /// `32 c + l`) and qs[128] as q4_K; `x = (d * sc) * q - dmin * m`. 176 bytes per 256.
    Q5K,
    /// ggml q6_K: ql[128] (low nibbles), qh[64] (2 high bits), i8 scales[16] (one per 16 weights),
    /// f16 d. In 128-weight half n, weight `32 t + l` takes the nibble `t / 2` of `ql[64 n + 32 (t % 2)
    /// + l]` and bits `2t..2t+2` of `qh[32 n + l]`; `x = (d * sc) * (q - 32)`. 210 bytes per 256.
    Q6K,
}

impl QuantFormat {
    /// Every format kiln reads.
    pub const ALL: [QuantFormat; 11] = [
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Nf4,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q5_1,
        QuantFormat::Q2K,
        QuantFormat::Q3K,
        QuantFormat::Q4K,
        QuantFormat::Q5K,
        QuantFormat::Q6K,
    ];

    /// The formats kiln can pack float weights into (`--weight-type`); the others are read as a
    /// GGUF file stores them.
    pub const PACKABLE: [QuantFormat; 3] = [QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::Nf4];

    pub fn packable(self) -> bool {
        QuantFormat::PACKABLE.contains(&self)
    }

    /// Weights per block.
    pub fn block_len(self) -> usize {
        match self {
            QuantFormat::Q8_0
            | QuantFormat::Q4_0
            | QuantFormat::Q4_1
            | QuantFormat::Q5_0
            | QuantFormat::Q5_1 => 32,
            QuantFormat::Nf4 => 64,
            QuantFormat::Q2K
            | QuantFormat::Q3K
            | QuantFormat::Q4K
            | QuantFormat::Q5K
            | QuantFormat::Q6K => 256,
        }
    }

    pub fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q8_0 => 34,
            QuantFormat::Q4_0 => 18,
            QuantFormat::Nf4 => 36,
            QuantFormat::Q4_1 => 20,
            QuantFormat::Q5_0 => 22,
            QuantFormat::Q5_1 => 24,
            QuantFormat::Q2K => 84,
            QuantFormat::Q3K => 110,
            QuantFormat::Q4K => 144,
            QuantFormat::Q5K => 176,
            QuantFormat::Q6K => 210,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Q4_0 => "q4_0",
            QuantFormat::Nf4 => "nf4",
            QuantFormat::Q4_1 => "q4_1",
            QuantFormat::Q5_0 => "q5_0",
            QuantFormat::Q5_1 => "q5_1",
            QuantFormat::Q2K => "q2_k",
            QuantFormat::Q3K => "q3_k",
            QuantFormat::Q4K => "q4_k",
            QuantFormat::Q5K => "q5_k",
            QuantFormat::Q6K => "q6_k",
        }
    }

    /// The ggml type id (`enum ggml_type`), for the formats GGUF files hold.
    pub fn ggml_type(self) -> Option<u32> {
        Some(match self {
            QuantFormat::Q4_0 => 2,
            QuantFormat::Q4_1 => 3,
            QuantFormat::Q5_0 => 6,
            QuantFormat::Q5_1 => 7,
            QuantFormat::Q8_0 => 8,
            QuantFormat::Q2K => 10,
            QuantFormat::Q3K => 11,
            QuantFormat::Q4K => 12,
            QuantFormat::Q5K => 13,
            QuantFormat::Q6K => 14,
            QuantFormat::Nf4 => return None,
        })
    }

    /// The format of a ggml type id, when kiln reads it.
    pub fn from_ggml_type(id: u32) -> Option<QuantFormat> {
        QuantFormat::ALL
            .into_iter()
            .find(|f| f.ggml_type() == Some(id))
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
                    format!(
                        "unknown format `{s}` (expected one of {})",
                        QuantFormat::ALL.map(QuantFormat::name).join(", ")
                    ),
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
        assert_eq!("Q4_K".parse::<QuantFormat>().unwrap(), QuantFormat::Q4K);
        let err = "q8_k".parse::<QuantFormat>().unwrap_err().to_string();
        assert!(err.contains("q8_k") && err.contains("nf4"), "{err}");
    }

    #[test]
    fn ggml_type_ids_round_trip() {
        for f in QuantFormat::ALL {
            assert_eq!(
                f.ggml_type().and_then(QuantFormat::from_ggml_type),
                f.ggml_type().map(|_| f)
            );
        }
        assert_eq!(QuantFormat::from_ggml_type(12), Some(QuantFormat::Q4K));
        assert_eq!(QuantFormat::from_ggml_type(15), None);
    }
}
