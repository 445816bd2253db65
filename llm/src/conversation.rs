//! A multi-turn conversation: its messages and its session (KV cache). Each turn renders the
//! whole conversation through the chat template; the session runs only the ids after the prefix
//! it already holds, so a turn costs its new tokens, not the history.

use kiln_runtime::{DType, Result};

use crate::chat::Message;
use crate::chat_model::ChatModel;
use crate::generate::{generate_prompt, Flow, GenerateOptions, Generation};
use crate::session::Session;

pub struct Conversation {
    system: Option<String>,
    messages: Vec<Message>,
    session: Session,
}

impl Conversation {
    pub fn new(chat: &ChatModel, context: usize, kv_dtype: DType) -> Result<Conversation> {
        Ok(Conversation {
            system: None,
            messages: Vec::new(),
            session: Session::new(&chat.model, context, kv_dtype)?,
        })
    }

    /// Sets (or with `None` clears) the system prompt; the next turn re-renders from it.
    pub fn set_system(&mut self, system: Option<String>) {
        self.system = system.filter(|s| !s.is_empty());
    }

    /// Forgets the turns (the system prompt stays; the cache buffers stay allocated).
    pub fn reset(&mut self) {
        self.messages.clear();
        self.session.reset();
    }

    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Adds `user` and generates the assistant's reply, streaming its text to `on_text`. The
    /// reply (as far as it got) joins the conversation; a failed turn leaves it unchanged.
    pub fn reply(
        &mut self,
        chat: &ChatModel,
        user: &str,
        options: &GenerateOptions,
        on_text: impl FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        self.reply_to(chat, Message::user(user), options, on_text)
    }

    /// As [`reply`](Self::reply) for a user message that may carry images (they stay in the
    /// conversation: later turns see them where they were sent).
    pub fn reply_to(
        &mut self,
        chat: &ChatModel,
        user: Message,
        options: &GenerateOptions,
        on_text: impl FnMut(&str) -> Flow,
    ) -> Result<Generation> {
        let mut messages: Vec<Message> = self.system.iter().map(Message::system).collect();
        messages.extend(self.messages.iter().cloned());
        messages.push(user.clone());
        let prompt = chat.template.encode_prompt(
            &chat.tokenizer,
            &messages,
            &[],
            chat.image_processor().as_ref(),
        )?;
        let generation = generate_prompt(
            &chat.model,
            &chat.tokenizer,
            &mut self.session,
            &prompt,
            options,
            on_text,
        )?;
        self.messages.push(user);
        self.messages
            .push(Message::assistant(generation.text.clone()));
        Ok(generation)
    }
}
