//! OpenAI tool calling on Mistral's formats: the tools a request offers, the calls an assistant
//! made and their results (checked as mistral-common's validator checks them), and the model's
//! `[TOOL_CALLS]` output parsed back into calls.

use kiln_runtime::{Error, Result};
use serde_json::{Map, Value};

use super::{pyjson, Message, Role};
use crate::tokenizer::Tokenizer;

/// One function call, as OpenAI's `tool_calls[]` carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    /// Nine ASCII letters or digits (what Mistral's formats accept).
    pub id: String,
    pub name: String,
    /// The arguments as JSON text (an object), as OpenAI carries them.
    pub arguments: String,
}

/// One function the model may call: OpenAI's `tools[].function`.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: Option<String>,
    /// The JSON schema of the arguments; `null` counts as `{}` (as mistral-common's from_openai).
    pub parameters: Value,
    /// Not part of the prompt (mistral-common drops it); for the grammar that constrains output.
    pub strict: bool,
}

impl ToolSpec {
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`, the shape and
    /// key order mistral-common's `Tool.model_dump(exclude strict)` gives: a missing description
    /// is "" and missing parameters `{}`.
    pub fn to_prompt_json(&self) -> Value {
        let parameters = match &self.parameters {
            Value::Null => Value::Object(Map::new()),
            p => p.clone(),
        };
        let mut function = Map::new();
        function.insert("name".into(), Value::String(self.name.clone()));
        function.insert(
            "description".into(),
            Value::String(self.description.clone().unwrap_or_default()),
        );
        function.insert("parameters".into(), parameters);
        let mut tool = Map::new();
        tool.insert("type".into(), Value::String("function".into()));
        tool.insert("function".into(), Value::Object(function));
        Value::Object(tool)
    }
}

/// The `[AVAILABLE_TOOLS]` text: `json.dumps([tool, ...], ensure_ascii=False)`.
pub(crate) fn tools_text(tools: &[ToolSpec]) -> Result<String> {
    for (i, t) in tools.iter().enumerate() {
        check_name(&t.name, &format!("tools[{i}].function.name"))?;
        if !matches!(t.parameters, Value::Object(_) | Value::Null) {
            return Err(Error::shape(
                &format!("tools[{i}].function.parameters"),
                "must be a JSON schema object",
            ));
        }
    }
    let list = Value::Array(tools.iter().map(ToolSpec::to_prompt_json).collect());
    Ok(pyjson::dumps(&list, None))
}

/// Arguments as mistral-common puts them in a prompt: the parsed JSON when the text is JSON
/// (re-spelled by `json.dumps`), else the text itself as a string; empty text is `{}`.
pub(crate) fn arguments_value(arguments: &str) -> Value {
    if arguments.is_empty() {
        return Value::Object(Map::new());
    }
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_string()))
}

/// `[{"name": ..., "arguments": ..., "id": ...}, ...]` after `[TOOL_CALLS]` (V3 and V7).
pub(crate) fn calls_text(calls: &[ToolCall]) -> String {
    let list = calls
        .iter()
        .map(|c| {
            let mut call = Map::new();
            call.insert("name".into(), Value::String(c.name.clone()));
            call.insert("arguments".into(), arguments_value(&c.arguments));
            call.insert("id".into(), Value::String(c.id.clone()));
            Value::Object(call)
        })
        .collect();
    pyjson::dumps(&Value::Array(list), None)
}

pub(crate) fn check_id(id: &str, field: &str) -> Result<()> {
    if id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(());
    }
    Err(Error::shape(
        field,
        format!("tool call id `{id}` must be 9 ASCII letters or digits"),
    ))
}

fn check_name(name: &str, field: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        return Ok(());
    }
    Err(Error::shape(
        field,
        format!("function name `{name}` must be 1 to 64 of a-z, A-Z, 0-9, _ and -"),
    ))
}

/// The pairing rules of mistral-common's validator (V11's, by id): tool calls only on
/// assistant messages, results only on tool messages, each result answers a call of the last
/// assistant message once, and every call is answered before the next assistant message and by
/// the end of the conversation.
pub(crate) fn check_conversation(messages: &[Message]) -> Result<()> {
    let mut pending: Vec<&str> = Vec::new();
    let mut answered: Vec<&str> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m.role != Role::Assistant && !m.tool_calls.is_empty() {
            return Err(Error::shape(
                &format!("messages[{i}].tool_calls"),
                format!(
                    "only assistant messages carry tool calls, not {}",
                    m.role.as_str()
                ),
            ));
        }
        if m.role != Role::Tool && m.tool_call_id.is_some() {
            return Err(Error::shape(
                &format!("messages[{i}].tool_call_id"),
                format!(
                    "only tool messages carry a tool_call_id, not {}",
                    m.role.as_str()
                ),
            ));
        }
        match m.role {
            Role::Assistant => {
                unanswered(&pending, &answered, &format!("messages[{i}]"))?;
                pending.clear();
                answered.clear();
                for (j, call) in m.tool_calls.iter().enumerate() {
                    let field = format!("messages[{i}].tool_calls[{j}]");
                    check_id(&call.id, &format!("{field}.id"))?;
                    check_name(&call.name, &format!("{field}.function.name"))?;
                    if pending.contains(&call.id.as_str()) {
                        return Err(Error::shape(
                            &format!("{field}.id"),
                            format!("tool call id `{}` appears twice in one message", call.id),
                        ));
                    }
                    pending.push(&call.id);
                }
            }
            Role::Tool => {
                let field = format!("messages[{i}].tool_call_id");
                let Some(id) = m.tool_call_id.as_deref() else {
                    return Err(Error::shape(
                        &field,
                        "a tool message needs the id of the call it answers",
                    ));
                };
                check_id(id, &field)?;
                if answered.contains(&id) {
                    return Err(Error::shape(
                        &field,
                        format!("tool call `{id}` is answered twice"),
                    ));
                }
                if !pending.contains(&id) {
                    return Err(Error::shape(
                        &field,
                        format!("`{id}` matches no tool call of the assistant message before it"),
                    ));
                }
                answered.push(id);
            }
            Role::System | Role::User => {}
        }
    }
    unanswered(&pending, &answered, "the end of the conversation")
}

fn unanswered(pending: &[&str], answered: &[&str], place: &str) -> Result<()> {
    let missing: Vec<&str> = pending
        .iter()
        .copied()
        .filter(|id| !answered.contains(id))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::shape(
        "messages",
        format!(
            "tool calls {} have no tool message with their result before {place}",
            missing.join(", ")
        ),
    ))
}

/// The control ids tool calling needs, or an error saying the format has none.
pub(crate) struct ToolTokens {
    pub available: u32,
    pub available_end: u32,
    pub results: u32,
    pub results_end: u32,
    pub calls: u32,
}

impl ToolTokens {
    pub fn require(tokenizer: &Tokenizer) -> Result<ToolTokens> {
        let get = |name: &str| {
            tokenizer.token_id(name).ok_or_else(|| {
                Error::load(
                    tokenizer.path(),
                    format!("the tokenizer has no `{name}` token: this model's chat format has no tool calling"),
                )
            })
        };
        Ok(ToolTokens {
            available: get("[AVAILABLE_TOOLS]")?,
            available_end: get("[/AVAILABLE_TOOLS]")?,
            results: get("[TOOL_RESULTS]")?,
            results_end: get("[/TOOL_RESULTS]")?,
            calls: get("[TOOL_CALLS]")?,
        })
    }
}

/// Makes tool-call ids: 9 ASCII letters and digits, the same sequence for the same seed.
#[derive(Clone, Debug)]
pub struct ToolCallIds {
    state: u64,
}

impl ToolCallIds {
    pub fn new(seed: u64) -> ToolCallIds {
        ToolCallIds { state: seed }
    }

    pub fn next_id(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        // splitmix64: well mixed even for counter-like seeds.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (0..9)
            .map(|_| {
                let c = ALPHABET[(z % 62) as usize] as char;
                z /= 62;
                c
            })
            .collect()
    }
}

/// Where the tool-call part of a reply starts: the index of the first `[TOOL_CALLS]` id in
/// `generated`. Ids before it are content; a streaming server stops sending content there.
/// None when the reply has no tool calls (or the tokenizer has no `[TOOL_CALLS]` token).
pub fn tool_calls_start(tokenizer: &Tokenizer, generated: &[u32]) -> Option<usize> {
    let calls = tokenizer.token_id("[TOOL_CALLS]")?;
    generated.iter().position(|&id| id == calls)
}

/// The tool calls of a reply: None when it has no `[TOOL_CALLS]` id, else the calls the JSON
/// after it names (`[{"name", "arguments"}, ...]`; each later `[TOOL_CALLS]` may add another
/// list), each with a fresh id from `ids`. Text from the end-of-sequence id on is ignored.
/// Malformed JSON or a call without a name is an error naming the text.
pub fn parse_tool_calls(
    tokenizer: &Tokenizer,
    generated: &[u32],
    ids: &mut ToolCallIds,
) -> Result<Option<Vec<ToolCall>>> {
    let Some(start) = tool_calls_start(tokenizer, generated) else {
        return Ok(None);
    };
    let calls_id = generated[start];
    let mut rest = &generated[start + 1..];
    if let Some(end) = rest.iter().position(|&id| Some(id) == tokenizer.eos_id()) {
        rest = &rest[..end];
    }
    let mut calls = Vec::new();
    for part in rest.split(|&id| id == calls_id) {
        let text = tokenizer.decode(part, false)?;
        calls.extend(parse_tool_calls_text(&text, ids)?);
    }
    Ok(Some(calls))
}

/// The calls named by the text after a `[TOOL_CALLS]` id: a JSON array of
/// `{"name", "arguments"}` objects (or one such object; `arguments` an object or JSON text
/// of one), each given a fresh id from `ids`.
pub fn parse_tool_calls_text(text: &str, ids: &mut ToolCallIds) -> Result<Vec<ToolCall>> {
    let what = "[TOOL_CALLS] output";
    let bad = |problem: String| Error::shape(what, format!("{problem} in `{}`", snippet(text)));
    let mut values = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        values.push(value.map_err(|e| bad(format!("not valid JSON ({e})")))?);
    }
    if values.is_empty() {
        return Err(bad("no JSON".into()));
    }
    let mut calls = Vec::new();
    for value in values {
        let objects = match value {
            Value::Array(items) => items,
            object @ Value::Object(_) => vec![object],
            other => return Err(bad(format!("expected a list of calls, got {other}"))),
        };
        for object in objects {
            let index = calls.len();
            let Value::Object(object) = object else {
                return Err(bad(format!("call {index} is not an object")));
            };
            let name = match object.get("name") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => return Err(bad(format!("call {index} has no \"name\" string"))),
            };
            let arguments = match object.get("arguments") {
                None | Some(Value::Null) => "{}".to_string(),
                Some(v @ Value::Object(_)) => serde_json::to_string(v)
                    .map_err(|e| bad(format!("call {index}'s arguments: {e}")))?,
                // Some models write the arguments as a JSON string holding an object.
                Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                    Ok(Value::Object(_)) => s.clone(),
                    _ => {
                        return Err(bad(format!(
                            "call {index}'s \"arguments\" string is not a JSON object"
                        )))
                    }
                },
                Some(other) => {
                    return Err(bad(format!(
                        "call {index}'s \"arguments\" is {other}, not an object"
                    )))
                }
            };
            calls.push(ToolCall {
                id: ids.next_id(),
                name,
                arguments,
            });
        }
    }
    Ok(calls)
}

/// The first 200 characters, for error messages.
fn snippet(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_nine_alphanumerics_and_repeat_for_a_seed() {
        let mut a = ToolCallIds::new(7);
        let first: Vec<String> = (0..50).map(|_| a.next_id()).collect();
        for id in &first {
            check_id(id, "id").unwrap();
        }
        let mut b = ToolCallIds::new(7);
        assert_eq!(b.next_id(), first[0]);
        assert_ne!(first[0], first[1]);
    }

    #[test]
    fn arguments_keep_their_key_order_and_non_json_stays_text() {
        let calls = [ToolCall {
            id: "abcDEF123".into(),
            name: "f".into(),
            arguments: r#"{"z":1,"a":[1.5,"x"]}"#.into(),
        }];
        assert_eq!(
            calls_text(&calls),
            r#"[{"name": "f", "arguments": {"z": 1, "a": [1.5, "x"]}, "id": "abcDEF123"}]"#
        );
        assert_eq!(
            arguments_value("not json"),
            Value::String("not json".into())
        );
        assert_eq!(arguments_value(""), serde_json::json!({}));
    }
}
