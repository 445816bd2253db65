//! Streaming detokenisation: text is released only once it is whole. A UTF-8 character split
//! across tokens, or a SentencePiece piece whose leading space depends on what follows, is held
//! back until the ids after it settle it. The decoder holds ids only and is handed the tokenizer
//! per call, so a sequence that outlives one borrow (a server slot) can keep it.

use kiln_runtime::Result;

use super::Tokenizer;

#[derive(Clone, Debug)]
pub struct StreamDecoder {
    skip_special: bool,
    ids: Vec<u32>,
    /// Ids before `prefix` are done; `prefix..read` is context already emitted.
    prefix: usize,
    read: usize,
}

impl StreamDecoder {
    pub fn new(skip_special: bool) -> StreamDecoder {
        StreamDecoder {
            skip_special,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Adds one id and returns the text it completes (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let (before, now) = self.texts(tokenizer)?;
        match now.get(before.len()..) {
            Some(text) if !text.is_empty() && !now.ends_with('\u{FFFD}') => {
                let text = text.to_string();
                self.prefix = self.read;
                self.read = self.ids.len();
                Ok(text)
            }
            _ => Ok(String::new()),
        }
    }

    /// What is still held back (an incomplete character comes out as U+FFFD).
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        let (before, now) = self.texts(tokenizer)?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now.get(before.len()..).unwrap_or_default().to_string())
    }

    /// The context already emitted, and the same with everything after it.
    fn texts(&self, tokenizer: &Tokenizer) -> Result<(String, String)> {
        let decode = |ids: &[u32]| tokenizer.decode(ids, self.skip_special);
        Ok((
            decode(&self.ids[self.prefix..self.read])?,
            decode(&self.ids[self.prefix..])?,
        ))
    }
}
