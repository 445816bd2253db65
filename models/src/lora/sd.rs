//! The parts of an SD 1.x / 2.x / XL model that take adapters: the UNet (its modules also under
//! their CompVis names, `sgm.rs`), the text encoder and SDXL's second one.

use super::apply::{apply, AppliedLoras, LoraPart, LoraTargets};
use super::keys::Part;
use super::library::prompt_tags;
use super::sgm::sgm_aliases;
use super::tags::parse_tags;
use crate::pipeline::{GenerationParams, PipelineError, StableDiffusion};

impl StableDiffusion {
    pub fn lora_targets(&self) -> LoraTargets {
        let registry = self.unet.lora().clone();
        let mut unet = LoraPart::new(Part::Unet, registry.clone());
        unet.aliases = sgm_aliases(self.unet.config(), &registry.names());
        // A refiner has no CLIP-L: its only text encoder is text_encoder_2.
        let mut parts = vec![unet];
        parts.extend(
            self.text_encoder
                .as_ref()
                .map(|t| LoraPart::new(Part::TextEncoder, t.lora().clone())),
        );
        let family = match &self.sdxl {
            Some(x) => {
                let te2 = x.text_encoder_2.text_model().lora().clone();
                parts.push(LoraPart::new(Part::TextEncoder2, te2));
                "SDXL"
            }
            None => "SD 1.x / 2.x",
        };
        LoraTargets {
            parts,
            model: format!("this {family} model ({})", self.source.name),
        }
    }
}

/// Sets `params.loras` on `model` for one generation and returns the guard with both prompts
/// without their tags. A tag whose file the caller did not resolve is an error, not ignored.
pub(crate) fn with_loras(
    model: &StableDiffusion,
    params: &GenerationParams,
) -> Result<(AppliedLoras, String, String), PipelineError> {
    for tag in prompt_tags(&params.prompt, &params.negative_prompt)? {
        if !params.loras.iter().any(|l| l.file.name == tag.name) {
            return Err(PipelineError::invalid(format!(
                "the prompt names LoRA `{}`, which was not loaded (give --lora-dir)",
                tag.name
            )));
        }
    }
    let applied = apply(&model.lora_targets(), &params.loras)?;
    let prompt = parse_tags(&params.prompt)?.0;
    let negative = parse_tags(&params.negative_prompt)?.0;
    Ok((applied, prompt, negative))
}
