//! Rewriting a model with its layer weights packed (`kiln quantize`), shared by both model
//! families: a `CaptureSource` records which tensors a model's layers packed while the model is
//! built the usual way with a quantising `Weights`, then writes every file of the checkpoint with
//! those tensors packed (U8 block bytes plus a `kiln.packed.NAME = FORMAT;SHAPE` metadata string,
//! see `kiln_runtime::loader::PACKED_PREFIX`) and every other tensor copied byte for byte, under
//! the stored names, so the files load back with no quantising at load.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_runtime::loader::{write_safetensors_with_metadata, Dtype, WeightFile, PACKED_PREFIX};
use kiln_runtime::{Device, Error, QTensor, QuantFormat, Result};

use super::source::{FileSource, TensorSource};

/// What a conversion did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuantizeReport {
    /// Tensors written packed.
    pub packed: usize,
    /// Tensors copied as they were.
    pub copied: usize,
    /// Bytes of tensor data read and written.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Weight files whose packing requests are recorded by stored name.
pub struct CaptureSource {
    files: FileSource,
    packed: Mutex<BTreeMap<String, QTensor>>,
}

impl CaptureSource {
    pub fn open(paths: &[PathBuf]) -> Result<CaptureSource> {
        Ok(CaptureSource {
            files: FileSource::new(paths.iter().map(WeightFile::open).collect::<Result<_>>()?),
            packed: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn files(&self) -> &[WeightFile] {
        self.files.files()
    }

    /// Writes file `index` to `output`: the packed tensors as recorded, the rest as stored.
    pub fn write(&self, index: usize, output: &Path, report: &mut QuantizeReport) -> Result<()> {
        let file = &self.files()[index];
        let packed = self.packed.lock().map(|p| p.clone()).unwrap_or_default();
        let mut metadata: HashMap<String, String> = file.metadata().clone();
        let mut tensors = Vec::new();
        for name in file.names() {
            let entry = file.entry(name)?;
            let stored = file.bytes(name)?;
            report.bytes_in += stored.len() as u64;
            let (dtype, shape, bytes) = if let Some(q) = packed.get(name) {
                metadata.insert(
                    format!("{PACKED_PREFIX}{name}"),
                    packed_meta(q.format(), &entry.shape),
                );
                report.packed += 1;
                let bytes = q.to_packed_bytes()?;
                (Dtype::U8, vec![bytes.len()], bytes)
            } else {
                report.copied += 1;
                let shape = match entry.packed {
                    Some(_) => vec![stored.len()],
                    None => entry.shape.clone(),
                };
                (
                    safetensors_dtype(output, name, &entry.stored)?,
                    shape,
                    stored.to_vec(),
                )
            };
            report.bytes_out += bytes.len() as u64;
            tensors.push((name, dtype, shape, bytes));
        }
        let metadata = (!metadata.is_empty()).then_some(metadata);
        write_safetensors_with_metadata(output, &tensors, metadata)?;
        Ok(())
    }
}

impl TensorSource for CaptureSource {
    fn inner(&self) -> Option<&dyn TensorSource> {
        Some(&self.files)
    }

    fn load_quantized(
        &self,
        name: &str,
        expected: &[usize],
        matrix: [usize; 2],
        format: QuantFormat,
        device: &Device,
    ) -> Result<QTensor> {
        let q = self
            .files
            .load_quantized(name, expected, matrix, format, device)?;
        if let Ok(mut packed) = self.packed.lock() {
            packed.insert(name.to_string(), q.clone());
        }
        Ok(q)
    }
}

fn packed_meta(format: QuantFormat, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("{format};{}", dims.join(","))
}

fn safetensors_dtype(output: &Path, name: &str, stored: &str) -> Result<Dtype> {
    Ok(match stored {
        "F64" => Dtype::F64,
        "F32" => Dtype::F32,
        "F16" => Dtype::F16,
        "BF16" => Dtype::BF16,
        "I64" => Dtype::I64,
        "I32" => Dtype::I32,
        "I16" => Dtype::I16,
        "I8" => Dtype::I8,
        "U8" => Dtype::U8,
        "BOOL" => Dtype::BOOL,
        other => {
            return Err(Error::load(
                output,
                format!("tensor `{name}` has dtype {other}, which kiln quantize cannot copy"),
            ))
        }
    })
}

/// Where a folder conversion is built before it is renamed into place: `OUTPUT.partial`.
pub fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

/// Copies a folder recursively.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let err = |p: &Path, e: std::io::Error| Error::load(p, format!("cannot copy: {e}"));
    std::fs::create_dir_all(to).map_err(|e| err(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| err(from, e))? {
        let entry = entry.map_err(|e| err(from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| err(&src, e))?;
        }
    }
    Ok(())
}

/// Builds a folder conversion in `OUTPUT.partial` with `fill` (given the partial folder, after
/// `input` was copied into it) and renames it into place; nothing is left on failure.
pub fn convert_folder<E: From<Error>>(
    input: &Path,
    output: &Path,
    fill: impl FnOnce(&Path) -> std::result::Result<QuantizeReport, E>,
) -> std::result::Result<QuantizeReport, E> {
    if output.exists() {
        return Err(Error::load(output, "already exists; kiln quantize does not overwrite").into());
    }
    let partial = partial_path(output);
    let _ = std::fs::remove_dir_all(&partial);
    let result = (|| {
        copy_dir(input, &partial)?;
        let report = fill(&partial)?;
        std::fs::rename(&partial, output)
            .map_err(|e| Error::load(output, format!("cannot create: {e}")))?;
        Ok(report)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}
