//! `--lora-dir`: the LoRA files on offer, by file stem (A1111's `models/Lora` folder), read once
//! and cached while the file is unchanged.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::apply::ActiveLora;
use super::file::{listed, LoraFile};
use super::tags::{parse_tags, LoraTag};
use super::LoraError;

/// One file on offer, as `GET /sdapi/v1/loras` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraEntry {
    /// The file stem: `<lora:NAME>`.
    pub name: String,
    /// kohya's `ss_output_name` when the file records one, else the name (A1111's alias).
    pub alias: String,
    pub path: PathBuf,
    pub metadata: BTreeMap<String, String>,
}

type Cached = (Option<SystemTime>, Arc<LoraFile>);

/// A folder of LoRA files.
pub struct LoraLibrary {
    dir: PathBuf,
    cache: Mutex<HashMap<PathBuf, Cached>>,
}

impl LoraLibrary {
    pub fn new(dir: &Path) -> Result<LoraLibrary, LoraError> {
        if !dir.is_dir() {
            return Err(LoraError::file(dir, "--lora-dir is not a folder".into()));
        }
        Ok(LoraLibrary {
            dir: dir.to_path_buf(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every `.safetensors` file below the folder, by name (A1111 searches subfolders too).
    pub fn files(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path
                    .extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("safetensors"))
                {
                    if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                        out.push((stem.to_string(), path.clone()));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// The files with their header metadata (tensors are not read).
    pub fn entries(&self) -> Vec<LoraEntry> {
        self.files()
            .into_iter()
            .map(|(name, path)| {
                let metadata = header_metadata(&path).unwrap_or_default();
                let alias = metadata
                    .get("ss_output_name")
                    .filter(|a| !a.is_empty())
                    .cloned()
                    .unwrap_or_else(|| name.clone());
                LoraEntry {
                    name,
                    alias,
                    path,
                    metadata,
                }
            })
            .collect()
    }

    /// The file called `name`, read (or from the cache).
    pub fn get(&self, name: &str) -> Result<Arc<LoraFile>, LoraError> {
        let files = self.files();
        let Some((_, path)) = files.iter().find(|(n, _)| n == name) else {
            let names: Vec<String> = files.into_iter().map(|(n, _)| n).collect();
            let offer = if names.is_empty() {
                "it has no .safetensors files".to_string()
            } else {
                format!("it has {}", listed(&names))
            };
            return Err(LoraError::Missing(format!(
                "LoRA `{name}` is not in {} ({offer})",
                self.dir.display()
            )));
        };
        load_cached(&self.cache, path)
    }

    /// The adapters `prompt` and `negative` name (A1111 reads both), with the LoRA files read.
    pub fn resolve(&self, prompt: &str, negative: &str) -> Result<Vec<ActiveLora>, LoraError> {
        let mut out = Vec::new();
        for tag in prompt_tags(prompt, negative)? {
            out.push(ActiveLora {
                file: self.get(&tag.name)?,
                te_weight: tag.te_weight,
                unet_weight: tag.unet_weight,
            });
        }
        Ok(out)
    }
}

/// The tags of both prompts, in order.
pub fn prompt_tags(prompt: &str, negative: &str) -> Result<Vec<LoraTag>, LoraError> {
    let mut tags = parse_tags(prompt)?.1;
    tags.extend(parse_tags(negative)?.1);
    Ok(tags)
}

fn load_cached(
    cache: &Mutex<HashMap<PathBuf, Cached>>,
    path: &Path,
) -> Result<Arc<LoraFile>, LoraError> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if let Ok(c) = cache.lock() {
        if let Some((when, file)) = c.get(path) {
            if *when == modified && modified.is_some() {
                return Ok(file.clone());
            }
        }
    }
    let file = Arc::new(LoraFile::open(path)?);
    if let Ok(mut c) = cache.lock() {
        c.insert(path.to_path_buf(), (modified, file.clone()));
    }
    Ok(file)
}

/// A safetensors file's `__metadata__` strings, reading only the header.
fn header_metadata(path: &Path) -> Option<BTreeMap<String, String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
    // A header is JSON of names and offsets; anything huge is not one.
    if len > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; len];
    f.read_exact(&mut header).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let meta = json.get("__metadata__")?.as_object()?;
    Some(
        meta.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
    )
}
