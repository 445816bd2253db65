//! What a request asks the reply to be, as OpenAI's `response_format` says it.

use serde_json::Value;

use super::{ConstraintError, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    /// Free text: no constraint.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against `schema`. The schema is enforced whatever `strict` says (a schema that
    /// cannot be enforced is refused rather than silently ignored).
    JsonSchema {
        name: String,
        schema: Value,
        strict: bool,
    },
}

impl ResponseFormat {
    /// OpenAI's `response_format` object: `{"type": "text"}`, `{"type": "json_object"}` or
    /// `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`.
    pub fn from_openai(value: &Value) -> Result<ResponseFormat> {
        let bad = |m: String| ConstraintError::Grammar(format!("response_format: {m}"));
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("expected an object with a string `type`".into()))?;
        match kind {
            "text" => Ok(ResponseFormat::Text),
            "json_object" => Ok(ResponseFormat::JsonObject),
            "json_schema" => {
                let spec = value
                    .get("json_schema")
                    .ok_or_else(|| bad("type json_schema needs a `json_schema` object".into()))?;
                let name = spec
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("json_schema.name must be a string".into()))?
                    .to_string();
                let schema = spec
                    .get("schema")
                    .cloned()
                    .ok_or_else(|| bad("json_schema.schema is missing".into()))?;
                let strict = match spec.get("strict") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(bad("json_schema.strict must be a boolean".into())),
                };
                Ok(ResponseFormat::JsonSchema {
                    name,
                    schema,
                    strict,
                })
            }
            other => Err(bad(format!(
                "unknown type `{other}` (expected text, json_object or json_schema)"
            ))),
        }
    }

    pub fn is_text(&self) -> bool {
        matches!(self, ResponseFormat::Text)
    }
}
