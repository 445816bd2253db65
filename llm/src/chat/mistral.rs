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

use kiln_runtime::{Error, Result};

use super::{Message, Role};
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
        let messages = merge_runs(messages);
        let bos = tokenizer.require("<s>")?;
        let eos = tokenizer.require("</s>")?;
        let inst = tokenizer.require("[INST]")?;
        let inst_end = tokenizer.require("[/INST]")?;
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
                    ids.push(inst);
                    match (&system, Some(i) == last_user) {
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
                            "the conversation ends with an assistant message; it must end with a user message",
                        ));
                    }
                    ids.extend(tokenizer.encode(&m.content)?);
                    ids.push(eos);
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

/// Consecutive messages of one role joined by a blank line.
fn merge_runs(messages: &[Message]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    for m in messages {
        match out.last_mut() {
            Some(last) if last.role == m.role => {
                last.content.push_str("\n\n");
                last.content.push_str(&m.content);
            }
            _ => out.push(m.clone()),
        }
    }
    out
}
