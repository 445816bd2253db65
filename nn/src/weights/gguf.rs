//! A `TensorSource` over a GGUF file, as stable-diffusion.cpp writes SD 1.x / 2.x models: the
//! original checkpoint's tensor names (so it goes through `SingleFile` like a `.safetensors`
//! checkpoint), and llama.cpp's LLM files. Tensors of a ggml block type kiln reads (Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0, Q2_K .. Q6_K) load as packed weights without repacking, F32 / F16 / BF16 as floats;
//! a packed tensor asked for as floats (an embedding) is dequantised on the host.

use std::path::{Path, PathBuf};

use kiln_kernels::quant::dequantize;
use kiln_runtime::gguf::{GgufFile, GgufTensor, GgufType};
use kiln_runtime::loader::{close_names, packed_matrix};
use kiln_runtime::{DType, Device, Error, QTensor, Result, Tensor};

use super::{wrong_shape, TensorSource};

pub struct GgufSource {
    file: GgufFile,
}

impl GgufSource {
    pub fn open(path: &Path) -> Result<GgufSource> {
        Ok(GgufSource {
            file: GgufFile::open(path)?,
        })
    }

    fn tensor(&self, name: &str) -> Result<&GgufTensor> {
        self.file.tensor(name).ok_or_else(|| self.missing(name))
    }

    /// An error about one tensor's data, naming the file, the tensor and its type.
    fn tensor_error(&self, name: &str, t: &GgufTensor, e: Error) -> Error {
        Error::load(
            self.origin(),
            format!("tensor `{name}` {:?} ({}): {e}", t.shape, t.kind.name()),
        )
    }
}

impl TensorSource for GgufSource {
    fn origin(&self) -> PathBuf {
        self.file.path().to_path_buf()
    }

    fn names(&self) -> Vec<String> {
        self.file.names().into_iter().map(str::to_string).collect()
    }

    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.file.tensor(name).map(|t| t.shape.clone())
    }

    fn load(
        &self,
        name: &str,
        expected: Option<&[usize]>,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let shape = self.tensor(name)?.shape.clone();
        if let Some(expected) = expected.filter(|e| *e != shape.as_slice()) {
            return Err(wrong_shape(
                self.origin(),
                &format!("`{name}`"),
                &shape,
                expected,
            ));
        }
        self.load_part(name, 0, &shape, device, dtype)
    }

    fn load_part(
        &self,
        name: &str,
        offset: usize,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let t = self.tensor(name)?;
        let bytes = self.file.bytes(name).unwrap_or_default();
        let count: usize = shape.iter().product();
        let total: usize = t.shape.iter().product();
        if offset + count > total {
            return Err(Error::load(
                self.origin(),
                format!(
                    "tensor `{name}` {:?}: elements {offset}..{} are out of range",
                    t.shape,
                    offset + count
                ),
            ));
        }
        let values: Vec<f32> = match t.kind {
            GgufType::F32 => bytes[offset * 4..(offset + count) * 4]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            GgufType::F16 => {
                let halves = &bytes[offset * 2..(offset + count) * 2];
                Tensor::from_bytes(&Device::Cpu, &[count], DType::F16, halves)?.to_vec_f32()?
            }
            // bf16 is the top half of an f32.
            GgufType::Bf16 => bytes[offset * 2..(offset + count) * 2]
                .chunks_exact(2)
                .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
                .collect(),
            // A packed tensor asked for as floats (an embedding, a norm): the blocks holding the
            // asked-for elements unpacked on the host.
            GgufType::Packed(format) => {
                let (bl, bb) = (format.block_len(), format.block_bytes());
                let (first, end) = (offset / bl, (offset + count).div_ceil(bl));
                let blocks = bytes.get(first * bb..end * bb).unwrap_or_default();
                let values =
                    dequantize(format, blocks).map_err(|e| self.tensor_error(name, t, e))?;
                values[offset - first * bl..][..count].to_vec()
            }
            GgufType::Other(_) => {
                return Err(Error::load(
                    self.origin(),
                    format!(
                        "tensor `{name}` {:?} has type {}, not a float weight",
                        t.shape,
                        t.kind.name()
                    ),
                ))
            }
        };
        Tensor::from_f32(device, shape, device.float_dtype(dtype), &values)
    }

    fn load_packed(
        &self,
        name: &str,
        expected: &[usize],
        device: &Device,
    ) -> Result<Option<QTensor>> {
        let Some(t) = self.file.tensor(name) else {
            return Ok(None);
        };
        let GgufType::Packed(format) = t.kind else {
            return Ok(None);
        };
        if t.shape != expected {
            return Err(wrong_shape(
                self.origin(),
                &format!("`{name}`"),
                &t.shape,
                expected,
            ));
        }
        let bytes = self.file.bytes(name).unwrap_or_default();
        QTensor::from_packed(device, format, &packed_matrix(&t.shape), bytes)
            .map(Some)
            .map_err(|e| self.tensor_error(name, t, e))
    }

    fn missing(&self, name: &str) -> Error {
        let names = self.file.names();
        Error::MissingTensor {
            path: self.origin(),
            name: name.to_string(),
            close: close_names(name, names.into_iter(), 5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_runtime::QuantFormat;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../tests/fixtures/ggml-quants/{name}.gguf"))
    }

    #[test]
    fn llama_quantize_files_load_as_packed_weights_and_as_floats() {
        // Files written by llama.cpp's llama-quantize (tools/make_ggml_quant_fixtures.py).
        for (name, format, k) in [
            ("q4_k", QuantFormat::Q4K, 256),
            ("q6_k", QuantFormat::Q6K, 256),
            ("q5_0", QuantFormat::Q5_0, 64),
        ] {
            let src = GgufSource::open(&fixture(name)).unwrap();
            let golden = GgufSource::open(&fixture(&format!("{name}.golden"))).unwrap();
            let q = src
                .load_packed("a.weight", &[7, k], &Device::Cpu)
                .unwrap()
                .unwrap();
            assert_eq!((q.format(), q.shape()), (format, &[7, k][..]));
            assert_eq!(
                q.to_packed_bytes().unwrap(),
                src.file.bytes("a.weight").unwrap()
            );
            let floats = src
                .load("a.weight", Some(&[7, k]), &Device::Cpu, DType::F32)
                .unwrap()
                .to_vec_f32()
                .unwrap();
            let want = golden
                .load("a.weight", None, &Device::Cpu, DType::F32)
                .unwrap()
                .to_vec_f32()
                .unwrap();
            assert!(
                floats
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}"
            );
            // Rows 2..4 as a slice of the flat tensor (an embedding lookup's path).
            let part = src
                .load_part("a.weight", 2 * k, &[2, k], &Device::Cpu, DType::F32)
                .unwrap()
                .to_vec_f32()
                .unwrap();
            assert_eq!(part, want[2 * k..4 * k]);
            // A run that starts and ends inside blocks.
            let part = src
                .load_part("a.weight", 2 * k + 5, &[300], &Device::Cpu, DType::F32)
                .unwrap()
                .to_vec_f32()
                .unwrap();
            assert_eq!(part, want[2 * k + 5..2 * k + 305]);
            let err = src
                .load_packed("a.weight", &[8, k], &Device::Cpu)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("a.weight") && err.contains("[7, "), "{err}");
        }
    }
}
