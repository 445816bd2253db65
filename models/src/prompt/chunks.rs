//! A1111's split of a weighted prompt into 77-token CLIP inputs (stable-diffusion-webui
//! modules/sd_hijack_clip.py, `tokenize_line` and the SD2 padding of `process_tokens`).
//! Textual-inversion embeddings are not handled.

use crate::clip::tokenizer::{ClipTokenizer, CLIP_MAX_LEN};

use super::{parse_emphasis, PromptError, Segment};

/// Prompt tokens per chunk: 77 minus the start and end tokens.
pub const CHUNK_TOKENS: usize = CLIP_MAX_LEN - 2;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChunkOptions {
    /// When a chunk fills up and a comma lies at most this many tokens back, the tokens after
    /// the comma move to the next chunk so a phrase is not cut in half. A1111's setting
    /// "comma_padding_backtrack", default 20; 0 turns it off.
    pub comma_backtrack: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            comma_backtrack: 20,
        }
    }
}

/// A prompt as CLIP inputs: one `[BOS, 75 tokens, EOS]` row per chunk and each token's weight
/// (1.0 for start, end and padding). The text encoder runs once per chunk and the outputs are
/// concatenated along the token axis. The tokenizer's padding (EOS for SD 1.x, "!" = 0 for
/// SD 2.x) fills each row after its first end token.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptChunks {
    pub ids: Vec<[u32; CLIP_MAX_LEN]>,
    pub weights: Vec<[f32; CLIP_MAX_LEN]>,
    /// A1111's displayed token count: 75 per closed chunk plus the tokens of the last one.
    pub token_count: usize,
}

impl PromptChunks {
    /// Parses A1111 emphasis syntax and chunks the result.
    pub fn from_prompt(
        tok: &ClipTokenizer,
        prompt: &str,
        opts: &ChunkOptions,
    ) -> Result<Self, PromptError> {
        Self::from_segments(tok, &parse_emphasis(prompt)?, opts)
    }

    /// Chunks segments already parsed (or one plain segment, A1111's "emphasis: None").
    pub fn from_segments(
        tok: &ClipTokenizer,
        segments: &[Segment],
        opts: &ChunkOptions,
    ) -> Result<Self, PromptError> {
        let mut b = Builder {
            bos: tok.bos_id(),
            eos: tok.eos_id(),
            out: PromptChunks {
                ids: Vec::new(),
                weights: Vec::new(),
                token_count: 0,
            },
            tokens: Vec::with_capacity(CHUNK_TOKENS),
            weights: Vec::with_capacity(CHUNK_TOKENS),
            last_comma: None,
        };
        let comma = tok.token_id(",</w>");
        for seg in segments {
            if seg.is_break {
                b.close(false);
                continue;
            }
            for token in tok.encode(&seg.text)? {
                let len = b.tokens.len();
                if Some(token) == comma {
                    b.last_comma = Some(len);
                } else if let Some(c) = b.last_comma {
                    if opts.comma_backtrack != 0
                        && len == CHUNK_TOKENS
                        && len - c <= opts.comma_backtrack
                    {
                        b.move_after_comma(c + 1);
                    }
                }
                if b.tokens.len() == CHUNK_TOKENS {
                    b.close(false);
                }
                b.tokens.push(token);
                b.weights.push(seg.weight);
            }
        }
        if !b.tokens.is_empty() || b.out.ids.is_empty() {
            b.close(true);
        }
        let mut out = b.out;
        // SD2 (A1111's process_tokens): whatever follows the first end token becomes padding,
        // including the tail of a chunk whose text contained a literal <|endoftext|>.
        let pad = tok.pad_id();
        if pad != tok.eos_id() {
            for row in &mut out.ids {
                if let Some(first) = row.iter().position(|&t| t == tok.eos_id()) {
                    row[first + 1..].fill(pad);
                }
            }
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

struct Builder {
    bos: u32,
    eos: u32,
    out: PromptChunks,
    tokens: Vec<u32>,
    weights: Vec<f32>,
    last_comma: Option<usize>,
}

impl Builder {
    /// Emits the current chunk padded with EOS and wrapped in BOS/EOS.
    fn close(&mut self, is_last: bool) {
        self.out.token_count += if is_last {
            self.tokens.len()
        } else {
            CHUNK_TOKENS
        };
        let mut ids = [self.eos; CLIP_MAX_LEN];
        let mut weights = [1.0f32; CLIP_MAX_LEN];
        ids[0] = self.bos;
        ids[1..=self.tokens.len()].copy_from_slice(&self.tokens);
        weights[1..=self.weights.len()].copy_from_slice(&self.weights);
        self.out.ids.push(ids);
        self.out.weights.push(weights);
        self.tokens.clear();
        self.weights.clear();
        self.last_comma = None;
    }

    /// Closes the chunk at `cut` and starts the next one with the tokens after it.
    fn move_after_comma(&mut self, cut: usize) {
        let tokens = self.tokens.split_off(cut);
        let weights = self.weights.split_off(cut);
        self.close(false);
        self.tokens = tokens;
        self.weights = weights;
    }
}
