//! A job's refiner (`refiner_checkpoint`): zeros for the plan's zero-weight model, so that
//! `--max-vram` counts it, or the real one loaded as the main model was (streamed when it
//! streams), kept between jobs that ask for the same one loaded the same way.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_models::pipeline::{open_refiner, LoadOptions, Refiner, StableDiffusion};
use kiln_runtime::Device;

use crate::catalog::ModelEntry;
use crate::error::{ApiError, ApiResult};

/// The refiner a job asked for: the model and the switch.
pub type Wanted = (ModelEntry, f64);

/// The refiner in memory, with what it was loaded for.
pub struct HeldRefiner {
    path: PathBuf,
    options: LoadOptions,
    model: Arc<StableDiffusion>,
}

/// The refiner `wanted` opened for `base` (see `open_refiner`): zeros when `base` is the plan's.
pub fn open(
    wanted: Option<&Wanted>,
    base: &StableDiffusion,
    device: &Device,
    options: &LoadOptions,
) -> ApiResult<Option<Refiner>> {
    let Some((entry, switch_at)) = wanted else {
        return Ok(None);
    };
    let model = open_refiner(&entry.path, base, device, options)
        .map_err(|e| ApiError::internal(format!("cannot load the refiner: {e}")))?;
    Ok(Some(Refiner {
        model: Arc::new(model),
        switch_at: *switch_at,
    }))
}

/// Frees the held refiner unless it is `wanted` loaded as `options`: called before the main
/// model loads, so that an old refiner and a new model are never in memory together.
pub fn release_unless(
    held: &mut Option<HeldRefiner>,
    wanted: Option<&Wanted>,
    options: &LoadOptions,
) {
    let keep = held.as_ref().is_some_and(|h| {
        wanted.is_some_and(|(entry, _)| entry.path == h.path) && h.options == *options
    });
    if !keep {
        *held = None;
    }
}

/// The job's refiner for the loaded `base`: the held one when it is `wanted` loaded as `options`,
/// else a fresh load kept in `held`; none frees the one held.
pub fn for_job(
    held: &mut Option<HeldRefiner>,
    wanted: Option<&Wanted>,
    base: &StableDiffusion,
    device: &Device,
    options: &LoadOptions,
) -> ApiResult<Option<Refiner>> {
    release_unless(held, wanted, options);
    let (Some(h), Some((_, switch_at))) = (held.as_ref(), wanted) else {
        let refiner = open(wanted, base, device, options)?;
        *held = match (&refiner, wanted) {
            (Some(r), Some((entry, _))) => Some(HeldRefiner {
                path: entry.path.clone(),
                options: options.clone(),
                model: r.model.clone(),
            }),
            _ => None,
        };
        return Ok(refiner);
    };
    Ok(Some(Refiner {
        model: h.model.clone(),
        switch_at: *switch_at,
    }))
}
