//! `kiln quantize`: a model rewritten with its layer weights packed, so it loads back with no
//! quantising at load (packed tensors go from the file to the device as they are).
//!
//! Which tensors get packed is decided by loading the model the usual way with a quantising
//! `Weights` and recording what the layers packed: the file then holds exactly what `--weight-type`
//! would have made, under the stored names (a single file's original-layout names included). Every
//! other tensor is copied byte for byte. Packed tensors are U8 block bytes plus a
//! `kiln.packed.NAME = FORMAT;SHAPE` metadata string (see `kiln_runtime::loader::PACKED_PREFIX`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_runtime::loader::{write_safetensors_with_metadata, Dtype, WeightFile, PACKED_PREFIX};
use kiln_runtime::{DType, Device, QTensor, QuantFormat};

use super::error::{PipelineError, Result};
use super::load::{config_file, weights_file};
use crate::clip::{ClipTextConfig, ClipTextModel};
use crate::single_file::{refuse_pickles, SingleFile};
use crate::unet::{Unet, UnetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
use kiln_nn::weights::{FileSource, TensorSource, Weights};

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

/// Converts the model at `input` (a diffusers folder, written as a folder, or a single-file
/// `.safetensors`, written as one file) to `output`, packing layer weights as `format`. Nothing is
/// left at `output` on failure.
pub fn quantize_model(input: &Path, output: &Path, format: QuantFormat) -> Result<QuantizeReport> {
    if !input.exists() {
        return Err(PipelineError::model(input, "no such file or folder"));
    }
    if output.exists() {
        return Err(PipelineError::model(
            output,
            "already exists; kiln quantize does not overwrite",
        ));
    }
    if input.is_dir() {
        quantize_folder(input, output, format)
    } else {
        refuse_pickles(input)?;
        quantize_single_file(input, output, format)
    }
}

fn quantize_single_file(
    input: &Path,
    output: &Path,
    format: QuantFormat,
) -> Result<QuantizeReport> {
    let source = Arc::new(Capture::open(input)?);
    let file = SingleFile::from_source(source.clone())?.quantized(Some(format));
    let cpu = Device::Cpu;
    drop(file.load_unet(None, &cpu, DType::F32)?);
    drop(file.load_vae(None, &cpu, DType::F32)?);
    drop(file.load_text_encoder(None, &cpu, DType::F32)?);
    let mut report = QuantizeReport::default();
    source.write(output, &mut report)?;
    Ok(report)
}

/// The folder is copied to `OUTPUT.partial`, the three weight files replaced there, then renamed.
fn quantize_folder(input: &Path, output: &Path, format: QuantFormat) -> Result<QuantizeReport> {
    let partial = partial_path(output);
    let _ = std::fs::remove_dir_all(&partial);
    let result = (|| {
        copy_dir(input, &partial)?;
        let mut report = QuantizeReport::default();
        let cpu = Device::Cpu;
        let weights = |source: &Arc<Capture>| {
            Weights::from_source(source.clone(), &cpu, DType::F32).quantized(Some(format))
        };
        for (part, stem) in [
            ("unet", "diffusion_pytorch_model"),
            ("vae", "diffusion_pytorch_model"),
            ("text_encoder", "model"),
        ] {
            let dir = input.join(part);
            let file = weights_file(&dir, stem)?;
            let config = config_file(&dir, "config.json")?;
            let source = Arc::new(Capture::open(&file)?);
            match part {
                "unet" => drop(Unet::new(
                    &UnetConfig::from_file(config)?,
                    &weights(&source),
                )?),
                "vae" => drop(AutoencoderKL::new(
                    &VaeConfig::from_file(config)?,
                    &weights(&source),
                )?),
                _ => drop(ClipTextModel::new(
                    &ClipTextConfig::from_file(config)?,
                    &weights(&source),
                )?),
            }
            let name = file.file_name().expect("weights_file returns a file");
            let target = partial.join(part).join(name);
            std::fs::remove_file(&target)
                .map_err(|e| PipelineError::model(&target, format!("cannot replace: {e}")))?;
            source.write(&target, &mut report)?;
        }
        std::fs::rename(&partial, output)
            .map_err(|e| PipelineError::model(output, format!("cannot create: {e}")))?;
        Ok(report)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let err = |p: &Path, e: std::io::Error| PipelineError::model(p, format!("cannot copy: {e}"));
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

/// A weight file whose packing requests are recorded by stored name.
struct Capture {
    files: FileSource,
    packed: Mutex<BTreeMap<String, QTensor>>,
}

impl Capture {
    fn open(path: &Path) -> Result<Capture> {
        Ok(Capture {
            files: FileSource::new(vec![WeightFile::open(path)?]),
            packed: Mutex::new(BTreeMap::new()),
        })
    }

    fn file(&self) -> &WeightFile {
        &self.files.files()[0]
    }

    /// Writes every tensor of the file: the packed ones as recorded, the rest as stored.
    fn write(&self, output: &Path, report: &mut QuantizeReport) -> Result<()> {
        let file = self.file();
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
            return Err(PipelineError::model(
                output,
                format!("tensor `{name}` has dtype {other}, which kiln quantize cannot copy"),
            ))
        }
    })
}

impl TensorSource for Capture {
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
    ) -> kiln_runtime::Result<QTensor> {
        let q = self
            .files
            .load_quantized(name, expected, matrix, format, device)?;
        if let Ok(mut packed) = self.packed.lock() {
            packed.insert(name.to_string(), q.clone());
        }
        Ok(q)
    }
}
