//! A job's ControlNet units for a model: the loaded model's ControlNets (each loaded once per
//! model and kept), or zeros for the plan's zero-weight model so that `--max-vram` counts them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use kiln_models::controlnet::ControlNetModel;
use kiln_models::pipeline::{open_controlnet, ControlUnit, StableDiffusion};
use kiln_runtime::QuantFormat;

use crate::controlnets::{short_hash, ControlRequest};
use crate::error::{ApiError, ApiResult};

/// ControlNets loaded for one model (its device, dtype and weight type), by path.
pub type HeldControlNets = HashMap<PathBuf, Arc<ControlNetModel>>;

/// The units of `requests` for `model`, ControlNets packed as `quantization`; `held` keeps them
/// between jobs (`None`: load afresh, as for the plan). One that does not fit the model is the
/// client's to fix (400 naming the unit's model field).
pub fn control_units(
    model: &StableDiffusion,
    quantization: Option<QuantFormat>,
    requests: &[ControlRequest],
    mut held: Option<&mut HeldControlNets>,
) -> ApiResult<Vec<ControlUnit>> {
    let mut units = Vec::with_capacity(requests.len());
    for r in requests {
        let kept = held.as_ref().and_then(|h| h.get(&r.path).cloned());
        let net = match kept {
            Some(net) => net,
            None => {
                let net = open_controlnet(&r.path, &r.name, model, quantization)
                    .map_err(|e| ApiError::invalid(&format!("{}.model", r.field), e.to_string()))?;
                let net = Arc::new(net);
                if let Some(h) = held.as_mut() {
                    h.insert(r.path.clone(), net.clone());
                }
                net
            }
        };
        units.push(ControlUnit {
            model: net,
            name: r.name.clone(),
            hash: short_hash(&r.path),
            module: r.module.clone(),
            settings: r.settings.clone(),
            image: r.image.clone(),
            resize: r.resize,
            scale: r.weight,
            guidance_start: r.guidance_start,
            guidance_end: r.guidance_end,
            mode: r.mode,
        });
    }
    Ok(units)
}
