//! Conversations to prompt ids: the model's own Jinja chat template when its folder has one,
//! else a built-in Mistral formatter (V7-Tekken for Small 3.x, V3-Tekken for Nemo) that builds
//! the ids as mistral-common does. Both carry OpenAI tool calling (`tools`): see tools.rs.

mod jinja;
mod mistral;
mod named;
mod pyjson;
mod tools;

use std::path::Path;
use std::sync::Arc;

use crate::vision::{expand_image_placeholders, ImageProcessor, ImageTokenIds, Prompt};

use kiln_runtime::gguf::GgufFile;
use kiln_runtime::{Error, Result};

pub use jinja::JinjaTemplate;
pub use mistral::MistralFormat;
pub use tools::{
    parse_tool_calls, parse_tool_calls_text, tool_calls_start, ToolCall, ToolCallIds, ToolSpec,
};

use crate::tokenizer::Tokenizer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result, answering one call of the assistant message before it.
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// The calls an assistant message made (empty otherwise).
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool message answers (None otherwise).
    pub tool_call_id: Option<String>,
    /// Images of a user message, in order; their tokens go before the text, as mistral-common
    /// puts them.
    pub images: Vec<std::sync::Arc<crate::vision::DecodedImage>>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            images: Vec::new(),
        }
    }

    /// An assistant message that only calls tools.
    pub fn assistant_tool_calls(calls: Vec<ToolCall>) -> Message {
        Message {
            tool_calls: calls,
            ..Message::new(Role::Assistant, "")
        }
    }

    /// A tool's result for the call `id`.
    pub fn tool(id: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            tool_call_id: Some(id.into()),
            ..Message::new(Role::Tool, content)
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

    /// A GGUF file's `tokenizer.chat_template`: Jinja, or the name of one of llama.cpp's Mistral
    /// templates (`named.rs`); without one, the built-in Mistral format the tokenizer implies.
    pub fn for_gguf(file: &GgufFile, tokenizer: &Tokenizer) -> Result<ChatTemplate> {
        let source = file
            .get_str("tokenizer.chat_template")
            .filter(|s| !s.trim().is_empty());
        let Some(source) = source else {
            return Ok(ChatTemplate::Mistral(MistralFormat::for_tokenizer(
                tokenizer,
            )));
        };
        if !named::is_template_name(source) {
            return Ok(ChatTemplate::Jinja(JinjaTemplate::new(
                source.to_string(),
                file.path(),
                tokenizer,
            )?));
        }
        match named::named_template(source.trim()) {
            Some(named::Named::Builtin(format)) => Ok(ChatTemplate::Mistral(format)),
            Some(named::Named::Jinja(jinja)) => Ok(ChatTemplate::Jinja(JinjaTemplate::new(
                jinja.to_string(),
                file.path(),
                tokenizer,
            )?)),
            None => Err(Error::load(
                file.path(),
                format!(
                    "tokenizer.chat_template names llama.cpp's built-in template `{source}`, which \
                     kiln does not have (it knows mistral-v1, -v3, -v7, -v3-tekken, -v7-tekken); \
                     pass --chat-template with a Jinja file"
                ),
            )),
        }
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
        self.encode_with_tools(tokenizer, messages, &[])
    }

    /// The prompt for `messages` with their images: each message's images prepared by
    /// `processor` (the model's; `None` for a model without a vision encoder, which then refuses
    /// images) and laid out as `[IMG]` rows where the template places them.
    pub fn encode_prompt(
        &self,
        tokenizer: &Tokenizer,
        messages: &[Message],
        tools: &[ToolSpec],
        processor: Option<&ImageProcessor>,
    ) -> Result<Prompt> {
        let ids = self.encode_with_tools(tokenizer, messages, tools)?;
        let count: usize = messages.iter().map(|m| m.images.len()).sum();
        if count == 0 {
            return Ok(Prompt::text(ids));
        }
        let Some(processor) = processor else {
            return Err(Error::shape(
                "chat",
                format!("{count} images given to a model without a vision encoder"),
            ));
        };
        let tokens = ImageTokenIds::from_tokenizer(tokenizer).ok_or_else(|| {
            Error::load(
                tokenizer.path(),
                "the tokenizer has no [IMG], [IMG_BREAK] and [IMG_END] tokens, which images need",
            )
        })?;
        let prepared = messages
            .iter()
            .flat_map(|m| m.images.iter())
            .map(|image| processor.process(image).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        expand_image_placeholders(&ids, prepared, tokens)
    }

    /// The prompt ids for `messages` with `tools` offered to the model (none: as `encode`).
    /// Tool calls and results are checked first: ids of 9 letters or digits, each result
    /// answering a call of the assistant message before it, every call answered.
    pub fn encode_with_tools(
        &self,
        tokenizer: &Tokenizer,
        messages: &[Message],
        tools: &[ToolSpec],
    ) -> Result<Vec<u32>> {
        if messages.is_empty() {
            return Err(Error::shape("chat template", "no messages"));
        }
        match self {
            ChatTemplate::Jinja(t) => {
                tools::check_conversation(messages)?;
                let mut ids =
                    tokenizer.encode_rendered(&t.render_with_tools(tokenizer, messages, tools)?)?;
                // A GGUF's prompt starts with BOS whether or not its template writes one, as
                // llama.cpp tokenizes it.
                if let Some(bos) = tokenizer.bos_id().filter(|_| tokenizer.adds_bos()) {
                    if ids.first() != Some(&bos) {
                        ids.insert(0, bos);
                    }
                }
                Ok(ids)
            }
            ChatTemplate::Mistral(f) => f.encode_with_tools(tokenizer, messages, tools),
        }
    }
}
