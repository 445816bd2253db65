//! One textual-inversion embedding file: the vectors it holds for each text encoder, in the
//! layouts people download (A1111 / SD.Next read the same set, `textual_inversion.py`
//! `create_embedding_from_data`):
//! - a single tensor under any name: diffusers' `{token: [n, d]}`, kohya's `emb_params`;
//! - A1111's training output flattened into safetensors: `string_to_param.*`;
//! - SDXL's `clip_l` `[n, 768]` and `clip_g` `[n, 1280]`, one set per text encoder.
//!
//! Pickled `.pt` / `.bin` files are refused: loading them would run arbitrary code.

use std::path::{Path, PathBuf};

use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device};

use crate::pipeline::PipelineError;

type Result<T> = std::result::Result<T, PipelineError>;

/// Which text encoder a set of vectors is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EncoderSlot {
    /// SD 1.x / 2.x's only encoder, or SDXL's CLIP ViT-L (`clip_l`).
    First,
    /// SDXL's OpenCLIP ViT-bigG (`clip_g`).
    Second,
}

/// `count` vectors of `width` values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Vectors {
    pub count: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

/// An embedding as loaded: its prompt name (the file stem, as A1111 names it), the vectors per
/// encoder, and A1111's short hash for the infotext.
#[derive(Clone, Debug)]
pub struct TextualInversion {
    pub name: String,
    pub path: PathBuf,
    pub first: Vectors,
    /// SDXL files only.
    pub second: Option<Vectors>,
    /// First 12 hex digits of the file's SHA-256 (A1111's `TI hashes`).
    pub hash: String,
}

impl TextualInversion {
    /// Reads `path`; the name is the file stem.
    pub fn open(path: &Path) -> Result<TextualInversion> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ext != "safetensors" {
            return Err(PipelineError::model(
                path,
                "textual-inversion embeddings are read from .safetensors only (.pt / .bin files \
                 are Python pickles, which can run code when loaded; convert them first)",
            ));
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| PipelineError::model(path, "the file name gives no embedding name"))?
            .to_string();
        let file = WeightFile::open(path)?;
        let read = |key: &str| read_vectors(&file, path, key);
        let names = file.names();
        let (first, second) = if file.contains("clip_l") || file.contains("clip_g") {
            if !(file.contains("clip_l") && file.contains("clip_g")) {
                return Err(PipelineError::model(
                    path,
                    "an SDXL embedding needs both `clip_l` and `clip_g` tensors",
                ));
            }
            let (l, g) = (read("clip_l")?, read("clip_g")?);
            if l.count != g.count {
                return Err(PipelineError::model(
                    path,
                    format!(
                        "`clip_l` has {} vectors but `clip_g` has {}",
                        l.count, g.count
                    ),
                ));
            }
            (l, Some(g))
        } else {
            let params: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| n.starts_with("string_to_param."))
                .collect();
            let key = match (params.as_slice(), names.as_slice()) {
                ([one], _) => *one,
                ([], [one]) => *one,
                _ if file.contains("emb_params") => "emb_params",
                _ => {
                    let mut listed = names.clone();
                    listed.sort_unstable();
                    return Err(PipelineError::model(
                        path,
                        format!(
                            "not a textual-inversion embedding: expected one tensor, `emb_params`, \
                             `string_to_param.*` or `clip_l` + `clip_g`, found {listed:?}"
                        ),
                    ));
                }
            };
            (read(key)?, None)
        };
        Ok(TextualInversion {
            name,
            path: path.to_path_buf(),
            first,
            second,
            hash: crate::pipeline::sha256_file(path)?[..12].to_string(),
        })
    }

    /// The vectors for `slot`, or why there are none.
    pub fn vectors(&self, slot: EncoderSlot) -> Option<&Vectors> {
        match slot {
            EncoderSlot::First => Some(&self.first),
            EncoderSlot::Second => self.second.as_ref(),
        }
    }

    /// Vectors per prompt occurrence (equal for both encoders of an SDXL file).
    pub fn count(&self) -> usize {
        self.first.count
    }
}

fn read_vectors(file: &WeightFile, path: &Path, key: &str) -> Result<Vectors> {
    let shape = file.entry(key)?.shape.clone();
    let (count, width) = match shape.as_slice() {
        [w] => (1, *w),
        [n, w] => (*n, *w),
        _ => {
            return Err(PipelineError::model(
                path,
                format!("tensor `{key}` is {shape:?}; an embedding is [vectors, width] or [width]"),
            ))
        }
    };
    if count == 0 || width == 0 {
        return Err(PipelineError::model(
            path,
            format!("tensor `{key}` is empty ({shape:?})"),
        ));
    }
    let values = file
        .load(key, &Device::Cpu, Some(DType::F32))?
        .to_vec_f32()?;
    Ok(Vectors {
        count,
        width,
        values,
    })
}
