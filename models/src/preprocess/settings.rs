//! A ControlNet unit's preprocessor settings as the A1111 ControlNet extension settles and records
//! them: `processor_res`, `threshold_a` and `threshold_b` outside the module's slider range (-1,
//! the clients' "unset", among them) become the slider's default (`bound_check_params` in its
//! `internal_controlnet/args.py`), and the infotext writes each as Python's `str` of the value:
//! a client's number as an int for `processor_res` and a float for the thresholds ("100.0"), a
//! default as the module declares it ("100", or "0.5" for a slider the module does not use).

use super::{PreprocessError, Preprocessor};

/// One slider's value and its infotext text.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub value: f64,
    pub text: String,
}

/// The settings the extension writes to the infotext between "Resize Mode" and "Guidance Start",
/// and "Pixel Perfect" after "Guidance End".
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessorSettings {
    pub processor_res: Setting,
    pub threshold_a: Setting,
    pub threshold_b: Setting,
    pub pixel_perfect: bool,
}

/// A slider's range and its default as the module declares it.
struct Slider {
    min: f64,
    max: f64,
    default: &'static str,
}

/// The extension's undeclared slider: `PreprocessorParameter()`'s 0 to 1, default 0.5.
const UNUSED: Slider = Slider {
    min: 0.0,
    max: 1.0,
    default: "0.5",
};
const RESOLUTION: Slider = Slider {
    min: 64.0,
    max: 2048.0,
    default: "512",
};

/// (resolution, slider 1, slider 2) of each module kiln has, from the extension's
/// `model_free_preprocessors.py` and `legacy/preprocessor_compiled.py`.
fn sliders(p: &Preprocessor) -> [Slider; 3] {
    let s = |min, max, default| Slider { min, max, default };
    match p {
        Preprocessor::None => [RESOLUTION, UNUSED, UNUSED],
        Preprocessor::Invert => [UNUSED, UNUSED, UNUSED],
        Preprocessor::Canny { .. } => [RESOLUTION, s(1.0, 255.0, "100"), s(1.0, 255.0, "200")],
        Preprocessor::Threshold { .. } => [RESOLUTION, s(0.0, 255.0, "127"), UNUSED],
        Preprocessor::ScribbleXdog { .. } => [RESOLUTION, s(1.0, 64.0, "32"), UNUSED],
    }
}

/// Python's `str` of a float: "100.0" for a whole number, the shortest round trip otherwise.
fn python_float(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        v.to_string()
    }
}

fn settle(value: Option<f64>, slider: &Slider, int: bool) -> Setting {
    match value {
        Some(v) if v >= slider.min && v <= slider.max => Setting {
            value: if int { v.trunc() } else { v },
            text: if int {
                format!("{}", v.trunc() as i64)
            } else {
                python_float(v)
            },
        },
        _ => Setting {
            value: slider.default.parse().unwrap_or(0.5),
            text: slider.default.to_string(),
        },
    }
}

impl PreprocessorSettings {
    /// The settings of a unit running `module` with what the client sent (`None`: not sent).
    pub fn settle(
        module: &str,
        processor_res: Option<f64>,
        threshold_a: Option<f64>,
        threshold_b: Option<f64>,
        pixel_perfect: bool,
    ) -> Result<PreprocessorSettings, PreprocessError> {
        let [res, a, b] = sliders(&Preprocessor::from_name(module)?);
        Ok(PreprocessorSettings {
            processor_res: settle(processor_res, &res, true),
            threshold_a: settle(threshold_a, &a, false),
            threshold_b: settle(threshold_b, &b, false),
            pixel_perfect,
        })
    }

    /// A unit's settings when nothing was sent (the CLI without `--control-res`).
    pub fn defaults(module: &str) -> Result<PreprocessorSettings, PreprocessError> {
        PreprocessorSettings::settle(module, None, None, None, false)
    }

    /// `module` with these thresholds.
    pub fn preprocessor(&self, module: &str) -> Result<Preprocessor, PreprocessError> {
        Preprocessor::with_thresholds(
            module,
            Some(self.threshold_a.value as f32),
            Some(self.threshold_b.value as f32),
        )
    }

    /// "Processor Res: 512, Threshold A: 100, Threshold B: 200".
    pub fn sliders_infotext(&self) -> String {
        format!(
            "Processor Res: {}, Threshold A: {}, Threshold B: {}",
            self.processor_res.text, self.threshold_a.text, self.threshold_b.text
        )
    }

    /// "True" / "False", as Python writes a bool.
    pub fn pixel_perfect_infotext(&self) -> &'static str {
        if self.pixel_perfect {
            "True"
        } else {
            "False"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &PreprocessorSettings) -> [&str; 3] {
        [
            &s.processor_res.text,
            &s.threshold_a.text,
            &s.threshold_b.text,
        ]
    }

    #[test]
    fn unset_and_out_of_range_values_take_the_modules_defaults() {
        let canny = PreprocessorSettings::defaults("canny").unwrap();
        assert_eq!(texts(&canny), ["512", "100", "200"]);
        assert_eq!(canny.threshold_b.value, 200.0);
        let none = PreprocessorSettings::settle("none", Some(-1.0), Some(-1.0), None, false);
        assert_eq!(texts(&none.unwrap()), ["512", "0.5", "0.5"]);
        // invert declares no resolution slider: any real resolution is out of its 0..1.
        let invert = PreprocessorSettings::settle("invert", Some(768.0), None, None, false);
        assert_eq!(texts(&invert.unwrap()), ["0.5", "0.5", "0.5"]);
        let xdog = PreprocessorSettings::settle("scribble_xdog", None, Some(99.0), None, false);
        assert_eq!(texts(&xdog.unwrap()), ["512", "32", "0.5"]);
        let binary = PreprocessorSettings::defaults("threshold").unwrap();
        assert_eq!(texts(&binary), ["512", "127", "0.5"]);
        assert!(PreprocessorSettings::defaults("depth").is_err());
    }

    #[test]
    fn a_clients_numbers_are_written_as_python_writes_them() {
        let s = PreprocessorSettings::settle("canny", Some(768.0), Some(50.0), Some(150.5), true)
            .unwrap();
        assert_eq!(texts(&s), ["768", "50.0", "150.5"]);
        assert_eq!(s.pixel_perfect_infotext(), "True");
        assert_eq!(
            s.sliders_infotext(),
            "Processor Res: 768, Threshold A: 50.0, Threshold B: 150.5"
        );
        let p = s.preprocessor("canny").unwrap();
        assert_eq!(
            p,
            Preprocessor::Canny {
                low: 50.0,
                high: 150.5
            }
        );
    }
}
