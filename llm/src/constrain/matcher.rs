//! One sequence's constraint: which tokens may come next (`mask`) and what came (`commit`).

use std::sync::Arc;

use llguidance::toktrie::SimpleVob;
use llguidance::{Matcher, TokenParser};

use super::{ConstraintError, Result, TokenVocabulary};

/// Per-sequence state of a constraint. Call `mask` on the logits before sampling, then `commit`
/// the sampled id (EOS included).
pub trait TokenConstraint: Send {
    /// Sets the logit of every token that may not come next to `f32::NEG_INFINITY`. EOS is
    /// allowed exactly when the text so far is complete; once finished, only EOS is.
    fn mask(&mut self, logits: &mut [f32]) -> Result<()>;
    /// Advances past `id`; an id the mask did not allow is an error.
    fn commit(&mut self, id: u32) -> Result<()>;
    /// The text so far is a complete reply (EOS may come).
    fn is_accepting(&self) -> bool;
    /// Nothing but EOS can follow (or EOS was committed).
    fn is_finished(&self) -> bool;
}

pub struct GrammarConstraint {
    matcher: Matcher,
    vocab: Arc<TokenVocabulary>,
    accepting: bool,
    /// EOS was committed.
    ended: bool,
    /// This step's allowed set (from `mask` or `allows`), until `commit`.
    allowed: Option<SimpleVob>,
}

impl GrammarConstraint {
    pub(crate) fn new(parser: TokenParser, vocab: Arc<TokenVocabulary>) -> GrammarConstraint {
        let mut matcher = Matcher::new(Ok(parser));
        let accepting = matcher.is_accepting().unwrap_or(false);
        GrammarConstraint {
            matcher,
            vocab,
            accepting,
            ended: false,
            allowed: None,
        }
    }

    /// Whether `id` may come next (computes the mask if `mask` has not, for this step).
    pub fn allows(&mut self, id: u32) -> Result<bool> {
        if self.allowed.is_none() {
            self.allowed = Some(self.compute()?);
        }
        let known = (id as usize) < self.vocab.size();
        Ok(known && self.allowed.as_ref().is_some_and(|m| m.is_allowed(id)))
    }

    fn compute(&mut self) -> Result<SimpleVob> {
        if self.ended {
            return Err(ConstraintError::Matching(
                "the reply already ended (EOS was committed)".into(),
            ));
        }
        let mut allowed = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| ConstraintError::Matching(format!("computing the mask: {e}")))?;
        // EOS exactly when the grammar accepts, and every EOS id kiln stops on, not only
        // llguidance's one.
        let stopped = self.matcher.is_stopped();
        for &eos in self.vocab.eos_ids() {
            allowed.set(eos as usize, self.accepting || stopped);
        }
        if stopped {
            // Finished: only EOS, whatever else the mask held.
            let mut only = SimpleVob::alloc(self.vocab.size());
            for &eos in self.vocab.eos_ids() {
                only.allow_token(eos);
            }
            allowed = only;
        }
        if allowed.is_zero() {
            return Err(ConstraintError::Matching(
                "no token can continue the reply (the grammar is stuck)".into(),
            ));
        }
        Ok(allowed)
    }
}

impl TokenConstraint for GrammarConstraint {
    fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        // `allows` may have computed this step's set already.
        let allowed = match self.allowed.take() {
            Some(a) => a,
            None => self.compute()?,
        };
        let words = allowed.as_slice();
        let known = self.vocab.size().min(logits.len());
        for (chunk_index, chunk) in logits[..known].chunks_mut(32).enumerate() {
            // Most words of a mask are all banned or all allowed (inside a string).
            let bits = words.get(chunk_index).copied().unwrap_or(0);
            if bits == u32::MAX {
                continue;
            }
            if bits == 0 {
                chunk.fill(f32::NEG_INFINITY);
                continue;
            }
            // Visit only the banned ids (set bits of the complement), lowest first.
            let mut banned = !bits;
            while banned != 0 {
                let j = banned.trailing_zeros() as usize;
                if let Some(logit) = chunk.get_mut(j) {
                    *logit = f32::NEG_INFINITY;
                }
                banned &= banned - 1;
            }
        }
        // Ids past the tokenizer's (a padded embedding table) have no text.
        logits[known..].fill(f32::NEG_INFINITY);
        self.allowed = Some(allowed);
        Ok(())
    }

    fn commit(&mut self, id: u32) -> Result<()> {
        if !self.allows(id)? {
            return Err(ConstraintError::Matching(format!(
                "token {id} ({:?}) is not allowed here",
                String::from_utf8_lossy(self.vocab.token_bytes(id))
            )));
        }
        self.allowed = None;
        if self.vocab.eos_ids().contains(&id) {
            self.ended = true;
            return Ok(());
        }
        self.matcher
            .consume_token(id)
            .map_err(|e| ConstraintError::Matching(format!("committing token {id}: {e}")))?;
        self.accepting = self
            .matcher
            .is_accepting()
            .map_err(|e| ConstraintError::Matching(format!("after token {id}: {e}")))?;
        Ok(())
    }

    fn is_accepting(&self) -> bool {
        self.ended || self.accepting || self.matcher.is_stopped()
    }

    fn is_finished(&self) -> bool {
        self.ended || self.matcher.is_stopped()
    }
}
