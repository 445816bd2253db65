//! Weights from `.safetensors` files, memory-mapped so a tensor's bytes go from the page cache to the
//! device without a host copy of the whole file. bf16 (and, on request, f32<->f16) is converted one
//! tensor at a time.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
pub use safetensors::Dtype;
use safetensors::SafeTensors;

use crate::{DType, Device, Error, QTensor, QuantFormat, Result, Tensor};

/// `__metadata__` key prefix marking a packed tensor (`kiln quantize`): `kiln.packed.NAME` =
/// `FORMAT;D0,D1,...`, the format and the logical shape. The tensor itself is stored as U8: the
/// format's block bytes of the weight read as `[D0, D1 * D2 * ...]`, rows along the first dimension.
pub const PACKED_PREFIX: &str = "kiln.packed.";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// The dtype stored in the file, as safetensors names it ("F16", "BF16").
    pub stored: String,
    /// The logical shape (for a packed tensor, that of the weight, not of its bytes).
    pub shape: Vec<usize>,
    /// The block format of a packed tensor.
    pub packed: Option<QuantFormat>,
    /// Byte range within the file.
    pub start: usize,
    pub end: usize,
}

pub struct WeightFile {
    path: PathBuf,
    mmap: Mmap,
    entries: HashMap<String, TensorEntry>,
    metadata: HashMap<String, String>,
}

impl std::fmt::Debug for WeightFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WeightFile({}, {} tensors)",
            self.path.display(),
            self.entries.len()
        )
    }
}

impl WeightFile {
    pub fn open(path: impl AsRef<Path>) -> Result<WeightFile> {
        let path = path.as_ref().to_path_buf();
        let file =
            File::open(&path).map_err(|e| Error::load(&path, format!("cannot open: {e}")))?;
        // SAFETY: the mapping is read-only; a file changed underneath would give wrong weights, not
        // memory unsafety in this process beyond what reading a changing file gives.
        let mmap = unsafe { Mmap::map(&file) }
            .map_err(|e| Error::load(&path, format!("cannot map: {e}")))?;
        let (header_len, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| {
            Error::load(
                &path,
                format!("not a valid safetensors file ({} bytes): {e}", mmap.len()),
            )
        })?;
        let data_start = 8 + header_len;
        let entries = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let entry = TensorEntry {
                    stored: format!("{:?}", info.dtype),
                    shape: info.shape.clone(),
                    packed: None,
                    start: data_start + info.data_offsets.0,
                    end: data_start + info.data_offsets.1,
                };
                (name, entry)
            })
            .collect();
        let metadata = meta.metadata().clone().unwrap_or_default();
        let mut entries = entries;
        mark_packed(&path, &metadata, &mut entries)?;
        Ok(WeightFile {
            path,
            mmap,
            entries,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The file's free-form `__metadata__` strings.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn entry(&self, name: &str) -> Result<&TensorEntry> {
        self.entries.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
            close: close_names(name, self.entries.keys().map(String::as_str), 5),
        })
    }

    /// The raw stored bytes of a tensor, borrowed from the mapping.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let e = self.entry(name)?;
        Ok(&self.mmap[e.start..e.end])
    }

    /// A packed tensor's block bytes onto `device`, as they are (no repacking), as `[rows, K]` with
    /// rows the first dimension of its logical shape.
    pub fn load_packed(&self, name: &str, device: &Device) -> Result<QTensor> {
        let entry = self.entry(name)?;
        let Some(format) = entry.packed else {
            return Err(Error::load(
                &self.path,
                format!("tensor `{name}` {:?} is not packed", entry.shape),
            ));
        };
        QTensor::from_packed(
            device,
            format,
            &packed_matrix(&entry.shape),
            self.bytes(name)?,
        )
    }

    /// Loads a float tensor onto `device`. `want` picks the dtype (`None` keeps f32/f16 as stored and
    /// turns bf16 into f32); a dtype the device lacks falls back to f32.
    pub fn load(&self, name: &str, device: &Device, want: Option<DType>) -> Result<Tensor> {
        let shape = self.entry(name)?.shape.clone();
        self.load_part(name, 0, &shape, device, want)
    }

    /// Loads the `numel(shape)` consecutive elements of `name` that start at element `offset`, as a
    /// tensor of `shape`: a contiguous slice along the first dimension (one of OpenCLIP's fused q/k/v
    /// projections) or the whole tensor under another shape ([C, C, 1, 1] -> [C, C]). Same dtype
    /// rules as `load`.
    pub fn load_part(
        &self,
        name: &str,
        offset: usize,
        shape: &[usize],
        device: &Device,
        want: Option<DType>,
    ) -> Result<Tensor> {
        let entry = self.entry(name)?;
        let total: usize = entry.shape.iter().product();
        let count: usize = shape.iter().product();
        if offset.checked_add(count).is_none_or(|end| end > total) {
            return Err(Error::load(
                &self.path,
                format!(
                    "tensor `{name}` {:?} has {total} elements; elements {offset}..{} as {shape:?} are out of range",
                    entry.shape,
                    offset.saturating_add(count)
                ),
            ));
        }
        if let Some(format) = entry.packed {
            return Err(Error::load(
                &self.path,
                format!(
                    "tensor `{name}` {:?} is packed as {format}: it loads as a quantised weight, not as floats",
                    entry.shape
                ),
            ));
        }
        let stored = match entry.stored.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::F32,
            other => {
                return Err(Error::load(
                    &self.path,
                    format!(
                        "tensor `{name}` {:?} has dtype {other}; kiln loads F32, F16 and BF16",
                        entry.shape
                    ),
                ))
            }
        };
        // Every dtype accepted above is 4 (F32) or 2 (F16, BF16) bytes wide.
        let width = if entry.stored == "F32" { 4 } else { 2 };
        let start = entry.start + offset * width;
        let bytes = &self.mmap[start..start + count * width];
        let target = device.float_dtype(want.unwrap_or(stored));
        if entry.stored != "BF16" && target == stored {
            // The common path: straight from the mapping to the device.
            return Tensor::from_bytes(device, shape, target, bytes);
        }
        let values: Vec<f32> = match entry.stored.as_str() {
            "F32" => bytemuck::pod_collect_to_vec(bytes),
            "F16" => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        };
        Tensor::from_f32(device, shape, target, &values)
    }

    /// Like `load`, but checks the shape first and names the tensor, the expected and the found shape.
    pub fn load_shaped(
        &self,
        name: &str,
        shape: &[usize],
        device: &Device,
        want: Option<DType>,
    ) -> Result<Tensor> {
        let entry = self.entry(name)?;
        if entry.shape != shape {
            return Err(Error::load(
                &self.path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    entry.shape
                ),
            ));
        }
        self.load(name, device, want)
    }
}

/// The `[rows, K]` matrix a packed tensor of logical `shape` is stored as.
pub fn packed_matrix(shape: &[usize]) -> [usize; 2] {
    let rows = shape.first().copied().unwrap_or(1);
    [rows, shape.iter().skip(1).product()]
}

/// Applies the `kiln.packed.*` metadata: each named tensor gets its logical shape and format, after
/// checking that it exists, is U8 and holds exactly the bytes its format and shape need.
fn mark_packed(
    path: &Path,
    metadata: &HashMap<String, String>,
    entries: &mut HashMap<String, TensorEntry>,
) -> Result<()> {
    for (key, value) in metadata {
        let Some(name) = key.strip_prefix(PACKED_PREFIX) else {
            continue;
        };
        let corrupt =
            |msg: String| Error::load(path, format!("corrupt quantised tensor `{name}`: {msg}"));
        let entry = entries.get_mut(name).ok_or_else(|| {
            corrupt("the metadata marks it packed but the file has no such tensor".into())
        })?;
        let (format, dims) = value
            .split_once(';')
            .ok_or_else(|| corrupt(format!("metadata `{value}` is not FORMAT;SHAPE")))?;
        let format: QuantFormat = format.parse().map_err(|_| {
            Error::load(
                path,
                format!("tensor `{name}` is packed as `{format}`, which kiln does not read (q8_0, q4_0, nf4)"),
            )
        })?;
        let shape = dims
            .split(',')
            .map(|d| d.trim().parse::<usize>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| corrupt(format!("bad shape `{dims}` in its metadata")))?;
        if entry.stored != "U8" {
            return Err(corrupt(format!(
                "stored as {}, packed tensors are U8",
                entry.stored
            )));
        }
        let matrix = packed_matrix(&shape);
        let need = format
            .packed_bytes(name, &matrix)
            .map_err(|e| corrupt(e.to_string()))?;
        let have = entry.end - entry.start;
        if have != need {
            return Err(corrupt(format!(
                "{have} bytes stored, {format} {shape:?} needs {need}"
            )));
        }
        entry.shape = shape;
        entry.packed = Some(format);
    }
    Ok(())
}

/// Up to `n` names closest to `wanted`, by edit distance, for "did you mean" messages.
pub fn close_names<'a>(
    wanted: &str,
    names: impl Iterator<Item = &'a str>,
    n: usize,
) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = names
        .map(|name| (edit_distance(wanted, name), name))
        .collect();
    scored.sort_unstable();
    let limit = wanted.len().max(4) / 2;
    scored
        .into_iter()
        .filter(|(d, _)| *d <= limit)
        .take(n)
        .map(|(_, s)| s.to_string())
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(current + 1);
            prev = current;
        }
    }
    row[b.len()]
}

/// Writes tensors given as (name, dtype name, shape, bytes) to a safetensors file. Used by tests and
/// tools; the file is written to a temporary name and renamed so a failure leaves nothing behind.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
) -> Result<()> {
    write_safetensors_with_metadata(path, tensors, None)
}

/// `write_safetensors` with `__metadata__` strings.
pub fn write_safetensors_with_metadata(
    path: &Path,
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| Error::load(path, format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<_>>()?;
    let tmp = path.with_extension("safetensors.partial");
    safetensors::serialize_to_file(views, metadata, &tmp)
        .map_err(|e| Error::load(path, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::load(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_prefer_small_edits() {
        let names = [
            "unet.down.0.weight",
            "unet.down.1.weight",
            "vae.decoder.conv_in.bias",
        ];
        let close = close_names("unet.down.0.wieght", names.iter().copied(), 5);
        assert_eq!(close[0], "unet.down.0.weight");
        assert!(!close.iter().any(|n| n.starts_with("vae")));
    }

    #[test]
    fn load_part_reads_a_slice_under_a_new_shape() {
        let dir = std::env::temp_dir().join(format!("kiln-load-part-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        let values: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let halves: Vec<u8> = values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        let tensors = [
            (
                "qkv",
                Dtype::F32,
                vec![6, 2],
                bytemuck::cast_slice(&values).to_vec(),
            ),
            ("conv", Dtype::F16, vec![3, 4, 1, 1], halves),
        ];
        write_safetensors(&path, &tensors).unwrap();
        let file = WeightFile::open(&path).unwrap();
        let k = file
            .load_part("qkv", 4, &[2, 2], &Device::Cpu, None)
            .unwrap();
        assert_eq!(k.shape(), [2, 2]);
        assert_eq!(k.to_vec_f32().unwrap(), [4.0, 5.0, 6.0, 7.0]);
        let linear = file
            .load_part("conv", 0, &[3, 4], &Device::Cpu, Some(DType::F32))
            .unwrap();
        assert_eq!(linear.to_vec_f32().unwrap(), values);
        let row = file
            .load_part("conv", 4, &[4], &Device::Cpu, Some(DType::F32))
            .unwrap();
        assert_eq!(row.to_vec_f32().unwrap(), [4.0, 5.0, 6.0, 7.0]);
        let e = file
            .load_part("qkv", 10, &[2, 2], &Device::Cpu, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("qkv") && e.contains("out of range"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }

    fn packed_file(name: &str, meta: &str, bytes: Vec<u8>) -> Result<WeightFile> {
        let dir = std::env::temp_dir().join(format!("kiln-packed-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        let metadata = HashMap::from([(format!("{PACKED_PREFIX}w"), meta.to_string())]);
        let n = bytes.len();
        write_safetensors_with_metadata(&path, &[("w", Dtype::U8, vec![n], bytes)], Some(metadata))
            .unwrap();
        WeightFile::open(&path)
    }

    #[test]
    fn packed_tensors_load_as_stored_and_corrupt_ones_are_named() {
        // Two q8_0 rows of a [2, 32, 1, 1] 1x1 conv: 68 bytes.
        let bytes: Vec<u8> = (0..68).map(|i| i as u8).collect();
        let file = packed_file("ok", "q8_0;2,32,1,1", bytes.clone()).unwrap();
        let entry = file.entry("w").unwrap();
        assert_eq!(
            (entry.shape.as_slice(), entry.packed),
            (&[2, 32, 1, 1][..], Some(QuantFormat::Q8_0))
        );
        let q = file.load_packed("w", &Device::Cpu).unwrap();
        assert_eq!(q.shape(), &[2, 32]);
        assert_eq!(q.to_packed_bytes().unwrap(), bytes);
        let e = file.load("w", &Device::Cpu, None).unwrap_err().to_string();
        assert!(e.contains("`w`") && e.contains("packed as q8_0"), "{e}");

        let e = packed_file("short", "q8_0;2,32,1,1", bytes[..60].to_vec())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("corrupt quantised tensor `w`")
                && e.contains("60 bytes")
                && e.contains("68"),
            "{e}"
        );
        let e = packed_file("fmt", "iq4_xs;2,32", bytes.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`w` is packed as `iq4_xs`"), "{e}");
        let e = packed_file("shape", "q8_0;2,x", bytes.clone())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("corrupt quantised tensor `w`") && e.contains("bad shape"),
            "{e}"
        );
        let e = packed_file("k", "q8_0;4,17", bytes)
            .unwrap_err()
            .to_string();
        assert!(e.contains("block size 32"), "{e}");
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
