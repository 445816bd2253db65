//! A LoRA `.safetensors` file read into per-module adapters (host f32), every tensor name
//! accounted for: an unknown name, a module with `down` but no `up`, or a rank that differs
//! between them fails naming the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device};
use serde_json::Value;

use super::hash::addnet_hash;
use super::keys::{parse_key, ModuleName, Part, Role};
use super::LoraError;

/// How many unknown names an error lists before "and N more".
const LISTED: usize = 8;

/// One module's adapter as stored.
#[derive(Clone, Debug)]
pub struct LoraModule {
    pub part: Part,
    pub numbered_encoder: bool,
    pub name: ModuleName,
    pub down: Vec<f32>,
    pub down_shape: Vec<usize>,
    pub up: Vec<f32>,
    pub up_shape: Vec<usize>,
    /// `alpha / rank` is the factor of `up @ down` at weight 1 (alpha defaults to the rank).
    pub alpha: Option<f32>,
}

impl LoraModule {
    pub fn rank(&self) -> usize {
        self.down_shape[0]
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f32 {
        let rank = self.rank() as f32;
        self.alpha.unwrap_or(rank) / rank
    }
}

/// A LoRA file, read.
#[derive(Clone, Debug)]
pub struct LoraFile {
    /// The file stem: what `<lora:NAME>` and `--lora NAME` refer to.
    pub name: String,
    pub path: PathBuf,
    /// A1111's `AutoV3` hash: SHA-256 of the bytes after the safetensors header, lower-case hex.
    pub hash: String,
    pub modules: Vec<LoraModule>,
    /// The file's `__metadata__` strings (kohya's `ss_*` training notes, PEFT's config).
    pub metadata: BTreeMap<String, String>,
}

#[derive(Default)]
struct Parts {
    down: Option<(Vec<f32>, Vec<usize>)>,
    up: Option<(Vec<f32>, Vec<usize>)>,
    alpha: Option<f32>,
    numbered_encoder: bool,
}

impl LoraFile {
    pub fn open(path: &Path) -> Result<LoraFile, LoraError> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("lora")
            .to_string();
        let file = WeightFile::open(path)?;
        let fail = |msg: String| LoraError::file(path, msg);
        let peft_alpha = peft_alphas(file.metadata()).map_err(&fail)?;
        let mut grouped: BTreeMap<(Part, ModuleName), Parts> = BTreeMap::new();
        let mut unknown = Vec::new();
        for key in file.names() {
            let Some(k) = parse_key(key) else {
                unknown.push(key.to_string());
                continue;
            };
            let entry = grouped.entry((k.part, k.module)).or_default();
            entry.numbered_encoder |= k.numbered_encoder;
            let t = file.load(key, &Device::Cpu, Some(DType::F32))?;
            let shape = t.shape().to_vec();
            let data = t.to_vec_f32()?;
            match k.role {
                Role::Down => entry.down = Some((data, shape)),
                Role::Up => entry.up = Some((data, shape)),
                Role::Alpha if data.len() == 1 => entry.alpha = Some(data[0]),
                Role::Alpha => return Err(fail(format!("`{key}` is {shape:?}, not one value"))),
            }
        }
        if !unknown.is_empty() {
            return Err(fail(format!(
                "{} tensor name(s) are not a LoRA kiln applies (LoRA / LoCon down-up pairs in \
                 kohya or diffusers / PEFT names): {}",
                unknown.len(),
                listed(&unknown)
            )));
        }
        let mut modules = Vec::with_capacity(grouped.len());
        for ((part, name), p) in grouped {
            let (Some((down, down_shape)), Some((up, up_shape))) = (p.down, p.up) else {
                return Err(fail(format!(
                    "module `{}` ({}) lacks its down or up matrix",
                    name.as_str(),
                    part.component()
                )));
            };
            if down_shape.len() < 2 || up_shape.len() < 2 || up_shape[1] != down_shape[0] {
                return Err(fail(format!(
                    "module `{}`: down {down_shape:?} and up {up_shape:?} are not a low-rank pair",
                    name.as_str()
                )));
            }
            let alpha = p.alpha.or_else(|| peft_alpha.get(&part).copied());
            modules.push(LoraModule {
                part,
                numbered_encoder: p.numbered_encoder,
                name,
                down,
                down_shape,
                up,
                up_shape,
                alpha,
            });
        }
        if modules.is_empty() {
            return Err(fail("holds no LoRA tensors".into()));
        }
        Ok(LoraFile {
            name,
            path: path.to_path_buf(),
            hash: addnet_hash(path)?,
            modules,
            metadata: file
                .metadata()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// A1111's short hash: the first 12 hex digits of `hash`.
    pub fn short_hash(&self) -> &str {
        &self.hash[..12.min(self.hash.len())]
    }

    pub fn parts(&self) -> Vec<Part> {
        let mut parts: Vec<Part> = self.modules.iter().map(|m| m.part).collect();
        parts.dedup();
        parts
    }
}

/// `names` joined, at most `LISTED` of them.
pub(crate) fn listed(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(LISTED).map(String::as_str).collect();
    let more = names.len().saturating_sub(LISTED);
    if more == 0 {
        shown.join(", ")
    } else {
        format!("{} and {more} more", shown.join(", "))
    }
}

/// Per part, PEFT's `lora_alpha` from the `lora_adapter_metadata` diffusers' `save_lora_weights`
/// writes (`{"unet.lora_alpha": 8, "unet.r": 4, ...}`). Per-module `alpha_pattern`s are refused
/// rather than applied wrongly.
fn peft_alphas(
    metadata: &std::collections::HashMap<String, String>,
) -> Result<BTreeMap<Part, f32>, String> {
    let Some(text) = metadata.get("lora_adapter_metadata") else {
        return Ok(BTreeMap::new());
    };
    let json: Value = serde_json::from_str(text)
        .map_err(|e| format!("metadata `lora_adapter_metadata` is not JSON: {e}"))?;
    let mut out = BTreeMap::new();
    for part in [Part::Unet, Part::TextEncoder, Part::TextEncoder2] {
        let c = part.component();
        let pattern = json.get(format!("{c}.alpha_pattern"));
        if pattern
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty())
        {
            return Err(format!(
                "metadata `{c}.alpha_pattern` sets per-module alphas, which kiln does not apply"
            ));
        }
        if let Some(alpha) = json.get(format!("{c}.lora_alpha")).and_then(Value::as_f64) {
            out.insert(part, alpha as f32);
        }
    }
    Ok(out)
}
