//! The generation loop: prefill what the session has not cached, then sample and decode one
//! token at a time until EOS, a stop string, `max_tokens`, the context's end, or the caller says
//! stop. Text reaches the caller as it becomes final: whole characters, stop strings held back.

use std::time::{Duration, Instant};

use kiln_runtime::Result;

use crate::constrain::Grammar;
use crate::model::Mistral;
use crate::sampling::{FinishReason, Sampled, SamplingParams};
use crate::sequence::{ModelOutput, Sequence};
use crate::session::Session;
use crate::tokenizer::Tokenizer;
use crate::vision::{Prompt, PromptImage};

#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    pub sampling: SamplingParams,
    /// Tokens to generate at most; `None`: until the context is full.
    pub max_tokens: Option<usize>,
    /// Strings that end the reply; they are not part of it.
    pub stop: Vec<String>,
    /// A grammar the reply must follow (a JSON schema, a tool call, ...): each step, tokens it
    /// cannot accept are masked out of the logits before sampling (see `crate::constrain`). A
    /// reply cut by `max_tokens` (or a stop string) ends incomplete, with finish reason Length
    /// (Stop). Reported log-probabilities are those of the masked distribution.
    pub constraint: Option<Grammar>,
}

/// What the caller's callback tells the loop after each piece of text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub text: String,
    /// Generated ids, the EOS that ended the reply excluded.
    pub tokens: Vec<u32>,
    /// One entry per generated id (log-probabilities when asked for).
    pub sampled: Vec<Sampled>,
    pub finish: FinishReason,
    /// The caller stopped the reply.
    pub interrupted: bool,
    pub prompt_tokens: usize,
    /// Prompt tokens run this time (the rest came from the session's cache).
    pub prefilled: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    pub seed: u64,
}

impl Generation {
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prefilled as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }

    /// Tokens after the first (which comes from the prefill's logits) per second of decoding.
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.sampled.len().saturating_sub(1) as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// Generates the reply to `prompt` (the whole conversation's ids) in `session`.
pub fn generate(
    model: &Mistral,
    tokenizer: &Tokenizer,
    session: &mut Session,
    prompt: &[u32],
    options: &GenerateOptions,
    on_text: impl FnMut(&str) -> Flow,
) -> Result<Generation> {
    generate_with_images(model, tokenizer, session, prompt, &[], options, on_text)
}

/// [`generate`] for a prompt with images (`Prompt`: ids and the images' spans).
pub fn generate_prompt(
    model: &Mistral,
    tokenizer: &Tokenizer,
    session: &mut Session,
    prompt: &Prompt,
    options: &GenerateOptions,
    on_text: impl FnMut(&str) -> Flow,
) -> Result<Generation> {
    generate_with_images(
        model,
        tokenizer,
        session,
        &prompt.ids,
        &prompt.images,
        options,
        on_text,
    )
}

fn generate_with_images(
    model: &Mistral,
    tokenizer: &Tokenizer,
    session: &mut Session,
    prompt: &[u32],
    images: &[PromptImage],
    options: &GenerateOptions,
    mut on_text: impl FnMut(&str) -> Flow,
) -> Result<Generation> {
    let mut seq = Sequence::new(
        tokenizer,
        &model.config.eos_token_ids,
        model.config.vocab_size,
        prompt,
        session.context(),
        options,
    )?;
    // When the choice is the logits' argmax and nothing is reported from them, the device picks
    // the id and only it comes back, rather than a vocabulary of logits per token.
    let on_device = !seq.wants_logits();
    let start = Instant::now();
    let (mut next, prefilled) = if on_device {
        let (id, run) = session.prefill_parts_greedy(model, prompt, images)?;
        (Next::Id(id), run)
    } else {
        let (logits, run) = session.prefill_parts(model, prompt, images)?;
        (Next::Logits(logits), run)
    };
    seq.set_prefill(prefilled, start.elapsed());

    let decode_start = Instant::now();
    loop {
        let output = match &next {
            Next::Logits(logits) => ModelOutput::Logits(logits),
            Next::Id(id) => ModelOutput::Id(*id),
        };
        let step = seq.advance(tokenizer, output)?;
        if !step.text.is_empty() && on_text(&step.text) == Flow::Stop && !step.done {
            seq.interrupt();
            break;
        }
        let Some(id) = step.token.filter(|_| !step.done) else {
            break;
        };
        next = if on_device {
            Next::Id(session.decode_greedy(model, id)?)
        } else {
            Next::Logits(session.decode(model, id)?)
        };
    }
    Ok(seq.finish(decode_start.elapsed()))
}

/// What a forward pass handed back: the logits for the sampler, or the greedy id chosen on the
/// device (see `SamplingParams::is_plain_greedy`).
enum Next {
    Logits(Vec<f32>),
    Id(u32),
}
