//! Which model family a LoRA file was trained for, from its names and shapes: so that a file for
//! another architecture (an SD 1.x LoRA on SDXL, an SDXL one on SD 1.x) is refused saying so,
//! rather than as a list of modules that match nothing. The UNet's cross-attention keys and values
//! read the text encoders' width, which tells the families apart: 768 (SD 1.x), 1024 (SD 2.x),
//! 2048 (SDXL's two encoders side by side).

use kiln_nn::lora::LoraRegistry;

use super::file::LoraFile;
use super::keys::{ModuleName, Part};

/// The input width of a cross-attention key or value projection (`attn2.to_k` / `attn2_to_v`),
/// in the file.
pub(crate) fn file_text_width(file: &LoraFile) -> Option<usize> {
    file.modules
        .iter()
        .filter(|m| m.part == Part::Unet && is_cross_kv(m.name.as_str()))
        .find_map(|m| m.down_shape.get(1).copied())
}

/// The same width in the model.
pub(crate) fn model_text_width(unet: &LoraRegistry) -> Option<usize> {
    unet.names()
        .iter()
        .filter(|n| is_cross_kv(n))
        .find_map(|n| Some(unet.slot(n)?.target().out_in().1))
}

fn is_cross_kv(name: &str) -> bool {
    ["attn2.to_k", "attn2.to_v", "attn2_to_k", "attn2_to_v"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// The family a text width is, for messages.
fn family(width: usize) -> Option<&'static str> {
    match width {
        768 => Some("SD 1.x"),
        1024 => Some("SD 2.x"),
        2048 => Some("SDXL"),
        _ => None,
    }
}

/// What the file is, in words, when its keys or shapes say ("an SD 1.x LoRA (its UNet's
/// cross-attention reads 768-wide text)").
pub(crate) fn describe(file: &LoraFile) -> Option<String> {
    if let Some(width) = file_text_width(file) {
        let what = format!("UNet's cross-attention reads {width}-wide text");
        return Some(match family(width) {
            Some(f) => format!("an {f} LoRA (its {what})"),
            None => format!("a LoRA whose {what}"),
        });
    }
    let modules = &file.modules;
    if modules
        .iter()
        .any(|m| m.part == Part::TextEncoder2 || m.numbered_encoder)
    {
        return Some("an SDXL LoRA (it adapts a second text encoder)".into());
    }
    if modules
        .iter()
        .any(|m| m.part == Part::TextEncoder && matches!(m.name, ModuleName::Underscored(_)))
    {
        return Some(
            "an SD 1.x / 2.x LoRA (kohya's `lora_te_` names a single text encoder)".into(),
        );
    }
    None
}

/// The refusal when the file's cross-attention width is not the model's, before any module is
/// matched: `None` when they agree or either is unknown.
pub(crate) fn mismatch(file: &LoraFile, unet: &LoraRegistry, model: &str) -> Option<String> {
    let (have, want) = (file_text_width(file)?, model_text_width(unet)?);
    if have == want {
        return None;
    }
    let what = describe(file)?;
    Some(format!(
        "is {what}, but {model} reads {want}-wide text: a LoRA for another architecture"
    ))
}
