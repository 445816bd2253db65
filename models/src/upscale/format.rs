//! Refusing pickled upscalers (`.pth` is how ESRGAN and Real-ESRGAN ship), with the command that
//! converts one: Real-ESRGAN keeps its weights under `params_ema` (or `params`), which the command
//! unwraps.

use std::path::Path;

use kiln_runtime::{Error, Result};

const CONVERT: &str = "python -c \"import torch, safetensors.torch as st; \
sd = torch.load('model.pth', map_location='cpu', weights_only=True); \
sd = sd.get('params_ema', sd.get('params', sd)); \
st.save_file({k: v.clone().contiguous() for k, v in sd.items()}, 'model.safetensors')\"";

/// Errors for a pickle (by extension or content), naming the conversion.
pub fn refuse_pickles(path: &Path) -> Result<()> {
    match crate::single_file::refuse_pickles(path) {
        Err(Error::Load { path, msg }) if msg.contains("a Python pickle") => Err(Error::load(
            path,
            format!(
                "a PyTorch pickle (.pth / .pt / .ckpt): loading a pickle can run arbitrary code, so \
                 kiln reads upscalers only as .safetensors. Convert it once, in a Python environment \
                 with PyTorch and safetensors:\n  {CONVERT}"
            ),
        )),
        other => other,
    }
}
