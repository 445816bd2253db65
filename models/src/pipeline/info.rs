//! The A1111 infotext of a generated image: what to type (or paste into A1111's PNG Info) to make
//! it again.

use super::hires::hires_fields;
use super::params::GenerationParams;
use crate::image::infotext::InfoText;
use crate::lora::infotext_hashes;
use crate::rng::RngKind;

/// The parameters of the image seeded `seed`, in A1111's field order: Steps, Sampler, Schedule
/// type, CFG scale, Seed, Size, Model hash, Model, Denoising strength (img2img), Clip skip (when
/// not 1), RNG (A1111's name for the noise source: "CPU" for torch's CPU generator, "NV" for
/// Philox), then A1111's `TI hashes` of the textual-inversion embeddings the prompts name, then
/// the ControlNet extension's `ControlNet N` units.
pub fn infotext(
    params: &GenerationParams,
    seed: u64,
    model_name: &str,
    model_hash: Option<&str>,
) -> InfoText {
    let schedule = params.sampler.schedule.label();
    let mut fields: Vec<(&str, String)> = vec![
        ("Steps", params.steps.to_string()),
        ("Sampler", params.sampler.kind.name().to_string()),
        ("Schedule type", schedule.to_string()),
        ("CFG scale", params.cfg_scale.to_string()),
        ("Seed", seed.to_string()),
        ("Size", format!("{}x{}", params.width, params.height)),
    ];
    if let Some(hash) = model_hash {
        fields.push(("Model hash", hash.to_string()));
    }
    fields.push(("Model", model_name.to_string()));
    if let Some(init) = &params.init {
        fields.push(("Denoising strength", init.strength.to_string()));
    }
    if let Some(hires) = &params.hires {
        fields.push(("Denoising strength", hires.denoising_strength.to_string()));
    }
    if params.clip_skip != 1 {
        fields.push(("Clip skip", params.clip_skip.to_string()));
    }
    let rng = match params.rng {
        RngKind::TorchCpu | RngKind::TorchCpuPortable => "CPU",
        RngKind::Philox => "NV",
    };
    fields.push(("RNG", rng.to_string()));
    let hires = params
        .hires
        .as_ref()
        .map(|h| hires_fields(h, params))
        .unwrap_or_default();
    fields.extend(hires.iter().map(|(k, v)| (k.as_str(), v.clone())));
    // A1111 adds its extra networks' fields after RNG.
    if let Some(hashes) = infotext_hashes(&params.loras) {
        fields.push(("Lora hashes", hashes));
    }
    if let Some(db) = &params.embeddings {
        let used = db.used_in(&[&params.prompt, &params.negative_prompt]);
        if !used.is_empty() {
            let hashes: Vec<String> = used
                .iter()
                .map(|e| format!("{}: {}", e.name, e.hash))
                .collect();
            fields.push(("TI hashes", hashes.join(", ")));
        }
    }
    InfoText {
        prompt: params.prompt.clone(),
        negative_prompt: params.negative_prompt.clone(),
        params: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(
                params
                    .controls
                    .iter()
                    .enumerate()
                    .map(|(i, unit)| (format!("ControlNet {i}"), unit.infotext())),
            )
            .collect(),
    }
}

/// A1111's fields for a VAE file that replaced the model's own (`--vae`): `VAE hash` (the first 10
/// hex digits of the file's SHA-256, as for the model) and `VAE` (the file's name with its
/// extension: A1111's `os.path.basename`), right after `Model`, in the order A1111's
/// `create_infotext` writes them.
pub fn add_vae(info: &mut InfoText, name: &str, hash: Option<&str>) {
    let at = info
        .params
        .iter()
        .position(|(k, _)| k == "Model")
        .map_or(info.params.len(), |i| i + 1);
    let mut fields = Vec::new();
    if let Some(hash) = hash {
        fields.push(("VAE hash".to_string(), hash.to_string()));
    }
    fields.push(("VAE".to_string(), name.to_string()));
    info.params.splice(at..at, fields);
}

/// A1111's refiner fields (`--refiner`): `Refiner: <name> [<short hash>]` (its checkpoint's
/// short title) and `Refiner switch at`, right after `RNG`, before the extra networks' hashes, in
/// the order A1111's `process_images` sets them.
pub fn add_refiner(info: &mut InfoText, name: &str, hash: &str, switch_at: f64) {
    let at = info
        .params
        .iter()
        .position(|(k, _)| k == "RNG")
        .map_or(info.params.len(), |i| i + 1);
    let fields = [
        ("Refiner".to_string(), format!("{name} [{hash}]")),
        ("Refiner switch at".to_string(), switch_at.to_string()),
    ];
    info.params.splice(at..at, fields);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refiner_fields_follow_rng() {
        let mut p = GenerationParams::new("x");
        p.seed = 1;
        let mut info = infotext(&p, 1, "base", Some("0123456789"));
        info.params
            .push(("Lora hashes".into(), "a: 0123456789ab".into()));
        add_refiner(&mut info, "sd_xl_refiner_1.0", "7440042bbd", 0.8);
        let keys: Vec<&str> = info.params.iter().map(|(k, _)| k.as_str()).collect();
        let rng = keys.iter().position(|k| *k == "RNG").unwrap();
        assert_eq!(
            keys[rng + 1..],
            ["Refiner", "Refiner switch at", "Lora hashes"]
        );
        let text = info.format();
        assert!(
            text.contains(
                "RNG: CPU, Refiner: sd_xl_refiner_1.0 [7440042bbd], Refiner switch at: 0.8"
            ),
            "{text}"
        );
    }
}
