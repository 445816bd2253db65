//! The LoRA fixtures beside a tiny model (tools/make_lora_fixtures.py,
//! tools/make_sdxl_lora_fixtures.py): the LoRA files, the cases and diffusers' images.

use kiln_models::lora::LoraLibrary;
use kiln_models::pipeline::StableDiffusion;
use kiln_runtime::Device;
use serde_json::Value;

use crate::fixtures;
use crate::golden::{assert_within, checked_max_err, read_f32, read_json};
use crate::model::run;
use crate::params::case_params;

/// The LoRA fixtures of the model folder tests/fixtures/NAME.
pub struct LoraFixture(pub &'static str);

impl LoraFixture {
    /// The folder's `loras/`, as `--lora-dir` reads it.
    pub fn library(&self) -> LoraLibrary {
        LoraLibrary::new(&fixtures().join(self.0).join("loras")).unwrap()
    }

    /// lora_cases.json: the cases, their prompts and the files' hashes.
    pub fn json(&self) -> Value {
        read_json(&fixtures().join(self.0).join("lora_cases.json"))
    }

    /// Diffusers' image for case `name`.
    pub fn golden(&self, name: &str) -> Vec<f32> {
        let path = fixtures().join(self.0).join("lora_golden.safetensors");
        read_f32(&path, &format!("{name}/image")).1
    }

    /// Every case on `model`, LoRAs changing per run, against diffusers; `none` is returned.
    pub fn check_cases(
        &self,
        device: &Device,
        model: &StableDiffusion,
        tol: f32,
        mut after: impl FnMut(&str, &[f32]),
    ) -> Vec<f32> {
        let library = self.library();
        let none = self.golden("none");
        for case in self.json()["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let mut p = case_params(case);
            p.loras = library.resolve(&p.prompt, &p.negative_prompt).unwrap();
            let got = run(model, &p);
            let want = self.golden(name);
            assert_within(device, name, checked_max_err(&got, &want), tol);
            // The adapters must move the image, so a LoRA applied wrongly or not at all fails.
            assert!(
                checked_max_err(&want, &none) > 100.0 * tol,
                "{name}: the adapters change the image"
            );
            after(name, &none);
        }
        none
    }
}
