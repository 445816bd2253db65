//! LoRA adapters for the diffusion models: files in kohya / A1111, LyCORIS LoCon and diffusers /
//! PEFT layouts (`file.rs`, names in `keys.rs`), matched to the layers each model registers by
//! module name (`apply.rs`; the layers themselves add `up(down(x))` on the fly, `kiln_nn::lora`),
//! A1111's `<lora:NAME:WEIGHT>` prompt tags (`tags.rs`), the `--lora-dir` folder (`library.rs`)
//! and A1111's hash for infotexts (`hash.rs`).
//!
//! A model lists its parts in a `LoraTargets` (`sd.rs`; SDXL's second text encoder is
//! `Part::TextEncoder2`); the UNet's modules also answer to the CompVis names kohya's SDXL files use
//! (`sgm.rs`, as `LoraPart::aliases`). A file for another family is refused saying which it is
//! (`arch.rs`).

mod apply;
mod arch;
mod file;
mod hash;
mod keys;
mod library;
mod sd;
mod sgm;
mod tags;

use std::path::{Path, PathBuf};

pub use apply::{apply, ActiveLora, AppliedLoras, LoraPart, LoraTargets};
pub use file::{LoraFile, LoraModule};
pub use hash::addnet_hash;
pub use keys::{parse_key, Key, ModuleName, Part, Role};
pub use library::{prompt_tags, LoraEntry, LoraLibrary};
pub(crate) use sd::with_loras;
pub use tags::{parse_cli_lora, parse_tags, LoraTag};

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// A LoRA file that cannot be read or does not fit the model.
    #[error("LoRA {}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// A name that is in no LoRA folder.
    #[error("{0}")]
    Missing(String),
    /// A malformed `<lora:...>` tag or `--lora` argument.
    #[error("{0}")]
    Prompt(String),
    #[error(transparent)]
    Runtime(#[from] kiln_runtime::Error),
}

impl LoraError {
    pub(crate) fn file(path: &Path, msg: String) -> LoraError {
        LoraError::File {
            path: path.to_path_buf(),
            msg,
        }
    }
}

/// A1111's `Lora hashes` infotext value: `name: hash12` for each distinct name, `:` and `,`
/// removed from names.
pub fn infotext_hashes(loras: &[ActiveLora]) -> Option<String> {
    let mut seen = Vec::new();
    let mut parts = Vec::new();
    for l in loras {
        let name: String = l
            .file
            .name
            .chars()
            .filter(|c| *c != ':' && *c != ',')
            .collect();
        if name.is_empty() || seen.contains(&name) {
            continue;
        }
        parts.push(format!("{name}: {}", l.file.short_hash()));
        seen.push(name);
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests;
