//! What a request may ask of the sampler, with llama.cpp's defaults and range checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{Result, SamplingError};

/// The largest `top_logprobs` (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// A `logit_bias` at or below this bans the token outright (OpenAI: "-100 should result in a ban").
pub const BAN_BIAS: f32 = -100.0;

/// Sampling settings. `Default` is llama.cpp's server defaults (temperature 0.8, top_k 40, top_p 0.95,
/// min_p 0.05, penalties off, last 64 tokens for the repetition penalty); [`SamplingParams::openai`]
/// gives OpenAI's (temperature 1, no truncation). Deserialising fills missing fields from `Default`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature, >= 0; 0 = greedy (argmax, lowest id on ties).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability mass is >= `top_p`; 1 = off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the most likely token's; 0 = off.
    pub min_p: f32,
    /// llama.cpp's repeat penalty over the last `repeat_last_n` tokens (prompt included); 1 = off.
    pub repetition_penalty: f32,
    /// How many of the most recent tokens (prompt + generated) `repetition_penalty` looks at; 0 = off.
    pub repeat_last_n: usize,
    /// OpenAI: subtract `count * frequency_penalty` (count over generated tokens); in [-2, 2].
    pub frequency_penalty: f32,
    /// OpenAI: subtract `presence_penalty` from every token generated at least once; in [-2, 2].
    pub presence_penalty: f32,
    /// Token id -> added to its logit, in [-100, 100]; -100 bans the token.
    pub logit_bias: BTreeMap<u32, f32>,
    /// PRNG seed; `None` draws one from OS entropy and the clock (see `Sampler::seed`).
    pub seed: Option<u64>,
    /// Report each chosen token's log-probability ([`Sampled::logprob`](super::Sampled::logprob));
    /// `top_logprobs > 0` reports it too.
    pub logprobs: bool,
    /// How many most likely alternatives to report with each token, 0..=20.
    pub top_logprobs: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: BTreeMap::new(),
            seed: None,
            logprobs: false,
            top_logprobs: 0,
        }
    }
}

impl SamplingParams {
    /// OpenAI's defaults: temperature 1 and no truncation (top_k, top_p and min_p off).
    pub fn openai() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Self::default()
        }
    }

    /// Greedy decoding: temperature 0, everything else as `Default`.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Whether any log-probability is to be reported.
    pub fn wants_logprobs(&self) -> bool {
        self.logprobs || self.top_logprobs > 0
    }

    /// Whether the next token is exactly the argmax of the raw logits, and nothing else is
    /// reported: temperature 0 (truncation is then skipped), no logit_bias other than 0, the
    /// repetition penalty off (1, or a window of 0), frequency and presence penalties 0, no
    /// log-probabilities. Then the logits need not leave the device: only the chosen id does.
    pub fn is_plain_greedy(&self) -> bool {
        self.temperature == 0.0
            && self.logit_bias.values().all(|&b| b == 0.0)
            && (self.repetition_penalty == 1.0 || self.repeat_last_n == 0)
            && self.frequency_penalty == 0.0
            && self.presence_penalty == 0.0
            && !self.wants_logprobs()
    }

    /// Checks every field against its range; the error names the field, the range and the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, message: String| {
            Err(SamplingError::InvalidParam { field, message })
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(
                "temperature",
                format!(
                    "must be a finite number >= 0 (0 = greedy), got {}",
                    self.temperature
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad(
                "top_p",
                format!("must be in [0, 1] (1 = off), got {}", self.top_p),
            );
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(
                "min_p",
                format!("must be in [0, 1] (0 = off), got {}", self.min_p),
            );
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(
                "repetition_penalty",
                format!(
                    "must be a finite number > 0 (1 = off), got {}",
                    self.repetition_penalty
                ),
            );
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return bad(
                "frequency_penalty",
                format!(
                    "must be in [-2, 2] (0 = off), got {}",
                    self.frequency_penalty
                ),
            );
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return bad(
                "presence_penalty",
                format!(
                    "must be in [-2, 2] (0 = off), got {}",
                    self.presence_penalty
                ),
            );
        }
        for (&id, &bias) in &self.logit_bias {
            if !(-100.0..=100.0).contains(&bias) {
                return bad(
                    "logit_bias",
                    format!("bias for token {id} must be in [-100, 100], got {bias}"),
                );
            }
        }
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return bad(
                "top_logprobs",
                format!(
                    "must be in [0, {MAX_TOP_LOGPROBS}], got {}",
                    self.top_logprobs
                ),
            );
        }
        Ok(())
    }

    /// [`validate`](Self::validate) plus the checks that need the vocabulary: every `logit_bias` id
    /// must be a token of it.
    pub fn validate_for_vocab(&self, vocab_size: usize) -> Result<()> {
        self.validate()?;
        if let Some((&id, _)) = self
            .logit_bias
            .iter()
            .find(|(&id, _)| id as usize >= vocab_size)
        {
            return Err(SamplingError::TokenOutOfVocab {
                what: "logit_bias",
                id,
                vocab_size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(p: &SamplingParams) -> (&'static str, String) {
        match p.validate() {
            Err(SamplingError::InvalidParam { field, message }) => (field, message),
            other => panic!("expected InvalidParam, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_presets_are_valid() {
        SamplingParams::default().validate().unwrap();
        SamplingParams::openai().validate().unwrap();
        SamplingParams::greedy().validate().unwrap();
        assert_eq!(SamplingParams::openai().temperature, 1.0);
        assert_eq!(SamplingParams::greedy().temperature, 0.0);
    }

    #[test]
    fn plain_greedy_is_temperature_0_with_nothing_that_needs_the_logits() {
        let g = SamplingParams::greedy;
        assert!(g().is_plain_greedy());
        // Settings that temperature 0 skips, and neutral values, keep it plain.
        for p in [
            SamplingParams {
                top_k: 1,
                top_p: 0.1,
                min_p: 0.9,
                seed: Some(3),
                ..g()
            },
            SamplingParams {
                repetition_penalty: 1.3,
                repeat_last_n: 0,
                ..g()
            },
            SamplingParams {
                repeat_last_n: 0,
                logit_bias: [(5, 0.0)].into(),
                ..g()
            },
            SamplingParams {
                frequency_penalty: -0.0,
                ..g()
            },
        ] {
            assert!(p.is_plain_greedy(), "{p:?}");
        }
        // Anything that changes the logits or reports from them needs them.
        for p in [
            SamplingParams::default(),
            SamplingParams {
                temperature: 1e-6,
                ..g()
            },
            SamplingParams {
                logit_bias: [(5, -100.0)].into(),
                ..g()
            },
            SamplingParams {
                logit_bias: [(5, 0.5)].into(),
                ..g()
            },
            SamplingParams {
                repetition_penalty: 1.1,
                ..g()
            },
            SamplingParams {
                frequency_penalty: 0.5,
                ..g()
            },
            SamplingParams {
                presence_penalty: -0.5,
                ..g()
            },
            SamplingParams {
                logprobs: true,
                ..g()
            },
            SamplingParams {
                top_logprobs: 1,
                ..g()
            },
        ] {
            assert!(!p.is_plain_greedy(), "{p:?}");
        }
    }

    #[test]
    fn bad_params_are_rejected_naming_field_and_range() {
        let d = SamplingParams::default;
        let cases: Vec<(SamplingParams, &str, &str)> = vec![
            (
                SamplingParams {
                    temperature: -0.1,
                    ..d()
                },
                "temperature",
                ">= 0",
            ),
            (
                SamplingParams {
                    temperature: f32::NAN,
                    ..d()
                },
                "temperature",
                "NaN",
            ),
            (
                SamplingParams {
                    temperature: f32::INFINITY,
                    ..d()
                },
                "temperature",
                "finite",
            ),
            (SamplingParams { top_p: 1.5, ..d() }, "top_p", "[0, 1]"),
            (
                SamplingParams {
                    top_p: f32::NAN,
                    ..d()
                },
                "top_p",
                "[0, 1]",
            ),
            (
                SamplingParams {
                    min_p: -0.01,
                    ..d()
                },
                "min_p",
                "[0, 1]",
            ),
            (
                SamplingParams {
                    repetition_penalty: 0.0,
                    ..d()
                },
                "repetition_penalty",
                "> 0",
            ),
            (
                SamplingParams {
                    frequency_penalty: 2.5,
                    ..d()
                },
                "frequency_penalty",
                "[-2, 2]",
            ),
            (
                SamplingParams {
                    presence_penalty: -3.0,
                    ..d()
                },
                "presence_penalty",
                "[-2, 2]",
            ),
            (
                SamplingParams {
                    logit_bias: [(7, 101.0)].into(),
                    ..d()
                },
                "logit_bias",
                "token 7",
            ),
            (
                SamplingParams {
                    top_logprobs: 21,
                    ..d()
                },
                "top_logprobs",
                "[0, 20]",
            ),
        ];
        for (p, field, needle) in cases {
            let (f, msg) = field_of(&p);
            assert_eq!(f, field, "{msg}");
            assert!(
                msg.contains(needle),
                "{field}: {msg:?} should mention {needle:?}"
            );
            let shown = p.validate().unwrap_err().to_string();
            assert!(shown.contains(field), "{shown}");
        }
    }

    #[test]
    fn edge_values_are_accepted() {
        let d = SamplingParams::default;
        for p in [
            SamplingParams {
                top_p: 0.0,
                min_p: 1.0,
                ..d()
            },
            SamplingParams {
                frequency_penalty: -2.0,
                presence_penalty: 2.0,
                ..d()
            },
            SamplingParams {
                logit_bias: [(0, -100.0), (1, 100.0)].into(),
                top_logprobs: 20,
                ..d()
            },
        ] {
            p.validate().unwrap();
        }
    }

    #[test]
    fn logit_bias_outside_vocab_is_an_error() {
        let p = SamplingParams {
            logit_bias: [(3, 1.0), (10, 1.0)].into(),
            ..Default::default()
        };
        p.validate_for_vocab(11).unwrap();
        let err = p.validate_for_vocab(10).unwrap_err();
        assert_eq!(
            err,
            SamplingError::TokenOutOfVocab {
                what: "logit_bias",
                id: 10,
                vocab_size: 10
            }
        );
        assert!(err.to_string().contains("token id 10"), "{err}");
    }

    #[test]
    fn deserialising_fills_missing_fields_with_defaults() {
        let p: SamplingParams = serde_json::from_str(
            r#"{"temperature": 0.2, "logit_bias": {"50256": -100}, "seed": 9}"#,
        )
        .unwrap();
        assert_eq!(p.temperature, 0.2);
        assert_eq!(p.top_k, 40);
        assert_eq!(p.logit_bias.get(&50256), Some(&-100.0));
        assert_eq!(p.seed, Some(9));
    }
}
