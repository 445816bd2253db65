//! The sampler: logit_bias -> penalties -> [greedy] -> top_k -> top_p -> min_p -> temperature -> draw.
//! See the module docs of `sampling` for the order's rationale and what the log-probabilities mean.

use std::cmp::Ordering;

use super::context::SamplingContext;
use super::error::{Result, SamplingError};
use super::params::{SamplingParams, BAN_BIAS};
use super::rng::{random_seed, Rng};

/// One sampled token.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub id: u32,
    /// Log-probability of `id` under the reported distribution (log-softmax after bias and
    /// penalties, before temperature and truncation), when asked for (`logprobs` or
    /// `top_logprobs`); `-inf` never occurs.
    pub logprob: Option<f32>,
    /// The `top_logprobs` most likely tokens under the same distribution, most likely first (ties:
    /// lowest id first). Banned tokens are never listed, so it can be shorter than asked for.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Turns logits into tokens with one set of [`SamplingParams`] and one seeded random stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    vocab_size: usize,
    seed: u64,
    rng: Rng,
    // Scratch reused across tokens so a 131072-entry row costs no allocation per token.
    logits: Vec<f32>,
    /// (id, logit) of the tokens still in the running.
    cands: Vec<(u32, f32)>,
    weights: Vec<f64>,
    window: Vec<u32>,
}

/// Most likely first; equal logits by lowest id, so the order is total and every selection and sort
/// gives the same result on every platform.
fn rank(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

impl Sampler {
    /// Validates `params` for this vocabulary and seeds the random stream (from the OS and clock if
    /// `params.seed` is `None`; [`seed`](Self::seed) and [`params`](Self::params) then report it).
    pub fn new(mut params: SamplingParams, vocab_size: usize) -> Result<Self> {
        if vocab_size == 0 || vocab_size as u64 > u32::MAX as u64 {
            return Err(SamplingError::InvalidVocabSize(vocab_size));
        }
        params.validate_for_vocab(vocab_size)?;
        let seed = *params.seed.get_or_insert_with(random_seed);
        Ok(Self {
            params,
            vocab_size,
            seed,
            rng: Rng::new(seed),
            logits: Vec::with_capacity(vocab_size),
            cands: Vec::with_capacity(vocab_size),
            weights: Vec::with_capacity(vocab_size),
            window: Vec::new(),
        })
    }

    /// The parameters in use, with `seed` filled in: passing them to a new sampler repeats the run.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The seed in use (the one given, or the one drawn for `seed: None`).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Samples the next token from one row of logits. `context` is the prompt and the tokens
    /// generated so far; the caller pushes the returned id into it. A greedy step draws no random
    /// number; any other step draws exactly one.
    pub fn sample(&mut self, logits: &[f32], context: &SamplingContext) -> Result<Sampled> {
        self.adjust(logits, context)?;
        let (max, log_z) = log_normaliser(&self.logits)?;
        let logprob = |l: f32| (l as f64 - log_z) as f32;
        let top_logprobs = top_n(&self.logits, self.params.top_logprobs)
            .into_iter()
            .map(|(id, l)| (id, logprob(l)))
            .collect();

        let id = if self.params.temperature == 0.0 {
            argmax(&self.logits)
        } else {
            self.truncate(max);
            self.draw(max)
        };
        Ok(Sampled {
            id,
            logprob: self
                .params
                .wants_logprobs()
                .then(|| logprob(self.logits[id as usize])),
            top_logprobs,
        })
    }

    /// Copies `logits` into scratch and applies logit_bias, then the repetition penalty, then the
    /// frequency and presence penalties. Banned tokens become `-inf`.
    fn adjust(&mut self, logits: &[f32], context: &SamplingContext) -> Result<()> {
        let v = self.vocab_size;
        if logits.len() != v {
            return Err(SamplingError::LogitsLength {
                expected: v,
                got: logits.len(),
            });
        }
        // -inf is a banned token (a grammar's mask writes it); NaN and +inf are blow-ups.
        if let Some(index) = logits
            .iter()
            .position(|l| l.is_nan() || *l == f32::INFINITY)
        {
            return Err(SamplingError::NonFiniteLogit {
                index,
                value: logits[index],
            });
        }
        let out = &mut self.logits;
        out.clear();
        out.extend_from_slice(logits);
        let p = &self.params;
        let check = |id: u32| {
            if id as usize >= v {
                Err(SamplingError::TokenOutOfVocab {
                    what: "context",
                    id,
                    vocab_size: v,
                })
            } else {
                Ok(id as usize)
            }
        };

        for (&id, &bias) in &p.logit_bias {
            let l = &mut out[id as usize];
            *l = if bias <= BAN_BIAS {
                f32::NEG_INFINITY
            } else {
                *l + bias
            };
        }

        if p.repetition_penalty != 1.0 && p.repeat_last_n > 0 {
            let tokens = context.tokens();
            // Each distinct token once, as llama.cpp does, however often it repeats in the window.
            self.window.clear();
            self.window
                .extend_from_slice(&tokens[tokens.len().saturating_sub(p.repeat_last_n)..]);
            self.window.sort_unstable();
            self.window.dedup();
            for &id in &self.window {
                let l = &mut out[check(id)?];
                // Dividing a negative logit would raise it, so negatives are multiplied instead.
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty
                } else {
                    *l * p.repetition_penalty
                };
            }
        }

        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            for (id, count) in context.counts() {
                let l = &mut out[check(id)?];
                *l -= count as f32 * p.frequency_penalty + p.presence_penalty;
            }
        }
        Ok(())
    }

    /// top_k, then top_p over the top_k survivors (renormalised), then min_p, leaving the survivors in
    /// `self.cands`, either in id order or most likely first; both orders are platform-independent.
    fn truncate(&mut self, max: f32) {
        let cands = &mut self.cands;
        cands.clear();
        let finite = self
            .logits
            .iter()
            .enumerate()
            .filter(|(_, &l)| l > f32::NEG_INFINITY);
        cands.extend(finite.map(|(i, &l)| (i as u32, l)));
        let mut sorted = false;

        let k = self.params.top_k;
        if k > 0 && k < cands.len() {
            // O(V) selection, then a sort of the k survivors only.
            cands.select_nth_unstable_by(k - 1, rank);
            cands.truncate(k);
            cands.sort_unstable_by(rank);
            sorted = true;
        }

        let top_p = self.params.top_p as f64;
        if top_p < 1.0 {
            let w = |c: &(u32, f32)| (c.1 as f64 - max as f64).exp();
            let target = top_p * cands.iter().map(w).sum::<f64>();
            // The cut lies in cands[lo..hi]; cands[..lo] rank above it and hold `acc` < target.
            let (mut lo, mut hi, mut acc) = (0, cands.len(), 0.0);
            if !sorted {
                // Narrow [lo, hi) by selections (no sorting), first trying the top 256 (enough
                // for a peaked distribution), then halving: O(V) in all.
                let mut split = lo + 256;
                while hi - lo > 256 {
                    cands[lo..hi].select_nth_unstable_by(split - lo, rank);
                    let upper: f64 = cands[lo..split].iter().map(w).sum();
                    if acc + upper >= target {
                        hi = split;
                    } else {
                        (lo, acc) = (split, acc + upper);
                    }
                    split = lo + (hi - lo) / 2;
                }
                // cands[..lo] all rank above cands[lo..hi], so two sorts sort cands[..hi]: the
                // survivors and at most 256 more.
                cands[..lo].sort_unstable_by(rank);
                cands[lo..hi].sort_unstable_by(rank);
            }
            // Summed again in sorted order so the cut does not depend on the selections' order.
            let mut cum = 0.0;
            let keep = cands[..hi]
                .iter()
                .position(|c| {
                    cum += w(c);
                    cum >= target
                })
                // Rounding can leave the sum a hair under target: keep the whole range.
                .map_or(hi, |pos| pos + 1);
            cands.truncate(keep);
        }

        let min_p = self.params.min_p;
        if min_p > 0.0 {
            // p_i >= min_p * p_max  <=>  l_i >= l_max + ln(min_p); the max survives every step.
            let threshold = max as f64 + (min_p as f64).ln();
            cands.retain(|c| c.1 as f64 >= threshold);
        }
    }

    /// Draws one survivor with probability proportional to exp((l - max) / temperature).
    fn draw(&mut self, max: f32) -> u32 {
        let t = self.params.temperature as f64;
        self.weights.clear();
        let weights = self
            .cands
            .iter()
            .map(|c| ((c.1 as f64 - max as f64) / t).exp());
        self.weights.extend(weights);
        let total: f64 = self.weights.iter().sum();
        let target = self.rng.next_f64() * total;
        let mut cum = 0.0;
        for (c, &w) in self.cands.iter().zip(&self.weights) {
            cum += w;
            if cum > target {
                return c.0;
            }
        }
        // Rounding put target at the very end: the last survivor with any weight (the most
        // likely token has weight 1, so there is one).
        let last = self.weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
        self.cands[last].0
    }

    /// The survivors of truncation for these logits, in id order (tests only).
    #[cfg(test)]
    pub(crate) fn survivors(
        &mut self,
        logits: &[f32],
        context: &SamplingContext,
    ) -> Result<Vec<u32>> {
        self.adjust(logits, context)?;
        let (max, _) = log_normaliser(&self.logits)?;
        self.truncate(max);
        let mut ids: Vec<u32> = self.cands.iter().map(|c| c.0).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The logits after bias and penalties (tests only).
    #[cfg(test)]
    pub(crate) fn adjusted(
        &mut self,
        logits: &[f32],
        context: &SamplingContext,
    ) -> Result<Vec<f32>> {
        self.adjust(logits, context)?;
        Ok(self.logits.clone())
    }
}

/// (max logit, log of the softmax normaliser): log p_i = l_i - log_z. Errors if every token is banned.
fn log_normaliser(logits: &[f32]) -> Result<(f32, f64)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return Err(SamplingError::AllTokensBanned);
    }
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max as f64).exp()).sum();
    Ok((max, max as f64 + sum.ln()))
}

/// Lowest id among the largest logits (PyTorch's argmax returns the first maximum too).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The `n` largest finite logits as (id, logit), most likely first, ties lowest id first, in one
/// pass with an insertion into a list of at most `n` (<= 20) entries.
fn top_n(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return top;
    }
    for (i, &l) in logits.iter().enumerate() {
        if l == f32::NEG_INFINITY || (top.len() == n && l <= top[n - 1].1) {
            continue;
        }
        // Ids arrive in ascending order, so an equal logit goes after the ones already there.
        let pos = top.partition_point(|&(_, t)| t >= l);
        top.insert(pos, (i as u32, l));
        top.truncate(n);
    }
    top
}
