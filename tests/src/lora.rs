//! The LoRA fixtures beside a tiny model (tools/make_lora_fixtures.py,
//! tools/make_sdxl_lora_fixtures.py): the LoRA files, the cases and diffusers' images.

use kiln_models::lora::LoraLibrary;
use serde_json::Value;

use crate::fixtures;
use crate::golden::read_f32;

/// The LoRA fixtures of the model folder tests/fixtures/NAME.
pub struct LoraFixture(pub &'static str);

impl LoraFixture {
    /// The folder's `loras/`, as `--lora-dir` reads it.
    pub fn library(&self) -> LoraLibrary {
        LoraLibrary::new(&fixtures().join(self.0).join("loras")).unwrap()
    }

    /// lora_cases.json: the cases, their prompts and the files' hashes.
    pub fn json(&self) -> Value {
        let path = fixtures().join(self.0).join("lora_cases.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Diffusers' image for case `name`.
    pub fn golden(&self, name: &str) -> Vec<f32> {
        let path = fixtures().join(self.0).join("lora_golden.safetensors");
        read_f32(&path, &format!("{name}/image")).1
    }
}
