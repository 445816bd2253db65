//! The generation loop: prefill what the session has not cached, then sample and decode one
//! token at a time until EOS, a stop string, `max_tokens`, the context's end, or the caller says
//! stop. Text reaches the caller as it becomes final: whole characters, stop strings held back.

use std::time::{Duration, Instant};

use kiln_runtime::{Error, Result};

use crate::model::Mistral;
use crate::sampling::{
    FinishReason, Sampled, Sampler, SamplingContext, SamplingParams, StopMatcher, StopStep,
};
use crate::session::Session;
use crate::tokenizer::{StreamDecoder, Tokenizer};

#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    pub sampling: SamplingParams,
    /// Tokens to generate at most; `None`: until the context is full.
    pub max_tokens: Option<usize>,
    /// Strings that end the reply; they are not part of it.
    pub stop: Vec<String>,
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

fn sampling_error(e: crate::sampling::SamplingError) -> Error {
    Error::shape("sampling", e.to_string())
}

/// Generates the reply to `prompt` (the whole conversation's ids) in `session`.
pub fn generate(
    model: &Mistral,
    tokenizer: &Tokenizer,
    session: &mut Session,
    prompt: &[u32],
    options: &GenerateOptions,
    mut on_text: impl FnMut(&str) -> Flow,
) -> Result<Generation> {
    let context = session.context();
    let max_tokens = match options.max_tokens {
        Some(0) => return Err(Error::limit("generate", "max_tokens must be at least 1")),
        Some(n) if prompt.len() + n > context => {
            return Err(Error::limit(
                "generate",
                format!(
                "the prompt's {} tokens plus max_tokens {n} exceed the context of {context} tokens",
                prompt.len()
            ),
            ))
        }
        Some(n) => n,
        None if prompt.len() >= context => {
            return Err(Error::limit(
                "generate",
                format!(
                    "the prompt's {} tokens leave no room in the context of {context} tokens",
                    prompt.len()
                ),
            ))
        }
        None => context - prompt.len(),
    };
    let vocab = model.config.vocab_size;
    let mut sampler = Sampler::new(options.sampling.clone(), vocab).map_err(sampling_error)?;
    let mut stop = StopMatcher::new(options.stop.iter().cloned()).map_err(sampling_error)?;
    let mut eos: Vec<u32> = model.config.eos_token_ids.clone();
    eos.extend(tokenizer.eos_id());

    // When the choice is the logits' argmax and nothing is reported from them, the device picks
    // the id and only it comes back, rather than a vocabulary of logits per token.
    let on_device = options.sampling.is_plain_greedy();
    let start = Instant::now();
    let (mut next, prefilled) = if on_device {
        let (id, run) = session.prefill_greedy(model, prompt)?;
        (Next::Id(id), run)
    } else {
        let (logits, run) = session.prefill(model, prompt)?;
        (Next::Logits(logits), run)
    };
    let prefill_time = start.elapsed();

    let mut out = Generation {
        text: String::new(),
        tokens: Vec::new(),
        sampled: Vec::new(),
        finish: FinishReason::Length,
        interrupted: false,
        prompt_tokens: prompt.len(),
        prefilled,
        prefill_time,
        decode_time: Duration::ZERO,
        seed: sampler.seed(),
    };
    let mut history = SamplingContext::new(prompt);
    let mut detok = tokenizer.stream(true);
    let decode_start = Instant::now();
    loop {
        let sampled = match &next {
            Next::Logits(logits) => sampler.sample(logits, &history).map_err(sampling_error)?,
            Next::Id(id) => Sampled {
                id: *id,
                logprob: None,
                top_logprobs: Vec::new(),
            },
        };
        let id = sampled.id;
        history.push(id);
        out.sampled.push(sampled);
        if eos.contains(&id) {
            out.finish = FinishReason::Stop;
            flush(&mut detok, &mut stop, &mut out.text, &mut on_text)?;
            break;
        }
        out.tokens.push(id);
        let piece = detok.push(id)?;
        let (shown, stopped) = match stop.push(&piece) {
            StopStep::Text(t) => (t, false),
            StopStep::Stopped { text, .. } => (text, true),
        };
        out.text.push_str(&shown);
        let flow = if shown.is_empty() {
            Flow::Continue
        } else {
            on_text(&shown)
        };
        if stopped {
            out.finish = FinishReason::Stop;
            break;
        }
        if flow == Flow::Stop {
            out.finish = FinishReason::Stop;
            out.interrupted = true;
            break;
        }
        if out.tokens.len() == max_tokens {
            if flush(&mut detok, &mut stop, &mut out.text, &mut on_text)? {
                out.finish = FinishReason::Stop;
            }
            break;
        }
        next = if on_device {
            Next::Id(session.decode_greedy(model, id)?)
        } else {
            Next::Logits(session.decode(model, id)?)
        };
    }
    out.decode_time = decode_start.elapsed();
    Ok(out)
}

/// What a forward pass handed back: the logits for the sampler, or the greedy id chosen on the
/// device (see `SamplingParams::is_plain_greedy`).
enum Next {
    Logits(Vec<f32>),
    Id(u32),
}

/// Releases the text held back at the end of the reply; true when it completed a stop string.
fn flush(
    detok: &mut StreamDecoder<'_>,
    stop: &mut StopMatcher,
    text: &mut String,
    on_text: &mut impl FnMut(&str) -> Flow,
) -> Result<bool> {
    let rest = detok.finish()?;
    let (shown, stopped) = match stop.push(&rest) {
        StopStep::Text(t) => (t + &stop.finish(), false),
        StopStep::Stopped { text, .. } => (text, true),
    };
    if !shown.is_empty() {
        text.push_str(&shown);
        on_text(&shown);
    }
    Ok(stopped)
}
