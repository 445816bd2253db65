//! Mistral's instruct formats built id by id, as mistral-common's InstructTokenizerV3 / V7 do:
//! control ids placed directly and message text encoded as plain text, no spaces added.
//!
//! V7-Tekken (Small 3.x): `<s>` once, each system message as
//! `[SYSTEM_PROMPT]text[/SYSTEM_PROMPT]` where it stands, user turns `[INST]text[/INST]`,
//! assistant turns `text</s>`.
//! V3-Tekken (Nemo): the same without system turns: the system prompt goes before the last user
//! message's text, separated by a blank line.
//! Both merge consecutive messages of one role with a blank line, as mistral-common's
//! normaliser does.
//! Tools (InstructTokenizerV3 / V7): `[AVAILABLE_TOOLS]json[/AVAILABLE_TOOLS]` before the last
//! user `[INST]`; an assistant's calls `[TOOL_CALLS][{"name", "arguments", "id"}]` after its
//! text, then `</s>`; a result `[TOOL_RESULTS]id[TOOL_CONTENT]text[/TOOL_RESULTS]` in V7,
//! `[TOOL_RESULTS]{"content", "call_id"}[/TOOL_RESULTS]` in V3. JSON as Python writes it.

use kiln_runtime::{Error, Result};

use serde_json::Value;

use super::tools::{self, ToolTokens};
use super::{pyjson, Message, Role, ToolSpec};
use crate::tokenizer::Tokenizer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MistralFormat {
    V3Tekken,
    V7Tekken,
}

impl MistralFormat {
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> MistralFormat {
        match tokenizer.tekken_version() {
            Some("v3") => MistralFormat::V3Tekken,
            Some(_) => MistralFormat::V7Tekken,
            None if tokenizer.token_id("[SYSTEM_PROMPT]").is_some() => MistralFormat::V7Tekken,
            None => MistralFormat::V3Tekken,
        }
    }

    pub fn named(name: &str) -> Option<MistralFormat> {
        match name {
            "mistral-v7" | "mistral-v7-tekken" | "v7" => Some(MistralFormat::V7Tekken),
            "mistral-v3" | "mistral-v3-tekken" | "v3" => Some(MistralFormat::V3Tekken),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MistralFormat::V3Tekken => "mistral-v3-tekken",
            MistralFormat::V7Tekken => "mistral-v7-tekken",
        }
    }

    pub fn encode(self, tokenizer: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>> {
        self.encode_with_tools(tokenizer, messages, &[])
    }

    /// `messages` with `tools` offered, after checking that tool calls and results pair up.
    pub fn encode_with_tools(
        self,
        tokenizer: &Tokenizer,
        messages: &[Message],
        tools: &[ToolSpec],
    ) -> Result<Vec<u32>> {
        tools::check_conversation(messages)?;
        let messages = merge_runs(messages, self);
        let bos = tokenizer.require("<s>")?;
        let eos = tokenizer.require("</s>")?;
        let inst = tokenizer.require("[INST]")?;
        let inst_end = tokenizer.require("[/INST]")?;
        let uses_tools = !tools.is_empty()
            || messages
                .iter()
                .any(|m| m.role == Role::Tool || !m.tool_calls.is_empty());
        let tool_tokens = if uses_tools {
            Some(ToolTokens::require(tokenizer)?)
        } else {
            None
        };
        let tools_text = if tools.is_empty() {
            None
        } else {
            Some(tools::tools_text(tools)?)
        };
        let last_user = messages.iter().rposition(|m| m.role == Role::User);
        let system = match self {
            MistralFormat::V7Tekken => None,
            MistralFormat::V3Tekken => {
                let parts: Vec<&str> = messages
                    .iter()
                    .filter(|m| m.role == Role::System)
                    .map(|m| m.content.as_str())
                    .collect();
                (!parts.is_empty()).then(|| parts.join("\n\n"))
            }
        };
        let mut ids = vec![bos];
        for (i, m) in messages.iter().enumerate() {
            match m.role {
                Role::System => {
                    if self == MistralFormat::V7Tekken {
                        ids.push(tokenizer.require("[SYSTEM_PROMPT]")?);
                        ids.extend(tokenizer.encode(&m.content)?);
                        ids.push(tokenizer.require("[/SYSTEM_PROMPT]")?);
                    }
                }
                Role::User => {
                    let is_last = Some(i) == last_user;
                    // mistral-common offers the tools once, just before the last user turn.
                    if let (Some(text), Some(t), true) = (&tools_text, &tool_tokens, is_last) {
                        ids.push(t.available);
                        ids.extend(tokenizer.encode(text)?);
                        ids.push(t.available_end);
                    }
                    ids.push(inst);
                    // mistral-common puts a message's images before its text, wherever the
                    // request had them; one `[IMG]` each, expanded to the image's layout later.
                    if !m.images.is_empty() {
                        let img = tokenizer.require("[IMG]")?;
                        ids.extend(std::iter::repeat_n(img, m.images.len()));
                    }
                    match (&system, is_last) {
                        (Some(system), true) => {
                            ids.extend(tokenizer.encode(&format!("{system}\n\n{}", m.content))?)
                        }
                        _ => ids.extend(tokenizer.encode(&m.content)?),
                    }
                    ids.push(inst_end);
                }
                Role::Assistant => {
                    if i == messages.len() - 1 {
                        return Err(Error::shape(
                            self.name(),
                            "the conversation ends with an assistant message; it must end with a user or tool message",
                        ));
                    }
                    if self == MistralFormat::V3Tekken
                        && !m.tool_calls.is_empty()
                        && !m.content.is_empty()
                    {
                        return Err(Error::shape(
                            &format!("messages[{i}]"),
                            "mistral-v3-tekken cannot put content and tool calls in one assistant message",
                        ));
                    }
                    // mistral-common drops trailing spaces of assistant text.
                    ids.extend(tokenizer.encode(m.content.trim_end_matches(' '))?);
                    if let (false, Some(t)) = (m.tool_calls.is_empty(), &tool_tokens) {
                        ids.push(t.calls);
                        ids.extend(tokenizer.encode(&tools::calls_text(&m.tool_calls))?);
                    }
                    ids.push(eos);
                }
                Role::Tool => {
                    let (Some(t), Some(id)) = (&tool_tokens, &m.tool_call_id) else {
                        return Err(Error::shape(
                            &format!("messages[{i}].tool_call_id"),
                            "a tool message needs the id of the call it answers",
                        ));
                    };
                    ids.push(t.results);
                    match self {
                        // V7: [TOOL_RESULTS]id[TOOL_CONTENT]content[/TOOL_RESULTS], content as is.
                        MistralFormat::V7Tekken => {
                            ids.extend(tokenizer.encode(id)?);
                            ids.push(tokenizer.token_id("[TOOL_CONTENT]").ok_or_else(|| {
                                Error::load(
                                    tokenizer.path(),
                                    "the tokenizer has no `[TOOL_CONTENT]` token, which mistral-v7-tekken tool results need",
                                )
                            })?);
                            ids.extend(tokenizer.encode(&m.content)?);
                        }
                        // V3: {"content": parsed JSON or the text, "call_id": id} as JSON.
                        MistralFormat::V3Tekken => {
                            let mut result = serde_json::Map::new();
                            result.insert("content".into(), tools::arguments_value(&m.content));
                            result.insert("call_id".into(), Value::String(id.clone()));
                            let text = pyjson::dumps(&Value::Object(result), None);
                            ids.extend(tokenizer.encode(&text)?);
                        }
                    }
                    ids.push(t.results_end);
                }
            }
        }
        if last_user.is_none() {
            return Err(Error::shape(
                self.name(),
                "the conversation has no user message",
            ));
        }
        Ok(ids)
    }
}

/// Consecutive messages of one role joined as mistral-common's normaliser joins them: texts
/// (empty ones skipped) by a blank line, tool calls one after another. Tool results stay
/// apart, and so do V7's system messages (each its own [SYSTEM_PROMPT] block).
fn merge_runs(messages: &[Message], format: MistralFormat) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    for m in messages {
        let apart =
            m.role == Role::Tool || (m.role == Role::System && format == MistralFormat::V7Tekken);
        match out.last_mut() {
            Some(last) if last.role == m.role && !apart => {
                if !m.content.is_empty() {
                    if !last.content.is_empty() {
                        last.content.push_str("\n\n");
                    }
                    last.content.push_str(&m.content);
                }
                last.tool_calls.extend(m.tool_calls.iter().cloned());
                last.images.extend(m.images.iter().cloned());
            }
            _ => out.push(m.clone()),
        }
    }
    out
}
