//! A1111's "infotext": the generation parameters it stores in a PNG's `parameters` text chunk and
//! reads back from one (stable-diffusion-webui modules/processing.py `create_infotext` and
//! modules/infotext_utils.py `parse_generation_parameters`).
//!
//! ```text
//! a cat sitting on a sofa
//! Negative prompt: blurry, low quality
//! Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, Size: 512x512, ...
//! ```

use std::sync::LazyLock;

use regex::Regex;

/// The PNG text keyword A1111 stores the infotext under.
pub const PNG_KEYWORD: &str = "parameters";

/// A1111's `re_param`: one `Key: value` of the last line, the value plain or a JSON string.
pub const PARAM_PATTERN: &str = r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#;

static RE_PARAM: LazyLock<Regex> = LazyLock::new(|| {
    // A constant pattern known to compile; tested below.
    Regex::new(PARAM_PATTERN).unwrap_or_else(|_| unreachable!("PARAM_PATTERN compiles"))
});

/// Prompt, negative prompt and the ordered `Key: value` parameters of one image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InfoText {
    pub prompt: String,
    pub negative_prompt: String,
    pub params: Vec<(String, String)>,
}

impl InfoText {
    /// The value of parameter `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The text A1111 writes: the prompt, a `Negative prompt:` line only when there is one, and
    /// the parameters joined by ", " with values that contain `,`, `:` or a newline JSON-quoted.
    pub fn format(&self) -> String {
        let params = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}: {}", quote(v)))
            .collect::<Vec<_>>()
            .join(", ");
        let negative = if self.negative_prompt.is_empty() {
            String::new()
        } else {
            format!("\nNegative prompt: {}", self.negative_prompt)
        };
        format!("{}{negative}\n{params}", self.prompt)
            .trim()
            .to_string()
    }

    /// Parses an infotext as A1111 does: the last line holds the parameters when the pattern
    /// finds at least three in it; lines from one starting `Negative prompt:` on are the negative
    /// prompt; quoted values are unquoted as JSON strings.
    pub fn parse(text: &str) -> InfoText {
        let trimmed = text.trim();
        let mut lines: Vec<&str> = trimmed.split('\n').collect();
        let mut last = lines.pop().unwrap_or("");
        if RE_PARAM.captures_iter(last).count() < 3 {
            lines.push(last);
            last = "";
        }
        let mut out = InfoText::default();
        let mut in_negative = false;
        for line in lines {
            let mut line = line.trim();
            if let Some(rest) = line.strip_prefix("Negative prompt:") {
                in_negative = true;
                line = rest.trim();
            }
            let target = if in_negative {
                &mut out.negative_prompt
            } else {
                &mut out.prompt
            };
            if !target.is_empty() {
                target.push('\n');
            }
            target.push_str(line);
        }
        for cap in RE_PARAM.captures_iter(last) {
            let key = cap[1].trim().to_string();
            let value = &cap[2];
            let value = if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
                serde_json::from_str::<String>(value).unwrap_or_else(|_| value.to_string())
            } else {
                value.to_string()
            };
            out.params.push((key, value));
        }
        out
    }
}

/// A1111's `quote`: values containing `,`, `:` or a newline become JSON strings (non-ASCII kept).
pub fn quote(value: &str) -> String {
    if value.contains([',', ':', '\n']) {
        serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_quoted_values() {
        let info = InfoText {
            prompt: "a cat, (on a sofa:1.2)\nsecond line".into(),
            negative_prompt: "blurry".into(),
            params: vec![
                ("Steps".into(), "20".into()),
                ("Sampler".into(), "DPM++ 2M".into()),
                ("Model".into(), "odd, name: \"x\"\nz".into()),
                ("Size".into(), "512x512".into()),
            ],
        };
        let text = info.format();
        assert!(
            text.contains("Model: \"odd, name: \\\"x\\\"\\nz\""),
            "{text}"
        );
        assert_eq!(InfoText::parse(&text), info);
    }

    #[test]
    fn no_negative_line_when_empty() {
        let info = InfoText {
            prompt: "p".into(),
            negative_prompt: String::new(),
            params: vec![("Steps".into(), "1".into())],
        };
        assert_eq!(info.format(), "p\nSteps: 1");
    }
}
