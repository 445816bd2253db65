//! A model's own Jinja chat template rendered with minijinja, set up as transformers'
//! `apply_chat_template` does (trim_blocks, lstrip_blocks, `raise_exception`, `strftime_now`,
//! Python string methods, `tojson` as Python's `json.dumps`), with `add_generation_prompt` true.
//! Tools and tool messages reach the template in OpenAI's shape, as apply_chat_template passes
//! them (arguments parsed into objects, as vLLM does, so `tojson` spells them as mistral-common).

use std::path::{Path, PathBuf};

use kiln_runtime::{Error, Result};
use minijinja::{context, Environment, ErrorKind};
use serde_json::Value;

use super::{pyjson, tools, Message, Role, ToolSpec};
use crate::tokenizer::Tokenizer;

pub struct JinjaTemplate {
    source: String,
    origin: PathBuf,
    bos_token: String,
    eos_token: String,
}

impl JinjaTemplate {
    /// The template a model folder carries, if any.
    pub fn from_dir(dir: &Path, tokenizer: &Tokenizer) -> Result<Option<JinjaTemplate>> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let source = std::fs::read_to_string(&jinja)
                .map_err(|e| Error::load(&jinja, format!("cannot read: {e}")))?;
            return JinjaTemplate::new(source, &jinja, tokenizer).map(Some);
        }
        for name in ["chat_template.json", "tokenizer_config.json"] {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::load(&path, format!("cannot read: {e}")))?;
            let json: Value = serde_json::from_str(&text)
                .map_err(|e| Error::load(&path, format!("not valid JSON: {e}")))?;
            if let Some(source) = template_field(&json) {
                return JinjaTemplate::new(source, &path, tokenizer).map(Some);
            }
        }
        Ok(None)
    }

    /// Compiles `source` once to report syntax errors at load, naming where it came from.
    pub fn new(source: String, origin: &Path, tokenizer: &Tokenizer) -> Result<JinjaTemplate> {
        let name = |id: Option<u32>| {
            id.map(|id| tokenizer.decode(&[id], false))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let template = JinjaTemplate {
            bos_token: name(tokenizer.bos_id())?,
            eos_token: name(tokenizer.eos_id())?,
            source,
            origin: origin.to_path_buf(),
        };
        let mut env = environment();
        env.add_template("chat", &template.source).map_err(|e| {
            Error::load(origin, format!("the chat template does not compile: {e:#}"))
        })?;
        Ok(template)
    }

    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The prompt text, message contents escaped so their control strings stay text.
    pub fn render(&self, tokenizer: &Tokenizer, messages: &[Message]) -> Result<String> {
        self.render_with_tools(tokenizer, messages, &[])
    }

    /// As `render`, with `tools` given to the template (omitted when empty, as transformers
    /// omits `tools=None`).
    pub fn render_with_tools(
        &self,
        tokenizer: &Tokenizer,
        messages: &[Message],
        tools: &[ToolSpec],
    ) -> Result<String> {
        // A template that never reads `tools` would drop them silently.
        if !tools.is_empty() && !self.source.contains("tools") {
            return Err(Error::load(
                &self.origin,
                "the chat template does not use `tools`: this model's format has no tool calling",
            ));
        }
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| message_json(tokenizer, m))
            .collect();
        let tools: Option<Vec<Value>> = (!tools.is_empty()).then(|| {
            tools
                .iter()
                .map(|t| escape_strings(tokenizer, t.to_prompt_json()))
                .collect()
        });
        let mut env = environment();
        let fail = |e: minijinja::Error| {
            Error::load(
                &self.origin,
                format!("the chat template failed to render: {e:#}"),
            )
        };
        env.add_template("chat", &self.source).map_err(fail)?;
        env.get_template("chat")
            .and_then(|t| {
                t.render(context! {
                    messages => messages,
                    tools => tools,
                    bos_token => self.bos_token,
                    eos_token => self.eos_token,
                    add_generation_prompt => true,
                })
            })
            .map_err(fail)
    }
}

/// A message as an OpenAI chat request carries it: `tool_calls` on assistant messages (content
/// null when there is none), `tool_call_id` on tool messages.
fn message_json(tokenizer: &Tokenizer, m: &Message) -> Value {
    let content = Value::String(tokenizer.escape_controls(&m.content));
    let mut out = serde_json::Map::new();
    out.insert("role".into(), Value::String(m.role.as_str().into()));
    if m.role == Role::Assistant && !m.tool_calls.is_empty() {
        let no_content = m.content.is_empty();
        out.insert(
            "content".into(),
            if no_content { Value::Null } else { content },
        );
        let calls = m
            .tool_calls
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id,
                    "type": "function",
                    "function": {
                        "name": c.name,
                        "arguments": escape_strings(tokenizer, tools::arguments_value(&c.arguments)),
                    },
                })
            })
            .collect();
        out.insert("tool_calls".into(), Value::Array(calls));
    } else if !m.images.is_empty() {
        // As an OpenAI request carries it: image parts, then the text (mistral-common's order);
        // Mistral3 templates write one `[IMG]` per image part, expanded after tokenising.
        let mut parts: Vec<Value> = m
            .images
            .iter()
            .map(|_| serde_json::json!({"type": "image"}))
            .collect();
        parts.push(serde_json::json!({"type": "text", "text": content}));
        out.insert("content".into(), Value::Array(parts));
    } else {
        out.insert("content".into(), content);
    }
    if let Some(id) = &m.tool_call_id {
        out.insert("tool_call_id".into(), Value::String(id.clone()));
    }
    Value::Object(out)
}

/// Every string in `value` with its control-token text marked, so that "[INST]" inside tool
/// arguments or descriptions stays text after `tojson` (mistral-common encodes it as text).
fn escape_strings(tokenizer: &Tokenizer, value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(tokenizer.escape_controls(&s)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| escape_strings(tokenizer, v))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (tokenizer.escape_controls(&k), escape_strings(tokenizer, v)))
                .collect(),
        ),
        other => other,
    }
}

/// `chat_template` as a string, or the `default` entry of a list of named templates.
fn template_field(json: &Value) -> Option<String> {
    match json.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

fn environment<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    // transformers' tojson is json.dumps (", " separators, no HTML escaping); minijinja's own
    // writes compact JSON, which would change the tools text inside the prompt.
    env.add_filter(
        "tojson",
        |value: minijinja::Value,
         kwargs: minijinja::value::Kwargs|
         -> std::result::Result<minijinja::Value, minijinja::Error> {
            let indent: Option<usize> = kwargs.get("indent")?;
            kwargs.assert_all_used()?;
            let json = serde_json::to_value(&value).map_err(|e| {
                minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}"))
            })?;
            Ok(minijinja::Value::from_safe_string(pyjson::dumps(
                &json, indent,
            )))
        },
    );
    env.add_function("strftime_now", |format: String| {
        strftime(&format, now_utc())
    });
    env
}

/// Year, month, day, hour, minute, second of the current UTC time.
fn now_utc() -> [i64; 6] {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    [year, month, day, rem / 3600, rem / 60 % 60, rem % 60]
}

/// The strftime directives chat templates use (dates in system prompts).
fn strftime(format: &str, [y, mo, d, h, mi, s]: [i64; 6]) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let month = MONTHS[(mo - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('m') => out.push_str(&format!("{mo:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('-') => match chars.next() {
                Some('d') => out.push_str(&d.to_string()),
                Some('m') => out.push_str(&mo.to_string()),
                Some(other) => out.extend(['%', '-', other]),
                None => out.push_str("%-"),
            },
            Some('B') => out.push_str(month),
            Some('b') => out.push_str(&month[..3]),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('M') => out.push_str(&format!("{mi:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('%') => out.push('%'),
            Some(other) => out.extend(['%', other]),
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strftime;

    #[test]
    fn strftime_formats_the_directives_templates_use() {
        let t = [2025, 3, 7, 9, 5, 1];
        assert_eq!(strftime("%Y-%m-%d", t), "2025-03-07");
        assert_eq!(strftime("%d %B %Y", t), "07 March 2025");
        assert_eq!(strftime("%-d %b %y %H:%M:%S %%", t), "7 Mar 25 09:05:01 %");
    }
}
