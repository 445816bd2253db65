//! The models a server offers: listing, resolving a requested name to one of them (and only to one
//! of them, so no name reaches outside the models folder), and their A1111 hashes, cached by path,
//! size and modification time so a multi-GB file is hashed once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use kiln_models::pipeline::{model_hash_file, sha256_file};

use crate::config::ModelSet;

/// What a model does: the catalog never offers an LLM as an SD checkpoint, nor the reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// A diffusion model: a diffusers folder or a single-file checkpoint.
    Image,
    /// A chat model: a transformers folder whose config.json names a decoder, or a GGUF file
    /// whose `general.architecture` is one.
    Llm,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Image => "image",
            ModelKind::Llm => "llm",
        }
    }
}

/// One model on offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelEntry {
    /// A1111's checkpoint name: the file name with extension, or the folder name.
    pub name: String,
    /// The name without extension (A1111's `model_name`, the infotext's `Model:`).
    pub model_name: String,
    pub path: PathBuf,
    pub kind: ModelKind,
}

impl ModelEntry {
    fn from_path(path: &Path, kind: ModelKind) -> ModelEntry {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let model_name = if path.is_dir() {
            name.clone()
        } else {
            path.file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| name.clone())
        };
        ModelEntry {
            name,
            model_name,
            path: path.to_path_buf(),
            kind,
        }
    }

    /// A1111's title: `name [short hash]`, or just the name before the hash is known.
    pub fn title(&self, hash: Option<&str>) -> String {
        match hash {
            Some(h) => format!("{} [{}]", self.name, &h[..h.len().min(10)]),
            None => self.name.clone(),
        }
    }
}

type HashKey = (u64, Option<SystemTime>);

pub struct Catalog {
    set: ModelSet,
    hashes: Mutex<HashMap<PathBuf, (HashKey, String)>>,
}

impl Catalog {
    pub fn new(set: ModelSet) -> Catalog {
        Catalog {
            set,
            hashes: Mutex::new(HashMap::new()),
        }
    }

    /// The models on offer, sorted by name; a models folder is re-read on every call so models
    /// copied in while serving appear.
    pub fn list(&self) -> Vec<ModelEntry> {
        match &self.set {
            // Named models are served as given: a single file is an SD checkpoint unless it is
            // a chat model.
            ModelSet::Single(path) => vec![named(path)],
            ModelSet::List(paths) => distinct_names(paths.iter().map(|p| named(p)).collect()),
            ModelSet::Dir(dir) => {
                let Ok(read) = std::fs::read_dir(dir) else {
                    return Vec::new();
                };
                let mut out: Vec<ModelEntry> = read
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter_map(|p| model_kind(&p).map(|kind| ModelEntry::from_path(&p, kind)))
                    .collect();
                out.sort_by(|a, b| a.name.cmp(&b.name));
                out
            }
        }
    }

    /// The listed models of one kind.
    pub fn list_kind(&self, kind: ModelKind) -> Vec<ModelEntry> {
        self.list().into_iter().filter(|m| m.kind == kind).collect()
    }

    /// The listed model of `kind` a client's name refers to (see [`resolve`](Self::resolve)).
    pub fn resolve_kind(&self, requested: &str, kind: ModelKind) -> Option<ModelEntry> {
        find(self.list_kind(kind), requested)
    }

    /// The listed model a client's name refers to: its title (`name [hash]`), name, model name,
    /// or the path this server lists for it. Anything else, `..` paths included, is `None`.
    pub fn resolve(&self, requested: &str) -> Option<ModelEntry> {
        find(self.list(), requested)
    }

    /// The full SHA-256 of the model's hashed file, from the cache when the file is unchanged.
    pub fn sha256(&self, entry: &ModelEntry) -> Option<String> {
        let file = model_hash_file(&entry.path).ok()?;
        let meta = std::fs::metadata(&file).ok()?;
        let key = (meta.len(), meta.modified().ok());
        if let Ok(cache) = self.hashes.lock() {
            if let Some((k, h)) = cache.get(&file) {
                if *k == key {
                    return Some(h.clone());
                }
            }
        }
        let hash = sha256_file(&file).ok()?;
        if let Ok(mut cache) = self.hashes.lock() {
            cache.insert(file, (key, hash.clone()));
        }
        Some(hash)
    }
}

fn find(models: Vec<ModelEntry>, requested: &str) -> Option<ModelEntry> {
    let wanted = requested.trim();
    let without_hash = match wanted.rfind(" [") {
        Some(i) if wanted.ends_with(']') => &wanted[..i],
        _ => wanted,
    };
    models.into_iter().find(|m| {
        [without_hash, wanted]
            .iter()
            .any(|w| *w == m.name || *w == m.model_name || Path::new(w) == m.path.as_path())
    })
}

/// Models named one by one may share a folder name (two `bundled` folders): a later one is
/// named with its parent folder too (`llm/bundled`), so every listed name picks one model.
fn distinct_names(mut models: Vec<ModelEntry>) -> Vec<ModelEntry> {
    for i in 1..models.len() {
        if models[..i].iter().any(|m| m.name == models[i].name) {
            let m = &mut models[i];
            if let Some(parent) = m.path.parent().and_then(|p| p.file_name()) {
                m.name = format!("{}/{}", parent.to_string_lossy(), m.name);
                m.model_name = format!("{}/{}", parent.to_string_lossy(), m.model_name);
            }
        }
    }
    models
}

fn named(path: &Path) -> ModelEntry {
    ModelEntry::from_path(path, model_kind(path).unwrap_or(ModelKind::Image))
}

/// A diffusers folder or `.safetensors` checkpoint (image); a transformers decoder folder (LLM);
/// a `.gguf` file, an LLM when its `general.architecture` is a decoder's, else an image model.
pub fn model_kind(path: &Path) -> Option<ModelKind> {
    if path.is_dir() {
        if path.join("model_index.json").is_file() {
            return Some(ModelKind::Image);
        }
        return is_llm_config(&path.join("config.json")).then_some(ModelKind::Llm);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())?
        .to_ascii_lowercase();
    match ext.as_str() {
        "safetensors" => Some(ModelKind::Image),
        "gguf" => Some(match gguf_architecture(path) {
            Some(a) if kiln_llm::config::GGUF_ARCHITECTURES.contains(&a.as_str()) => ModelKind::Llm,
            _ => ModelKind::Image,
        }),
        _ => None,
    }
}

/// config.json of a Mistral / Llama decoder (or Mistral 3's text + vision model).
fn is_llm_config(path: &Path) -> bool {
    let Some(config) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return false;
    };
    let model_type = config["model_type"].as_str().unwrap_or_default();
    let causal = config["architectures"].as_array().is_some_and(|a| {
        a.iter()
            .filter_map(|x| x.as_str())
            .any(|x| x.ends_with("ForCausalLM"))
    });
    causal || matches!(model_type, "mistral" | "llama" | "mistral3")
}

/// The file's `general.architecture`, read without parsing the rest (a vocabulary, the tensors).
fn gguf_architecture(path: &Path) -> Option<String> {
    let value = kiln_runtime::gguf::GgufFile::read_value(path, "general.architecture").ok()??;
    value.as_str().map(|a| a.trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-catalog-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("folder-model")).unwrap();
        std::fs::write(dir.join("folder-model/model_index.json"), "{}").unwrap();
        std::fs::create_dir_all(dir.join("not-a-model")).unwrap();
        std::fs::write(dir.join("a.safetensors"), b"weights").unwrap();
        std::fs::write(dir.join("c.gguf"), b"gguf").unwrap();
        std::fs::create_dir_all(dir.join("chat")).unwrap();
        std::fs::write(
            dir.join("chat/config.json"),
            r#"{"architectures": ["MistralForCausalLM"], "model_type": "mistral"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        dir
    }

    #[test]
    fn lists_resolves_and_refuses_escapes() {
        let dir = folder("resolve");
        let catalog = Catalog::new(ModelSet::Dir(dir.clone()));
        let names: Vec<String> = catalog.list().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["a.safetensors", "c.gguf", "chat", "folder-model"]);
        let llms: Vec<String> = catalog
            .list_kind(ModelKind::Llm)
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(llms, ["chat"]);
        assert!(catalog.resolve_kind("chat", ModelKind::Image).is_none());
        assert!(catalog.resolve_kind("a", ModelKind::Llm).is_none());
        let a = catalog.resolve("a [0123456789]").unwrap();
        assert_eq!(a.name, "a.safetensors");
        assert_eq!(catalog.resolve("a.safetensors").unwrap(), a);
        assert_eq!(
            catalog.resolve("folder-model").unwrap().model_name,
            "folder-model"
        );
        for bad in [
            "../a.safetensors",
            "notes.txt",
            "not-a-model",
            "/etc/passwd",
            "folder-model/../a.safetensors",
            "",
        ] {
            assert!(catalog.resolve(bad).is_none(), "{bad} resolved");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn hash_is_cached_until_the_file_changes() {
        let dir = folder("hash");
        let catalog = Catalog::new(ModelSet::Dir(dir.clone()));
        let a = catalog.resolve("a").unwrap();
        let first = catalog.sha256(&a).unwrap();
        // sha256("weights")
        assert!(first.starts_with("9a129038d9a00aed"), "{first}");
        assert_eq!(a.title(Some(&first)), "a.safetensors [9a129038d9]");
        // Same size and mtime: the cached hash, even though the bytes changed.
        let mtime = std::fs::metadata(&a.path).unwrap().modified().unwrap();
        std::fs::write(&a.path, b"WEIGHTS").unwrap();
        let f = std::fs::File::options().write(true).open(&a.path).unwrap();
        f.set_modified(mtime).unwrap();
        assert_eq!(catalog.sha256(&a).unwrap(), first);
        // A different size: hashed again.
        std::fs::write(&a.path, b"other weights!").unwrap();
        assert_ne!(catalog.sha256(&a).unwrap(), first);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_gguf_file_is_a_chat_model_when_its_architecture_is_a_decoder() {
        use kiln_runtime::gguf::{write_gguf_with, GgufValue};
        let dir = std::env::temp_dir().join(format!("kiln-catalog-gguf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The kind is read from the metadata alone: a tensor type kiln cannot run (IQ2_XXS) does
        // not make a chat model an image model.
        let tensors = [("w", vec![1, 256], 16, vec![0u8; 66])];
        for (file, arch) in [
            ("chat.gguf", "llama"),
            ("small.gguf", "mistral3"),
            ("sd.gguf", ""),
        ] {
            let meta: Vec<(&str, GgufValue)> = if arch.is_empty() {
                Vec::new()
            } else {
                vec![("general.architecture", arch.into())]
            };
            write_gguf_with(&dir.join(file), &meta, &tensors).unwrap();
        }
        assert_eq!(model_kind(&dir.join("chat.gguf")), Some(ModelKind::Llm));
        assert_eq!(model_kind(&dir.join("small.gguf")), Some(ModelKind::Llm));
        assert_eq!(model_kind(&dir.join("sd.gguf")), Some(ModelKind::Image));
        let _ = std::fs::remove_dir_all(dir);
    }
}
