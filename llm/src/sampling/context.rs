//! The token history the penalties look at.

use std::collections::HashMap;

/// The prompt and the tokens generated so far. The generation loop pushes each sampled token; the
/// per-token counts the OpenAI penalties need are kept up to date here rather than recounted per token.
#[derive(Debug, Clone, Default)]
pub struct SamplingContext {
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Occurrences of each id among the generated tokens (not the prompt).
    counts: HashMap<u32, u32>,
}

impl SamplingContext {
    pub fn new(prompt: &[u32]) -> Self {
        Self {
            tokens: prompt.to_vec(),
            prompt_len: prompt.len(),
            counts: HashMap::new(),
        }
    }

    /// Records a generated token.
    pub fn push(&mut self, id: u32) {
        self.tokens.push(id);
        *self.counts.entry(id).or_insert(0) += 1;
    }

    /// Prompt followed by the generated tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn prompt(&self) -> &[u32] {
        &self.tokens[..self.prompt_len]
    }

    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// How often `id` was generated (the prompt does not count).
    pub fn count(&self, id: u32) -> u32 {
        self.counts.get(&id).copied().unwrap_or(0)
    }

    /// (id, count) for every generated id, in no particular order.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.counts.iter().map(|(&id, &n)| (id, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_prompt_from_generated_and_counts_only_generated() {
        let mut c = SamplingContext::new(&[5, 5, 7]);
        c.push(5);
        c.push(9);
        c.push(5);
        assert_eq!(c.tokens(), &[5, 5, 7, 5, 9, 5]);
        assert_eq!(c.prompt(), &[5, 5, 7]);
        assert_eq!(c.generated(), &[5, 9, 5]);
        assert_eq!((c.count(5), c.count(9), c.count(7)), (2, 1, 0));
    }
}
