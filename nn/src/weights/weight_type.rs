//! `--weight-type`: the storage of a model's weights.
//!
//! Packed (q8_0 / q4_0 / nf4: the formats kiln packs itself; GGUF files bring the other ggml types,
//! `QuantFormat::ALL`, already packed) are the weights of every Linear layer (attention projections,
//! feed-forward, time embedding, CLIP's layers) and every convolution (3x3 and 1x1) whose row length
//! K (in_features, or in_channels * kh * kw) is a whole number of blocks: ggml quantises whole blocks
//! along K only. The dequantising matmul runs Linear and 1x1 layers, the packed-weight convolution
//! kernel the 3x3 ones; both unpack a tile at a time and accumulate in f32.
//!
//! Kept in the float dtype:
//! - Layers whose K is not a multiple of the block size (32, nf4 64): the UNet's and VAE's conv_in
//!   (4 latent channels, K = 36), the VAE's 1x1 quant convolutions (K = 4).
//! - Norms, biases, embeddings (token, position, timestep): small, and they set the scale of
//!   everything after them, so quantising them costs quality and saves little.

use std::fmt;
use std::str::FromStr;

use kiln_runtime::{DType, Error, QuantFormat, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightType {
    #[default]
    F32,
    F16,
    Quantized(QuantFormat),
}

impl WeightType {
    /// The float dtype of unquantised weights and of activations: f16 only for `f16`, since the
    /// quantised types are compared against, and meant to replace, f32 runs.
    pub fn float_dtype(self) -> DType {
        match self {
            WeightType::F16 => DType::F16,
            _ => DType::F32,
        }
    }

    pub fn quantization(self) -> Option<QuantFormat> {
        match self {
            WeightType::Quantized(f) => Some(f),
            _ => None,
        }
    }
}

impl FromStr for WeightType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(WeightType::F32),
            "f16" => Ok(WeightType::F16),
            other => match other.parse::<QuantFormat>() {
                Ok(f) if f.packable() => Ok(WeightType::Quantized(f)),
                Ok(f) => Err(Error::dtype(
                    "--weight-type",
                    format!(
                        "kiln reads {f} weights from GGUF files but does not pack weights into it \
                         (expected f32, f16, q8_0, q4_0 or nf4)"
                    ),
                )),
                Err(_) => Err(Error::dtype(
                    "--weight-type",
                    format!("unknown weight type `{s}` (expected f32, f16, q8_0, q4_0 or nf4)"),
                )),
            },
        }
    }
}

impl fmt::Display for WeightType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightType::F32 => f.write_str("f32"),
            WeightType::F16 => f.write_str("f16"),
            WeightType::Quantized(q) => f.write_str(q.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_types_parse_and_unknown_ones_are_named() {
        assert_eq!(
            "nf4".parse::<WeightType>().unwrap().float_dtype(),
            DType::F32
        );
        assert_eq!(
            "Q8_0".parse::<WeightType>().unwrap().quantization(),
            Some(QuantFormat::Q8_0)
        );
        assert_eq!("f16".parse::<WeightType>().unwrap(), WeightType::F16);
        let err = "int3".parse::<WeightType>().unwrap_err().to_string();
        assert!(err.contains("`int3`") && err.contains("q4_0"), "{err}");
        let err = "q4_k".parse::<WeightType>().unwrap_err().to_string();
        assert!(err.contains("q4_k") && err.contains("GGUF"), "{err}");
    }
}
