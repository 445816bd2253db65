//! `kiln quantize`: a model rewritten with its layer weights packed, so it loads back with no
//! quantising at load (packed tensors go from the file to the device as they are).
//!
//! Which tensors get packed is decided by loading the model the usual way with a quantising
//! `Weights` and recording what the layers packed: the file then holds exactly what `--weight-type`
//! would have made, under the stored names (a single file's original-layout names included). Every
//! other tensor is copied byte for byte. Packed tensors are U8 block bytes plus a
//! `kiln.packed.NAME = FORMAT;SHAPE` metadata string (see `kiln_runtime::loader::PACKED_PREFIX`).

use std::path::Path;
use std::sync::Arc;

use kiln_runtime::{DType, Device, QuantFormat};

use super::error::{PipelineError, Result};
use super::load::{config_file, weights_file};
use crate::clip::{ClipTextConfig, ClipTextModel, ClipTextModelWithProjection};
use crate::single_file::{refuse_pickles, SingleFile};
use crate::unet::{Unet, UnetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};
pub use kiln_nn::weights::QuantizeReport;
use kiln_nn::weights::{convert_folder, CaptureSource, Weights};

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
    let source = Arc::new(CaptureSource::open(&[input.to_path_buf()])?);
    let file = SingleFile::from_source(source.clone())?.quantized(Some(format));
    let cpu = Device::Cpu;
    drop(file.load_unet(None, &cpu, DType::F32)?);
    drop(file.load_vae(None, &cpu, DType::F32)?);
    drop(file.load_text_encoder(None, &cpu, DType::F32)?);
    let mut report = QuantizeReport::default();
    source.write(0, output, &mut report)?;
    Ok(report)
}

/// The folder is copied to `OUTPUT.partial`, the weight files (three, or four with SDXL's
/// text_encoder_2) replaced there, then renamed.
fn quantize_folder(input: &Path, output: &Path, format: QuantFormat) -> Result<QuantizeReport> {
    convert_folder(input, output, |partial| {
        let mut report = QuantizeReport::default();
        replace_weights(input, partial, format, &mut report)?;
        Ok(report)
    })
}

fn replace_weights(
    input: &Path,
    partial: &Path,
    format: QuantFormat,
    report: &mut QuantizeReport,
) -> Result<()> {
    let cpu = Device::Cpu;
    let weights = |source: &Arc<CaptureSource>| {
        Weights::from_source(source.clone(), &cpu, DType::F32).quantized(Some(format))
    };
    let mut parts = vec![
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
    ];
    if input.join("text_encoder_2").is_dir() {
        parts.push(("text_encoder_2", "model"));
    }
    for (part, stem) in parts {
        let dir = input.join(part);
        let file = weights_file(&dir, stem)?;
        let config = config_file(&dir, "config.json")?;
        let source = Arc::new(CaptureSource::open(std::slice::from_ref(&file))?);
        match part {
            "unet" => drop(Unet::new(
                &UnetConfig::from_file(config)?,
                &weights(&source),
            )?),
            "vae" => drop(AutoencoderKL::new(
                &VaeConfig::from_file(config)?,
                &weights(&source),
            )?),
            "text_encoder_2" => drop(ClipTextModelWithProjection::new(
                &ClipTextConfig::from_file(config)?,
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
        source.write(0, &target, report)?;
    }
    Ok(())
}
