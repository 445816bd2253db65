//! Conversations to prompt ids: the model's own Jinja chat template when its folder has one,
//! else a built-in Mistral formatter (V7-Tekken for Small 3.x, V3-Tekken for Nemo) that builds
//! the ids as mistral-common does.

mod jinja;
mod mistral;

use std::path::Path;

use kiln_runtime::{Error, Result};

pub use jinja::JinjaTemplate;
pub use mistral::MistralFormat;

use crate::tokenizer::Tokenizer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }

    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }
}

pub enum ChatTemplate {
    Jinja(JinjaTemplate),
    Mistral(MistralFormat),
}

impl ChatTemplate {
    /// The folder's template (`chat_template.jinja`, `chat_template.json`, then
    /// `tokenizer_config.json`'s `chat_template`), else the built-in Mistral format the tokenizer
    /// implies: V7-Tekken when it has `[SYSTEM_PROMPT]`, V3-Tekken otherwise.
    pub fn for_model(dir: &Path, tokenizer: &Tokenizer) -> Result<ChatTemplate> {
        if let Some(template) = JinjaTemplate::from_dir(dir, tokenizer)? {
            return Ok(ChatTemplate::Jinja(template));
        }
        Ok(ChatTemplate::Mistral(MistralFormat::for_tokenizer(
            tokenizer,
        )))
    }

    /// A template named on the command line: `mistral-v7`, `mistral-v3`, or a Jinja file.
    pub fn named(name: &str, tokenizer: &Tokenizer) -> Result<ChatTemplate> {
        if let Some(format) = MistralFormat::named(name) {
            return Ok(ChatTemplate::Mistral(format));
        }
        let path = Path::new(name);
        if !path.is_file() {
            return Err(Error::load(
                path,
                "not a chat template: name mistral-v7, mistral-v3 or a Jinja template file",
            ));
        }
        let source = std::fs::read_to_string(path)
            .map_err(|e| Error::load(path, format!("cannot read: {e}")))?;
        Ok(ChatTemplate::Jinja(JinjaTemplate::new(
            source, path, tokenizer,
        )?))
    }

    pub fn describe(&self) -> String {
        match self {
            ChatTemplate::Jinja(t) => format!("Jinja template from {}", t.origin().display()),
            ChatTemplate::Mistral(f) => format!("built-in {}", f.name()),
        }
    }

    /// The prompt ids for `messages`, ready for the assistant's next reply.
    pub fn encode(&self, tokenizer: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>> {
        if messages.is_empty() {
            return Err(Error::shape("chat template", "no messages"));
        }
        match self {
            ChatTemplate::Jinja(t) => tokenizer.encode_rendered(&t.render(tokenizer, messages)?),
            ChatTemplate::Mistral(f) => f.encode(tokenizer, messages),
        }
    }
}
