//! Serving several replies at once on one loaded model: a fixed set of slots, each a `Session`
//! (its own KV cache) and at most one reply in progress. Every step runs one batched forward
//! pass over all slots that are decoding (`Mistral::forward_batch`), so the weights are read once
//! per step for all of them: while decoding is bandwidth-bound, four streams cost little more
//! than one.
//!
//! A new reply takes the free slot whose cache shares the longest prefix with its prompt, so a
//! multi-turn chat that comes back to its slot prefills only its new turn. The prompt is
//! prefilled when the reply starts (the other slots wait for that one pass).
//!
//! The engine owns no model: the caller passes the model and tokenizer to each call, so the
//! model stays the caller's to load, switch or drop between replies.

use std::time::Instant;

use kiln_runtime::{DType, Error, Result};

use crate::generate::{Flow, GenerateOptions, Generation};
use crate::model::Mistral;
use crate::sampling::Sampled;
use crate::sequence::{ModelOutput, Sequence};
use crate::session::{decode_batch, Session};
use crate::tokenizer::Tokenizer;
use crate::vision::PromptImage;

/// What a reply's sink hears, in order: any number of `Token`s, then one `Done` or `Failed`.
pub enum EngineEvent<'a> {
    /// One generated token and the text that became final with it (may be empty; the EOS that
    /// ends a reply comes with `sampled` of the EOS and the text still held back).
    Token {
        text: &'a str,
        sampled: &'a Sampled,
    },
    Done(Generation),
    Failed(Error),
}

/// Receives a reply's events; returning `Flow::Stop` ends the reply at once (its reader went
/// away), freeing the slot.
pub type Sink = Box<dyn FnMut(EngineEvent<'_>) -> Flow + Send>;

/// One reply to start.
pub struct EngineRequest {
    /// The whole conversation's ids, as the chat template rendered them.
    pub prompt: Vec<u32>,
    /// The images among `prompt`'s positions (none for a text prompt).
    pub images: Vec<PromptImage>,
    pub options: GenerateOptions,
}

struct Active {
    seq: Sequence,
    sink: Sink,
    decode_start: Instant,
}

struct Slot {
    session: Session,
    active: Option<Active>,
    /// Engine steps since the slot last served; the least recently used free slot is reused
    /// first when no cache matches, keeping recent conversations' caches longest.
    last_used: u64,
}

pub struct Engine {
    slots: Vec<Slot>,
    clock: u64,
}

impl Engine {
    /// `slots` sessions of `context` positions each, cached in `kv_dtype`.
    pub fn new(model: &Mistral, slots: usize, context: usize, kv_dtype: DType) -> Result<Engine> {
        if slots == 0 {
            return Err(Error::shape("engine", "at least one slot is needed"));
        }
        let slots = (0..slots)
            .map(|_| {
                Ok(Slot {
                    session: Session::new(model, context, kv_dtype)?,
                    active: None,
                    last_used: 0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Engine { slots, clock: 0 })
    }

    /// Positions each slot holds.
    pub fn context(&self) -> usize {
        self.slots[0].session.context()
    }

    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Replies in progress.
    pub fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.active.is_some()).count()
    }

    pub fn free_slots(&self) -> usize {
        self.slots.len() - self.active()
    }

    /// Prompt tokens the best free slot already holds for `prompt` (0 when no slot is free).
    pub fn cached_prefix(&self, prompt: &[u32]) -> usize {
        self.pick_slot(prompt).map_or(0, |(_, n)| n)
    }

    fn pick_slot(&self, prompt: &[u32]) -> Option<(usize, usize)> {
        let shared = |s: &Slot| {
            s.session
                .tokens()
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
        };
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none())
            .map(|(i, s)| (i, shared(s), s.last_used))
            // Longest shared prefix; among equals, the least recently used.
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
            .map(|(i, n, _)| (i, n))
    }

    /// Starts a reply in a free slot: checks the request, prefills its prompt and generates its
    /// first token (reported to `sink`). A request that cannot start is an error and `sink` hears
    /// nothing; a reply that ends at its first token is already done when this returns.
    pub fn start(
        &mut self,
        model: &Mistral,
        tokenizer: &Tokenizer,
        request: EngineRequest,
        sink: Sink,
    ) -> Result<()> {
        let Some((index, _)) = self.pick_slot(&request.prompt) else {
            return Err(Error::limit(
                "engine",
                format!("all {} slots are busy", self.slots.len()),
            ));
        };
        self.clock += 1;
        let slot = &mut self.slots[index];
        slot.last_used = self.clock;
        let mut seq = Sequence::new(
            tokenizer,
            &model.config.eos_token_ids,
            model.config.vocab_size,
            &request.prompt,
            slot.session.context(),
            &request.options,
        )?;
        let start = Instant::now();
        let (step, prefilled) = if seq.wants_logits() {
            let (logits, run) =
                slot.session
                    .prefill_parts(model, &request.prompt, &request.images)?;
            (seq.advance(tokenizer, ModelOutput::Logits(&logits))?, run)
        } else {
            let (id, run) =
                slot.session
                    .prefill_parts_greedy(model, &request.prompt, &request.images)?;
            (seq.advance(tokenizer, ModelOutput::Id(id))?, run)
        };
        seq.set_prefill(prefilled, start.elapsed());
        let mut active = Active {
            seq,
            sink,
            decode_start: Instant::now(),
        };
        if report(&mut active, &step.text) == Flow::Stop {
            active.seq.interrupt();
            finish(active);
        } else if step.done {
            finish(active);
        } else {
            slot.active = Some(active);
        }
        Ok(())
    }

    /// One batched decode step for every reply in progress. A failure of the forward pass fails
    /// every reply in it (each sink hears `Failed`) and is returned; the slots are free after it.
    pub fn step(&mut self, model: &Mistral, tokenizer: &Tokenizer) -> Result<()> {
        self.clock += 1;
        let clock = self.clock;
        let mut ids = Vec::new();
        let mut sessions = Vec::new();
        let mut actives = Vec::new();
        for slot in self.slots.iter_mut() {
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            let Some(id) = active.seq.last_token() else {
                continue;
            };
            slot.last_used = clock;
            ids.push(id);
            sessions.push(&mut slot.session);
            actives.push(&mut slot.active);
        }
        if ids.is_empty() {
            return Ok(());
        }
        let rows = decode_batch(model, &mut sessions, &ids).and_then(|l| l.to_vec_f32());
        let logits = match rows {
            Ok(l) => l,
            Err(e) => {
                for active in actives {
                    if let Some(mut a) = active.take() {
                        (a.sink)(EngineEvent::Failed(Error::shape(
                            "engine step",
                            e.to_string(),
                        )));
                    }
                }
                return Err(e);
            }
        };
        let vocab = logits.len() / ids.len();
        for (row, slot_active) in logits.chunks_exact(vocab).zip(actives) {
            let Some(active) = slot_active.as_mut() else {
                continue;
            };
            let step = match active.seq.advance(tokenizer, ModelOutput::Logits(row)) {
                Ok(step) => step,
                Err(e) => {
                    if let Some(mut a) = slot_active.take() {
                        (a.sink)(EngineEvent::Failed(e));
                    }
                    continue;
                }
            };
            let stop = report(active, &step.text) == Flow::Stop;
            if stop || step.done {
                if let Some(mut a) = slot_active.take() {
                    if stop && !step.done {
                        a.seq.interrupt();
                    }
                    finish(a);
                }
            }
        }
        Ok(())
    }

    /// Ends every reply in progress (their sinks hear `Failed` with `why`).
    pub fn abort_all(&mut self, why: &str) {
        for slot in self.slots.iter_mut() {
            if let Some(mut a) = slot.active.take() {
                (a.sink)(EngineEvent::Failed(Error::limit("engine", why.to_string())));
            }
        }
    }
}

/// Tells the sink about the token just generated.
fn report(active: &mut Active, text: &str) -> Flow {
    let Active { seq, sink, .. } = active;
    let Some(sampled) = seq.generation().sampled.last() else {
        return Flow::Continue;
    };
    sink(EngineEvent::Token { text, sampled })
}

fn finish(active: Active) {
    let Active {
        seq,
        mut sink,
        decode_start,
    } = active;
    sink(EngineEvent::Done(seq.finish(decode_start.elapsed())));
}
