//! `kiln quantize` for LLM folders: the folder copied with its (possibly sharded) safetensors
//! files rewritten so every Linear weight is packed as `--weight-type` would pack it at load;
//! the index, config, tokenizer and template files are copied unchanged.

use std::path::Path;
use std::sync::Arc;

use kiln_nn::weights::{
    convert_folder, folder_weight_paths, CaptureSource, QuantizeReport, Weights,
};
use kiln_runtime::{DType, Device, Error, QuantFormat, Result};

use crate::config::MistralConfig;
use crate::model::Mistral;

pub fn quantize_folder(input: &Path, output: &Path, format: QuantFormat) -> Result<QuantizeReport> {
    let config = MistralConfig::from_file(&input.join("config.json"))?;
    let paths = folder_weight_paths(input)?;
    convert_folder(input, output, |partial| {
        let source = Arc::new(CaptureSource::open(&paths)?);
        let weights =
            Weights::from_source(source.clone(), &Device::Cpu, DType::F32).quantized(Some(format));
        drop(Mistral::new(config, &weights)?);
        let mut report = QuantizeReport::default();
        for (i, path) in paths.iter().enumerate() {
            let name = path
                .file_name()
                .ok_or_else(|| Error::load(path, "a weight file without a name"))?;
            let target = partial.join(name);
            std::fs::remove_file(&target)
                .map_err(|e| Error::load(&target, format!("cannot replace: {e}")))?;
            source.write(i, &target, &mut report)?;
        }
        Ok(report)
    })
}
