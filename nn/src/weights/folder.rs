//! The safetensors files of a Hugging Face model folder: `model.safetensors`, or the shards a
//! `model.safetensors.index.json` lists (every shard it names must exist).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kiln_runtime::loader::WeightFile;
use kiln_runtime::{Error, Result};

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// Opens (memory-maps) the weight files of `dir`.
pub fn folder_weight_files(dir: &Path) -> Result<Vec<WeightFile>> {
    let paths = folder_weight_paths(dir)?;
    paths.iter().map(WeightFile::open).collect()
}

/// The weight file paths of `dir`, shards in the index's order of first appearance.
pub fn folder_weight_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX);
    if index.is_file() {
        return shard_paths(dir, &index);
    }
    let single = dir.join(SINGLE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(Error::load(
        dir,
        format!("no {SINGLE} or {INDEX} in this folder"),
    ))
}

fn shard_paths(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index)
        .map_err(|e| Error::load(index, format!("cannot read: {e}")))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::load(index, format!("not JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::load(index, "no `weight_map` object"))?;
    let mut seen = BTreeSet::new();
    let mut paths = Vec::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::load(index, format!("`weight_map.{tensor}` is not a file name"))
        })?;
        // Shard names are plain file names beside the index; anything else could leave the folder.
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(Error::load(
                index,
                format!("`weight_map.{tensor}` names `{file}`, not a file in this folder"),
            ));
        }
        if seen.insert(file.to_string()) {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(Error::load(
                    index,
                    format!("shard `{file}` (holding `{tensor}`) is missing"),
                ));
            }
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(Error::load(index, "`weight_map` lists no tensors"));
    }
    Ok(paths)
}
