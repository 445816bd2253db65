//! `scheduler_config.json` as diffusers writes it, read field by field so a bad value is reported
//! with its field name. Absent or `null` fields stay `None`: each sampler fills them with the
//! defaults of its own diffusers class, which is what `SomeScheduler.from_config(cfg)` does (an SD
//! 1.5 config has no `timestep_spacing`, so Euler runs "linspace" while DDIM runs "leading").

use serde_json::{Map, Value};

use super::error::SchedulerError;

/// How the training betas are laid out over the train timesteps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    /// Linear in sqrt(beta): the latent-diffusion schedule of every SD checkpoint.
    ScaledLinear,
    /// The Glide cosine schedule.
    SquaredCosCapV2,
}

/// What the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    /// The denoised sample itself (diffusers' "sample").
    Sample,
}

/// How inference timesteps are picked from the train timesteps (Table 2 of arXiv 2305.08891).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// The sigma after the last step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalSigmas {
    Zero,
    SigmaMin,
}

/// DPM-Solver's second-order correction (midpoint, heun) or UniPC's B(h) (bh1, bh2). Each
/// class maps the other's values to its default, as diffusers does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
    Bh1,
    Bh2,
}

/// A parsed `scheduler_config.json`. Fields kiln does not use are ignored; fields that would change
/// the result in a way kiln does not implement are kept so the sampler can refuse them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SchedulerConfig {
    pub class_name: Option<String>,
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub beta_schedule: Option<BetaSchedule>,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: Option<PredictionType>,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: Option<usize>,
    pub set_alpha_to_one: Option<bool>,
    pub clip_sample: Option<bool>,
    pub clip_sample_range: Option<f64>,
    pub thresholding: Option<bool>,
    pub rescale_betas_zero_snr: Option<bool>,
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub use_dynamic_shifting: Option<bool>,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub interpolation_type: Option<String>,
    pub timestep_type: Option<String>,
    pub final_sigmas_type: Option<FinalSigmas>,
    pub solver_order: Option<usize>,
    pub algorithm_type: Option<String>,
    pub solver_type: Option<SolverType>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    pub lambda_min_clipped: Option<f64>,
    pub variance_type: Option<String>,
    pub original_inference_steps: Option<usize>,
    pub timestep_scaling: Option<f64>,
}

impl SchedulerConfig {
    /// Parses the text of a `scheduler_config.json`.
    pub fn from_json_str(text: &str) -> Result<Self, SchedulerError> {
        // Python's json module writes -inf (DPM-Solver's lambda_min_clipped) as a bare
        // `-Infinity`, which strict JSON parsers reject; quote such tokens first.
        let text = quote_non_finite(text);
        let value: Value =
            serde_json::from_str(&text).map_err(|e| SchedulerError::Json(e.to_string()))?;
        Self::from_json(&value)
    }

    /// Reads a parsed JSON value.
    pub fn from_json(value: &Value) -> Result<Self, SchedulerError> {
        let obj = value
            .as_object()
            .ok_or_else(|| SchedulerError::NotAnObject(json_kind(value)))?;
        let r = Reader(obj);
        Ok(SchedulerConfig {
            class_name: r.string("_class_name")?,
            num_train_timesteps: r.count("num_train_timesteps")?,
            beta_start: r.float("beta_start")?,
            beta_end: r.float("beta_end")?,
            beta_schedule: r.choice(
                "beta_schedule",
                &[
                    ("linear", BetaSchedule::Linear),
                    ("scaled_linear", BetaSchedule::ScaledLinear),
                    ("squaredcos_cap_v2", BetaSchedule::SquaredCosCapV2),
                ],
            )?,
            trained_betas: r.float_list("trained_betas")?,
            prediction_type: r.choice(
                "prediction_type",
                &[
                    ("epsilon", PredictionType::Epsilon),
                    ("v_prediction", PredictionType::VPrediction),
                    ("sample", PredictionType::Sample),
                ],
            )?,
            timestep_spacing: r.choice(
                "timestep_spacing",
                &[
                    ("leading", TimestepSpacing::Leading),
                    ("trailing", TimestepSpacing::Trailing),
                    ("linspace", TimestepSpacing::Linspace),
                ],
            )?,
            steps_offset: r.count("steps_offset")?,
            set_alpha_to_one: r.boolean("set_alpha_to_one")?,
            clip_sample: r.boolean("clip_sample")?,
            clip_sample_range: r.float("clip_sample_range")?,
            thresholding: r.boolean("thresholding")?,
            rescale_betas_zero_snr: r.boolean("rescale_betas_zero_snr")?,
            use_karras_sigmas: r.boolean("use_karras_sigmas")?,
            use_exponential_sigmas: r.boolean("use_exponential_sigmas")?,
            use_beta_sigmas: r.boolean("use_beta_sigmas")?,
            use_lu_lambdas: r.boolean("use_lu_lambdas")?,
            use_flow_sigmas: r.boolean("use_flow_sigmas")?,
            use_dynamic_shifting: r.boolean("use_dynamic_shifting")?,
            sigma_min: r.float("sigma_min")?,
            sigma_max: r.float("sigma_max")?,
            interpolation_type: r.string("interpolation_type")?,
            timestep_type: r.string("timestep_type")?,
            final_sigmas_type: r.choice(
                "final_sigmas_type",
                &[
                    ("zero", FinalSigmas::Zero),
                    ("sigma_min", FinalSigmas::SigmaMin),
                ],
            )?,
            solver_order: r.count("solver_order")?,
            algorithm_type: r.string("algorithm_type")?,
            solver_type: r.choice(
                "solver_type",
                &[
                    ("midpoint", SolverType::Midpoint),
                    ("heun", SolverType::Heun),
                    ("bh1", SolverType::Bh1),
                    ("bh2", SolverType::Bh2),
                ],
            )?,
            lower_order_final: r.boolean("lower_order_final")?,
            euler_at_final: r.boolean("euler_at_final")?,
            lambda_min_clipped: r.float("lambda_min_clipped")?,
            variance_type: r.string("variance_type")?,
            original_inference_steps: r.count("original_inference_steps")?,
            timestep_scaling: r.float("timestep_scaling")?,
        })
    }

    /// Reads a `scheduler_config.json` file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, SchedulerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SchedulerError::Json(format!("cannot read {}: {e}", path.display())))?;
        Self::from_json_str(&text)
    }
}

/// Typed access to the config object; `null` and absent fields read as `None`.
struct Reader<'a>(&'a Map<String, Value>);

impl Reader<'_> {
    fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    fn wrong(field: &'static str, expected: &'static str, v: &Value) -> SchedulerError {
        SchedulerError::FieldType {
            field,
            expected,
            found: describe(v),
        }
    }

    fn float(&self, field: &'static str) -> Result<Option<f64>, SchedulerError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        match v {
            Value::Number(n) => n.as_f64().map(Some),
            Value::String(s) => match s.as_str() {
                "Infinity" => Some(Some(f64::INFINITY)),
                "-Infinity" => Some(Some(f64::NEG_INFINITY)),
                _ => None,
            },
            _ => None,
        }
        .ok_or_else(|| Self::wrong(field, "a number", v))
    }

    fn count(&self, field: &'static str) -> Result<Option<usize>, SchedulerError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| Self::wrong(field, "a non-negative integer", v))
    }

    fn boolean(&self, field: &'static str) -> Result<Option<bool>, SchedulerError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        v.as_bool()
            .map(Some)
            .ok_or_else(|| Self::wrong(field, "true or false", v))
    }

    fn string(&self, field: &'static str) -> Result<Option<String>, SchedulerError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        v.as_str()
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| Self::wrong(field, "a string", v))
    }

    fn float_list(&self, field: &'static str) -> Result<Option<Vec<f64>>, SchedulerError> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let items = v
            .as_array()
            .ok_or_else(|| Self::wrong(field, "a list of numbers", v))?;
        items
            .iter()
            .map(|x| {
                x.as_f64()
                    .ok_or_else(|| Self::wrong(field, "a list of numbers", x))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn choice<T: Copy>(
        &self,
        field: &'static str,
        options: &[(&str, T)],
    ) -> Result<Option<T>, SchedulerError> {
        let Some(name) = self.string(field)? else {
            return Ok(None);
        };
        options
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| Some(*t))
            .ok_or_else(|| SchedulerError::FieldValue {
                field,
                message: format!(
                    "unknown value '{name}'; valid: {}",
                    options
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn describe(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 40 {
        json_kind(v).to_string()
    } else {
        text
    }
}

/// Wraps the bare tokens `NaN`, `Infinity` and `-Infinity` (outside strings) in quotes.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.push('"');
            out.push_str(t);
            out.push('"');
            rest = &rest[t.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_infinity_is_read() {
        let cfg = SchedulerConfig::from_json_str(
            r#"{"lambda_min_clipped": -Infinity, "_class_name": "a -Infinity b"}"#,
        )
        .unwrap();
        assert_eq!(cfg.lambda_min_clipped, Some(f64::NEG_INFINITY));
        assert_eq!(cfg.class_name.as_deref(), Some("a -Infinity b"));
    }
}
