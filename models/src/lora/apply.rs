//! Setting a generation's adapters on a model's layers: every module of every file is matched
//! to a registered layer and shape-checked before any is set, so a file that does not fit
//! changes nothing; the returned guard clears them all when the generation ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kiln_nn::lora::{LoraDelta, LoraRegistry, LoraSlot};

use super::arch::{describe, mismatch};
use super::file::{listed, LoraFile, LoraModule};
use super::keys::{ModuleName, Part};
use super::LoraError;

/// One model part that takes adapters: its layers and the other spellings of their names.
pub struct LoraPart {
    pub part: Part,
    pub registry: Arc<LoraRegistry>,
    /// Extra names (dotted or underscored) -> registered module name: for files that name
    /// modules in another layout (SDXL's kohya files use the original UNet's block names).
    pub aliases: BTreeMap<String, String>,
}

/// The parts of a loaded model that take adapters.
pub struct LoraTargets {
    pub parts: Vec<LoraPart>,
    /// What the model is, for messages ("SD 1.x / 2.x").
    pub model: String,
}

/// One adapter at its weights: A1111's `<lora:NAME:TE:UNET>`.
#[derive(Clone, Debug)]
pub struct ActiveLora {
    pub file: Arc<LoraFile>,
    pub te_weight: f32,
    pub unet_weight: f32,
}

/// Clears every adapter set by `apply` when dropped.
pub struct AppliedLoras {
    registries: Vec<Arc<LoraRegistry>>,
}

impl Drop for AppliedLoras {
    fn drop(&mut self) {
        for r in &self.registries {
            r.clear();
        }
    }
}

/// Prefixes a text encoder's module names may carry that kiln's names (below `text_model`) lack.
const TEXT_MODEL: [&str; 2] = ["text_model.", "text_model_"];

impl LoraPart {
    pub fn new(part: Part, registry: Arc<LoraRegistry>) -> LoraPart {
        LoraPart {
            part,
            registry,
            aliases: BTreeMap::new(),
        }
    }

    /// The registered name a file's module name means, if any layer has it.
    fn resolve(&self, name: &ModuleName, underscored: &HashMap<String, String>) -> Option<String> {
        let raw = name.as_str();
        let mut candidates = vec![raw];
        if self.part != Part::Unet {
            candidates.extend(TEXT_MODEL.iter().filter_map(|p| raw.strip_prefix(p)));
        }
        candidates.into_iter().find_map(|n| {
            if let Some(target) = self.aliases.get(n) {
                return Some(target.clone());
            }
            match name {
                ModuleName::Dotted(_) => self.registry.slot(n).map(|_| n.to_string()),
                ModuleName::Underscored(_) => underscored.get(n).cloned(),
            }
        })
    }
}

/// Sets `loras` on `targets`' layers, for as long as the returned guard lives. Nothing is set
/// when any file fails to fit.
pub fn apply(targets: &LoraTargets, loras: &[ActiveLora]) -> Result<AppliedLoras, LoraError> {
    let mut planned: Vec<(Arc<LoraSlot>, LoraDelta)> = Vec::new();
    for lora in loras {
        planned.extend(plan_file(targets, lora)?);
    }
    let applied = AppliedLoras {
        registries: targets.parts.iter().map(|p| p.registry.clone()).collect(),
    };
    for (slot, delta) in &planned {
        // Shapes were checked; an upload failure still clears what was set (the guard drops).
        slot.push(delta)?;
    }
    Ok(applied)
}

fn plan_file(
    targets: &LoraTargets,
    lora: &ActiveLora,
) -> Result<Vec<(Arc<LoraSlot>, LoraDelta)>, LoraError> {
    let file = &lora.file;
    let fail = |msg: String| LoraError::file(&file.path, msg);
    let lookups: Vec<HashMap<String, String>> = targets
        .parts
        .iter()
        .map(|p| {
            let names = p.registry.names();
            names
                .into_iter()
                .map(|n| (n.replace('.', "_"), n))
                .collect()
        })
        .collect();
    if let Some(unet) = targets.parts.iter().find(|p| p.part == Part::Unet) {
        if let Some(msg) = mismatch(file, &unet.registry, &targets.model) {
            return Err(fail(msg));
        }
    }
    let is = describe(file).map(|d| format!(" (the file is {d})"));
    let two_encoders = targets.parts.iter().any(|p| p.part == Part::TextEncoder2);
    let mut unknown = Vec::new();
    let mut out = Vec::new();
    for m in &file.modules {
        let Some(index) = targets.parts.iter().position(|p| p.part == m.part) else {
            return Err(fail(format!(
                "has `{}` adapters but {} has no {}: a LoRA for another architecture",
                m.part.component(),
                targets.model,
                m.part.component()
            )));
        };
        if m.numbered_encoder && !two_encoders {
            return Err(fail(format!(
                "names its text encoder `lora_te1_` (a model with two text encoders, SDXL), but \
                 {} has one: a LoRA for another architecture",
                targets.model
            )));
        }
        let part = &targets.parts[index];
        let Some(name) = part.resolve(&m.name, &lookups[index]) else {
            unknown.push(format!("{} `{}`", m.part.component(), m.name.as_str()));
            continue;
        };
        let slot = part
            .registry
            .slot(&name)
            .ok_or_else(|| fail(format!("layer `{name}` vanished")))?;
        let delta = delta(m, lora);
        slot.check(&delta).map_err(|e| {
            let is = is
                .as_deref()
                .unwrap_or(" (a LoRA for another architecture?)");
            fail(format!("does not fit {}{is}: {e}", targets.model))
        })?;
        out.push((slot, delta));
    }
    if !unknown.is_empty() {
        return Err(fail(format!(
            "{} module(s) match no layer of {}{}: {}",
            unknown.len(),
            targets.model,
            is.as_deref().unwrap_or_default(),
            listed(&unknown)
        )));
    }
    Ok(out)
}

fn delta(m: &LoraModule, lora: &ActiveLora) -> LoraDelta {
    let weight = match m.part {
        Part::Unet => lora.unet_weight,
        Part::TextEncoder | Part::TextEncoder2 => lora.te_weight,
    };
    LoraDelta {
        down: m.down.clone(),
        down_shape: m.down_shape.clone(),
        up: m.up.clone(),
        up_shape: m.up_shape.clone(),
        scale: weight * m.scale(),
    }
}
