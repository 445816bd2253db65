//! A `TensorSource` over a GGUF file. As stable-diffusion.cpp writes SD 1.x / 2.x models the
//! names are the original checkpoint's (so it goes through `SingleFile` like a `.safetensors`
//! checkpoint); a llama.cpp LLM's names (`blk.0.attn_q.weight`) are mapped from the names kiln's
//! builders ask for with [`GgufSource::renamed`], each optionally with its rows reordered (llama.cpp
//! permutes Q/K rows for its RoPE layout; a permutation of whole rows reorders packed rows without
//! unpacking them, as every row is whole blocks). Tensors of a ggml block type kiln reads (Q4_0, Q4_1,
//! Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K) load as packed weights without repacking, F32 / F16 / BF16 as
//! floats; a packed tensor asked for as floats (an embedding) is dequantised on the host.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln_kernels::quant::dequantize;
use kiln_runtime::gguf::{GgufFile, GgufTensor, GgufType};
use kiln_runtime::loader::{close_names, packed_matrix};
use kiln_runtime::{DType, Device, Error, QTensor, Result, Tensor};

use super::{wrong_shape, TensorSource};

/// Where a name kiln asks for is stored in a GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufName {
    /// The stored tensor's name.
    pub stored: String,
    /// Row `i` of the tensor kiln sees is stored row `rows[i]`; `None`: rows as stored.
    pub rows: Option<Vec<usize>>,
}

impl GgufName {
    pub fn new(stored: impl Into<String>) -> GgufName {
        GgufName {
            stored: stored.into(),
            rows: None,
        }
    }

    pub fn with_rows(stored: impl Into<String>, rows: Vec<usize>) -> GgufName {
        GgufName {
            stored: stored.into(),
            rows: Some(rows),
        }
    }
}

pub struct GgufSource {
    file: GgufFile,
    /// `None`: names as stored. `Some`: only these names, each read from its stored tensor.
    names: Option<HashMap<String, GgufName>>,
}

impl GgufSource {
    pub fn open(path: &Path) -> Result<GgufSource> {
        Ok(GgufSource::new(GgufFile::open(path)?))
    }

    /// The file's tensors under their stored names.
    pub fn new(file: GgufFile) -> GgufSource {
        GgufSource { file, names: None }
    }

    /// The file's tensors under the names of `names` only. Each stored tensor must exist, and a
    /// row order must be a permutation (checked against the tensor's rows when it loads, after its
    /// shape, so a tensor of the wrong shape is reported as that).
    pub fn renamed(file: GgufFile, names: HashMap<String, GgufName>) -> Result<GgufSource> {
        for (name, entry) in &names {
            if file.tensor(&entry.stored).is_none() {
                return Err(Error::MissingTensor {
                    path: file.path().to_path_buf(),
                    name: entry.stored.clone(),
                    close: close_names(&entry.stored, file.names().into_iter(), 5),
                });
            }
            if let Some(rows) = &entry.rows {
                let mut seen = vec![false; rows.len()];
                if !rows
                    .iter()
                    .all(|&r| r < rows.len() && !std::mem::replace(&mut seen[r], true))
                {
                    return Err(Error::load(
                        file.path(),
                        format!(
                            "the row order for `{}` (read as `{name}`) is not a permutation",
                            entry.stored
                        ),
                    ));
                }
            }
        }
        Ok(GgufSource {
            file,
            names: Some(names),
        })
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// An error about one tensor's data, naming the file, the tensor and its type.
    fn tensor_error(&self, what: &str, t: &GgufTensor, e: Error) -> Error {
        Error::load(
            self.origin(),
            format!("tensor {what} {:?} ({}): {e}", t.shape, t.kind.name()),
        )
    }

    /// The stored tensor behind `name`.
    fn resolve<'a>(&'a self, name: &'a str) -> Option<Stored<'a>> {
        let (stored, rows) = match &self.names {
            None => (name, None),
            Some(names) => {
                let entry = names.get(name)?;
                (entry.stored.as_str(), entry.rows.as_deref())
            }
        };
        let tensor = self.file.tensor(stored)?;
        let what = match &self.names {
            None => format!("`{name}`"),
            Some(_) => format!("`{stored}` (read as `{name}`)"),
        };
        Some(Stored {
            tensor,
            name: stored,
            what,
            rows,
        })
    }

    fn tensor<'a>(&'a self, name: &'a str) -> Result<Stored<'a>> {
        self.resolve(name).ok_or_else(|| self.missing(name))
    }

    /// The tensor's bytes with its rows in the order kiln sees them.
    fn bytes<'a>(&'a self, s: &Stored<'a>) -> Result<Cow<'a, [u8]>> {
        let stored = self.file.bytes(s.name).unwrap_or_default();
        let Some(rows) = s.rows else {
            return Ok(Cow::Borrowed(stored));
        };
        let n = s.tensor.shape.first().copied().unwrap_or(0);
        if rows.len() != n || n == 0 || !stored.len().is_multiple_of(n) {
            return Err(Error::load(
                self.origin(),
                format!(
                    "tensor {} {:?}: its rows cannot be reordered as {} rows",
                    s.what,
                    s.tensor.shape,
                    rows.len()
                ),
            ));
        }
        let row = stored.len() / n;
        let mut out = Vec::with_capacity(stored.len());
        for &r in rows {
            out.extend_from_slice(&stored[r * row..(r + 1) * row]);
        }
        Ok(Cow::Owned(out))
    }
}

/// A stored tensor found for a name: the tensor, its stored name, how messages name it, and the
/// row order kiln reads it in.
struct Stored<'a> {
    tensor: &'a GgufTensor,
    name: &'a str,
    what: String,
    rows: Option<&'a [usize]>,
}

impl TensorSource for GgufSource {
    fn origin(&self) -> PathBuf {
        self.file.path().to_path_buf()
    }

    fn names(&self) -> Vec<String> {
        match &self.names {
            None => self.file.names().into_iter().map(str::to_string).collect(),
            Some(names) => {
                let mut list: Vec<String> = names.keys().cloned().collect();
                list.sort_unstable();
                list
            }
        }
    }

    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.resolve(name).map(|s| s.tensor.shape.clone())
    }

    fn load(
        &self,
        name: &str,
        expected: Option<&[usize]>,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let s = self.tensor(name)?;
        let shape = s.tensor.shape.clone();
        if let Some(expected) = expected.filter(|e| *e != shape.as_slice()) {
            return Err(wrong_shape(self.origin(), &s.what, &shape, expected));
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
        let s = self.tensor(name)?;
        let (t, what) = (s.tensor, &s.what);
        let count: usize = shape.iter().product();
        let total: usize = t.shape.iter().product();
        if offset + count > total {
            return Err(Error::load(
                self.origin(),
                format!(
                    "tensor {what} {:?}: elements {offset}..{} are out of range",
                    t.shape,
                    offset + count
                ),
            ));
        }
        let bytes = self.bytes(&s)?;
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
                    dequantize(format, blocks).map_err(|e| self.tensor_error(what, t, e))?;
                values[offset - first * bl..][..count].to_vec()
            }
            GgufType::Other(_) => {
                return Err(Error::load(
                    self.origin(),
                    format!(
                        "tensor {what} {:?} has type {}, not a float weight",
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
        let Some(s) = self.resolve(name) else {
            return Ok(None);
        };
        let t = s.tensor;
        let GgufType::Packed(format) = t.kind else {
            return Ok(None);
        };
        if t.shape != expected {
            return Err(wrong_shape(self.origin(), &s.what, &t.shape, expected));
        }
        let bytes = self.bytes(&s)?;
        let packed = QTensor::from_packed(device, format, &packed_matrix(&t.shape), &bytes)
            .map_err(|e| self.tensor_error(&s.what, t, e))?;
        self.file.release(s.name);
        Ok(Some(packed))
    }

    fn missing(&self, name: &str) -> Error {
        let names = self.names();
        Error::MissingTensor {
            path: self.origin(),
            name: name.to_string(),
            close: close_names(name, names.iter().map(String::as_str), 5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_runtime::gguf::write_gguf;
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

    #[test]
    fn renamed_tensors_read_with_their_rows_reordered() {
        let dir = std::env::temp_dir().join(format!("kiln-gguf-renamed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.gguf");
        let f32s: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
        // Two Q8_0 rows of 32: row r has scale 1 (f16 0x3C00) and quants all r + 1.
        let q8: Vec<u8> = (0..2u8)
            .flat_map(|r| {
                [0x00, 0x3C]
                    .into_iter()
                    .chain(std::iter::repeat_n(r + 1, 32))
            })
            .collect();
        write_gguf(
            &path,
            &[
                ("a", vec![4, 2], 0, f32s),
                ("q", vec![2, 32], 8, q8.clone()),
            ],
        )
        .unwrap();
        let names = HashMap::from([
            (
                "x.weight".to_string(),
                GgufName::with_rows("a", vec![2, 0, 3, 1]),
            ),
            ("y.weight".to_string(), GgufName::with_rows("q", vec![1, 0])),
            ("z.weight".to_string(), GgufName::new("q")),
        ]);
        let src = GgufSource::renamed(GgufFile::open(&path).unwrap(), names).unwrap();
        assert_eq!(src.names(), ["x.weight", "y.weight", "z.weight"]);
        assert_eq!(src.shape_of("x.weight"), Some(vec![4, 2]));
        assert_eq!(src.shape_of("a"), None);
        let x = src
            .load("x.weight", Some(&[4, 2]), &Device::Cpu, DType::F32)
            .unwrap();
        assert_eq!(x.to_vec_f32().unwrap(), [4., 5., 0., 1., 6., 7., 2., 3.]);
        // Packed rows move whole, and unpack to the same floats.
        let y = src
            .load_packed("y.weight", &[2, 32], &Device::Cpu)
            .unwrap()
            .unwrap();
        let mut swapped = q8[34..].to_vec();
        swapped.extend_from_slice(&q8[..34]);
        let words = y.words().to_vec_u32().unwrap();
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(&bytes[..68], swapped.as_slice());
        let yf = src
            .load("y.weight", None, &Device::Cpu, DType::F32)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        assert_eq!((yf[0], yf[32]), (2.0, 1.0));
        // Errors name the stored tensor and the name asked for.
        let e = src
            .load("x.weight", Some(&[2, 4]), &Device::Cpu, DType::F32)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`a` (read as `x.weight`)") && e.contains("[4, 2]"),
            "{e}"
        );
        let short = HashMap::from([("x".to_string(), GgufName::with_rows("a", vec![1, 0]))]);
        let src = GgufSource::renamed(GgufFile::open(&path).unwrap(), short).unwrap();
        let e = src
            .load("x", None, &Device::Cpu, DType::F32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be reordered as 2 rows"), "{e}");
        let bad = HashMap::from([("x".to_string(), GgufName::with_rows("a", vec![0, 0, 1, 2]))]);
        let e = GgufSource::renamed(GgufFile::open(&path).unwrap(), bad)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a permutation"), "{e}");
        let gone = HashMap::from([("x".to_string(), GgufName::new("nope"))]);
        assert!(GgufSource::renamed(GgufFile::open(&path).unwrap(), gone).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
