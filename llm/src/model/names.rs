use kiln_nn::weights::Weights;
use kiln_runtime::{Error, Result};

use crate::config::MistralConfig;

/// Where the text model's tensors sit in a checkpoint: `model.*` + `lm_head` for a CausalLM folder;
/// a mistral3 folder nests them as transformers 5 writes it (`model.language_model.*`, `lm_head`)
/// or as the published Mistral Small 3.1 files do (`language_model.model.*`,
/// `language_model.lm_head`).
pub struct TextModelNames {
    pub body: &'static str,
    /// `None`: no LM head stored, tied to the embeddings.
    pub lm_head: Option<&'static str>,
}

const LAYOUTS: [(&str, &str); 3] = [
    ("model", "lm_head"),
    ("model.language_model", "lm_head"),
    ("language_model.model", "language_model.lm_head"),
];

impl TextModelNames {
    pub fn detect(config: &MistralConfig, weights: &Weights) -> Result<TextModelNames> {
        let candidates: &[(&'static str, &'static str)] = if config.wrapped {
            &LAYOUTS[1..]
        } else {
            &LAYOUTS[..1]
        };
        for &(body, head) in candidates {
            if weights.contains(&format!("{body}.embed_tokens.weight")) {
                let lm_head = weights.contains(&format!("{head}.weight")).then_some(head);
                return Ok(TextModelNames { body, lm_head });
            }
        }
        let tried: Vec<String> = candidates
            .iter()
            .map(|(body, _)| format!("`{body}.embed_tokens.weight`"))
            .collect();
        Err(Error::load(
            weights.origin(),
            format!(
                "no token embedding found (looked for {}): not a {} checkpoint",
                tried.join(", "),
                config.model_type
            ),
        ))
    }
}
