//! One reply being generated, as a state machine the caller drives: it takes what the model gave
//! after the last token (logits, or the id the device picked), samples, detokenises, checks EOS,
//! stop strings and `max_tokens`, and says which id to run next. `generate` drives one sequence
//! through its own session; the server's engine drives many through one batched forward pass each
//! step, so both share exactly these rules.

use std::time::Duration;

use kiln_runtime::{Error, Result};

use crate::constrain::{GrammarConstraint, TokenConstraint};
use crate::generate::{GenerateOptions, Generation};
use crate::sampling::{
    FinishReason, Sampled, Sampler, SamplingContext, SamplingError, StopMatcher, StopStep,
};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// What the model gave after the sequence's last token.
pub enum ModelOutput<'a> {
    /// One row of logits (`[vocab]`).
    Logits(&'a [f32]),
    /// The argmax the device picked (see [`Sequence::wants_logits`]).
    Id(u32),
}

/// What one step released.
#[derive(Debug, Default)]
pub struct SequenceStep {
    /// Text that became final with this token (may be empty).
    pub text: String,
    /// The sampled token, when one was generated (not at EOS).
    pub token: Option<u32>,
    /// The reply is over: [`Sequence::finish`] says why.
    pub done: bool,
}

pub struct Sequence {
    sampler: Sampler,
    stop: StopMatcher,
    detok: StreamDecoder,
    history: SamplingContext,
    eos: Vec<u32>,
    max_tokens: usize,
    on_device: bool,
    /// The grammar's state when the reply is constrained, and the masked copy of each logits row.
    constraint: Option<GrammarConstraint>,
    masked: Vec<f32>,
    out: Generation,
}

pub(crate) fn sampling_error(e: SamplingError) -> Error {
    Error::shape("sampling", e.to_string())
}

impl Sequence {
    /// A reply to `prompt` (the whole conversation's ids) in a context of `context` tokens. Fails
    /// when the prompt leaves no room, `max_tokens` does not fit, or the sampling settings are
    /// invalid for a vocabulary of `vocab` ids.
    pub fn new(
        tokenizer: &Tokenizer,
        eos_ids: &[u32],
        vocab: usize,
        prompt: &[u32],
        context: usize,
        options: &GenerateOptions,
    ) -> Result<Sequence> {
        let max_tokens = max_tokens(prompt.len(), context, options.max_tokens)?;
        let sampler = Sampler::new(options.sampling.clone(), vocab).map_err(sampling_error)?;
        let stop = StopMatcher::new(options.stop.iter().cloned()).map_err(sampling_error)?;
        let mut eos = eos_ids.to_vec();
        eos.extend(tokenizer.eos_id());
        Ok(Sequence {
            out: Generation {
                text: String::new(),
                tokens: Vec::new(),
                sampled: Vec::new(),
                finish: FinishReason::Length,
                interrupted: false,
                prompt_tokens: prompt.len(),
                prefilled: 0,
                prefill_time: Duration::ZERO,
                decode_time: Duration::ZERO,
                seed: sampler.seed(),
            },
            // The mask needs the logits, so a constrained reply never takes the device's argmax.
            on_device: options.sampling.is_plain_greedy() && options.constraint.is_none(),
            constraint: options.constraint.as_ref().map(|g| g.start()),
            masked: Vec::new(),
            sampler,
            stop,
            detok: tokenizer.stream(true),
            history: SamplingContext::new(prompt),
            eos,
            max_tokens,
        })
    }

    /// False when the next id is the logits' argmax and nothing is reported from them: the
    /// device may pick it and hand back only the id.
    pub fn wants_logits(&self) -> bool {
        !self.on_device
    }

    /// The last generated id: the one to run next while the sequence is not done.
    pub fn last_token(&self) -> Option<u32> {
        self.out.tokens.last().copied()
    }

    /// The reply so far.
    pub fn generation(&self) -> &Generation {
        &self.out
    }

    /// Records how the prompt was run (for the reply's statistics).
    pub fn set_prefill(&mut self, prefilled: usize, time: Duration) {
        self.out.prefilled = prefilled;
        self.out.prefill_time = time;
    }

    /// Takes the model's output after the last token and generates the next one.
    pub fn advance(
        &mut self,
        tokenizer: &Tokenizer,
        output: ModelOutput<'_>,
    ) -> Result<SequenceStep> {
        let sampled = match output {
            ModelOutput::Logits(logits) => {
                let logits = match &mut self.constraint {
                    Some(c) => {
                        self.masked.clear();
                        self.masked.extend_from_slice(logits);
                        c.mask(&mut self.masked)?;
                        &self.masked[..]
                    }
                    None => logits,
                };
                self.sampler
                    .sample(logits, &self.history)
                    .map_err(sampling_error)?
            }
            ModelOutput::Id(id) => Sampled {
                id,
                logprob: None,
                top_logprobs: Vec::new(),
            },
        };
        let id = sampled.id;
        // An id the grammar does not allow (only an id picked without the mask can be one) is
        // an error, never text that breaks the format.
        if let Some(c) = &mut self.constraint {
            c.commit(id)?;
        }
        self.history.push(id);
        self.out.sampled.push(sampled);
        if self.eos.contains(&id) {
            self.out.finish = FinishReason::Stop;
            let (text, _) = self.flush(tokenizer)?;
            return Ok(SequenceStep {
                text,
                token: None,
                done: true,
            });
        }
        self.out.tokens.push(id);
        let piece = self.detok.push(tokenizer, id)?;
        let (mut text, stopped) = match self.stop.push(&piece) {
            StopStep::Text(t) => (t, false),
            StopStep::Stopped { text, .. } => (text, true),
        };
        self.out.text.push_str(&text);
        let mut done = stopped;
        if stopped {
            self.out.finish = FinishReason::Stop;
        } else if self.out.tokens.len() == self.max_tokens {
            let (rest, stopped) = self.flush(tokenizer)?;
            text.push_str(&rest);
            if stopped {
                self.out.finish = FinishReason::Stop;
            }
            done = true;
        }
        Ok(SequenceStep {
            text,
            token: Some(id),
            done,
        })
    }

    /// The caller ended the reply early (its reader went away or asked to stop).
    pub fn interrupt(&mut self) {
        self.out.finish = FinishReason::Stop;
        self.out.interrupted = true;
    }

    /// The finished reply, with `decode_time` spent decoding.
    pub fn finish(mut self, decode_time: Duration) -> Generation {
        self.out.decode_time = decode_time;
        self.out
    }

    /// Releases the text held back at the end of the reply; true when it completed a stop string.
    fn flush(&mut self, tokenizer: &Tokenizer) -> Result<(String, bool)> {
        let rest = self.detok.finish(tokenizer)?;
        let (shown, stopped) = match self.stop.push(&rest) {
            StopStep::Text(t) => (t + &self.stop.finish(), false),
            StopStep::Stopped { text, .. } => (text, true),
        };
        self.out.text.push_str(&shown);
        Ok((shown, stopped))
    }
}

/// Tokens a reply may generate: `requested`, checked against the room the prompt leaves, or
/// all of that room.
pub fn max_tokens(prompt: usize, context: usize, requested: Option<usize>) -> Result<usize> {
    match requested {
        Some(0) => Err(Error::limit("generate", "max_tokens must be at least 1")),
        Some(n) if prompt + n > context => Err(Error::limit(
            "generate",
            format!(
                "the prompt's {prompt} tokens plus max_tokens {n} exceed the context of \
                 {context} tokens"
            ),
        )),
        Some(n) => Ok(n),
        None if prompt >= context => Err(Error::limit(
            "generate",
            format!(
                "the prompt's {prompt} tokens leave no room in the context of {context} tokens"
            ),
        )),
        None => Ok(context - prompt),
    }
}
