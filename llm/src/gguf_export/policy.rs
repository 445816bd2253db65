//! Which ggml type each tensor of a Llama-architecture GGUF gets, as llama.cpp's `llama-quantize`
//! chooses it (`llama_tensor_get_type` in src/llama-quant.cpp, llama.cpp 0c1e57098bba) for the three
//! file types kiln writes, with no importance matrix and no overrides, for dense models:
//!
//! - Only 2-D tensors whose names end in `weight` and are not norms are quantised; 1-D tensors
//!   (norms) stay F32, as the converter writes them.
//! - `output.weight`, and `token_embd.weight` when there is no `output.weight` (tied embeddings):
//!   Q8_0 for `q8_0`, else Q6_K, or Q8_0 when its rows are not whole 256-weight blocks.
//! - `q4_k_m` (LLAMA_FTYPE_MOSTLY_Q4_K_M, default Q4_K): `attn_v` and `ffn_down` of layer i are
//!   Q6_K where `use_more_bits(i, n)`: i < n/8, i >= 7n/8, or (i - n/8) % 3 == 2; everything else
//!   Q4_K (an untied `token_embd` too). llama.cpp's 70B rule (80 layers with GQA: attn_v Q4_K ->
//!   Q5_K) needs a q5_K quantiser kiln does not have: such models are refused.
//! - `q6_k`: every quantised tensor Q6_K. `q8_0`: every one Q8_0.
//! - Rows that are not whole blocks fall back: Q4_K -> Q5_0, Q6_K -> Q8_0, and to F16 when even
//!   32-weight blocks do not fit.
//!
//! llama.cpp counts `attn_v` and `ffn_down` tensors in layer order; for a dense model the count is
//! the layer index, which is what is used here.

use kiln_runtime::{Error, QuantFormat, Result};

/// A `kiln quantize --type` that writes GGUF files: llama.cpp's file types of the same names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufMix {
    Q4KM,
    Q6K,
    Q8_0,
}

impl GgufMix {
    pub const NAMES: [&'static str; 3] = ["q4_k_m", "q6_k", "q8_0"];

    pub fn parse(s: &str) -> Option<GgufMix> {
        match s.to_ascii_lowercase().as_str() {
            "q4_k_m" => Some(GgufMix::Q4KM),
            "q6_k" => Some(GgufMix::Q6K),
            "q8_0" => Some(GgufMix::Q8_0),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GgufMix::Q4KM => "q4_k_m",
            GgufMix::Q6K => "q6_k",
            GgufMix::Q8_0 => "q8_0",
        }
    }

    /// `general.file_type` (`enum llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            GgufMix::Q8_0 => 7,
            GgufMix::Q4KM => 15,
            GgufMix::Q6K => 18,
        }
    }

    fn default_format(self) -> QuantFormat {
        match self {
            GgufMix::Q4KM => QuantFormat::Q4K,
            GgufMix::Q6K => QuantFormat::Q6K,
            GgufMix::Q8_0 => QuantFormat::Q8_0,
        }
    }
}

/// How one tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    Packed(QuantFormat),
}

impl TensorType {
    pub fn ggml_type(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            // Every format the policy picks has a ggml id.
            TensorType::Packed(f) => f.ggml_type().unwrap_or(u32::MAX),
        }
    }

    pub fn name(self) -> String {
        match self {
            TensorType::F32 => "F32".into(),
            TensorType::F16 => "F16".into(),
            TensorType::Packed(f) => f.name().to_ascii_uppercase(),
        }
    }
}

/// What the policy needs to know of the model.
#[derive(Clone, Copy, Debug)]
pub struct ModelShape {
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// The file has no `output.weight`.
    pub tied: bool,
}

/// llama.cpp's `use_more_bits`.
pub fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The type of GGUF tensor `name` of `shape` (PyTorch order: the last dimension is the row).
pub fn tensor_type(
    mix: GgufMix,
    model: &ModelShape,
    name: &str,
    shape: &[usize],
) -> Result<TensorType> {
    if shape.len() < 2 || !name.ends_with("weight") || name.contains("_norm.weight") {
        return Ok(TensorType::F32);
    }
    let cols = shape[shape.len() - 1];
    let default = mix.default_format();
    let is_output = name == "output.weight" || (model.tied && name == "token_embd.weight");
    let mut format = default;
    if is_output {
        format = if !cols.is_multiple_of(default.block_len()) || default == QuantFormat::Q8_0 {
            QuantFormat::Q8_0
        } else {
            QuantFormat::Q6K
        };
    } else if mix == GgufMix::Q4KM {
        let layer = layer_of(name);
        if name.contains("attn_v.weight") {
            let i = layer.ok_or_else(|| no_layer(name))?;
            if use_more_bits(i, model.layers) {
                format = QuantFormat::Q6K;
            } else if model.layers == 80 && model.heads != model.kv_heads {
                return Err(Error::dtype(
                    "quantize",
                    format!(
                        "`{name}`: llama.cpp gives a 70B-class model's attn_v q5_K in q4_k_m, \
                         and kiln has no q5_K quantiser; use --type q6_k or q8_0"
                    ),
                ));
            }
        } else if name.contains("ffn_down") {
            let i = layer.ok_or_else(|| no_layer(name))?;
            if use_more_bits(i, model.layers) {
                format = QuantFormat::Q6K;
            }
        }
    }
    if cols.is_multiple_of(format.block_len()) {
        return Ok(TensorType::Packed(format));
    }
    let fallback = match format {
        QuantFormat::Q4K => QuantFormat::Q5_0,
        QuantFormat::Q6K => QuantFormat::Q8_0,
        other => other,
    };
    Ok(if cols.is_multiple_of(fallback.block_len()) {
        TensorType::Packed(fallback)
    } else {
        TensorType::F16
    })
}

fn no_layer(name: &str) -> Error {
    Error::dtype("quantize", format!("`{name}` has no `blk.N.` layer index"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENSE: ModelShape = ModelShape {
        layers: 32,
        heads: 32,
        kv_heads: 8,
        tied: false,
    };

    #[test]
    fn use_more_bits_matches_llama_cpp_for_32_layers() {
        // n/8 = 4: layers 0..4, 28..32, and every third from 6.
        let more: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(
            more,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        );
        let more: Vec<usize> = (0..2).filter(|&i| use_more_bits(i, 2)).collect();
        assert_eq!(more, [1]);
    }

    #[test]
    fn q4_k_m_types() {
        let t =
            |name: &str, shape: &[usize]| tensor_type(GgufMix::Q4KM, &DENSE, name, shape).unwrap();
        let q = TensorType::Packed;
        assert_eq!(t("output.weight", &[32000, 4096]), q(QuantFormat::Q6K));
        assert_eq!(t("token_embd.weight", &[32000, 4096]), q(QuantFormat::Q4K));
        assert_eq!(t("output_norm.weight", &[4096]), TensorType::F32);
        assert_eq!(t("blk.0.attn_norm.weight", &[4096]), TensorType::F32);
        assert_eq!(t("blk.3.attn_v.weight", &[1024, 4096]), q(QuantFormat::Q6K));
        assert_eq!(t("blk.4.attn_v.weight", &[1024, 4096]), q(QuantFormat::Q4K));
        assert_eq!(
            t("blk.6.ffn_down.weight", &[4096, 14336]),
            q(QuantFormat::Q6K)
        );
        assert_eq!(
            t("blk.7.ffn_down.weight", &[4096, 14336]),
            q(QuantFormat::Q4K)
        );
        assert_eq!(t("blk.7.attn_q.weight", &[4096, 4096]), q(QuantFormat::Q4K));
        // Rows of 96: Q4_K -> Q5_0, Q6_K -> Q8_0; rows of 40: F16.
        assert_eq!(t("blk.7.attn_q.weight", &[64, 96]), q(QuantFormat::Q5_0));
        assert_eq!(t("blk.0.ffn_down.weight", &[64, 96]), q(QuantFormat::Q8_0));
        assert_eq!(t("output.weight", &[100, 96]), q(QuantFormat::Q8_0));
        assert_eq!(t("blk.7.attn_q.weight", &[64, 40]), TensorType::F16);
        let tied = ModelShape {
            tied: true,
            ..DENSE
        };
        let e = |name: &str| tensor_type(GgufMix::Q4KM, &tied, name, &[32000, 4096]).unwrap();
        assert_eq!(e("token_embd.weight"), q(QuantFormat::Q6K));
        let big = ModelShape {
            layers: 80,
            ..DENSE
        };
        let err = tensor_type(GgufMix::Q4KM, &big, "blk.11.attn_v.weight", &[1024, 8192])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blk.11.attn_v.weight") && err.contains("q5_K"),
            "{err}"
        );
    }

    #[test]
    fn q6_k_and_q8_0_types() {
        let q = TensorType::Packed;
        let t = |mix, name: &str, shape: &[usize]| tensor_type(mix, &DENSE, name, shape).unwrap();
        assert_eq!(
            t(GgufMix::Q6K, "output.weight", &[32000, 4096]),
            q(QuantFormat::Q6K)
        );
        assert_eq!(
            t(GgufMix::Q6K, "blk.4.attn_v.weight", &[1024, 4096]),
            q(QuantFormat::Q6K)
        );
        assert_eq!(
            t(GgufMix::Q6K, "token_embd.weight", &[32000, 96]),
            q(QuantFormat::Q8_0)
        );
        assert_eq!(
            t(GgufMix::Q8_0, "output.weight", &[32000, 4096]),
            q(QuantFormat::Q8_0)
        );
        assert_eq!(
            t(GgufMix::Q8_0, "blk.1.ffn_down.weight", &[64, 48]),
            TensorType::F16
        );
        assert_eq!(
            (
                GgufMix::Q4KM.file_type(),
                GgufMix::Q6K.file_type(),
                GgufMix::Q8_0.file_type()
            ),
            (15, 18, 7)
        );
        assert_eq!(GgufMix::parse("Q4_K_M"), Some(GgufMix::Q4KM));
        assert_eq!(GgufMix::parse("q4_k"), None);
    }
}
