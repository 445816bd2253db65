//! A1111's split of a weighted prompt into 77-token CLIP inputs (stable-diffusion-webui
//! modules/sd_hijack_clip.py, `tokenize_line` and the SD2 padding of `process_tokens`), with
//! textual-inversion embeddings: where a name's tokens occur, the embedding's vectors take that
//! many token slots, never split across chunks.

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

/// An embedding the chunker looks for: its name's token ids, how many vectors replace them, and
/// an index the caller resolves (`EmbeddingDb::all()[index]`).
#[derive(Clone, Debug, PartialEq)]
pub struct PromptEmbedding {
    pub name: String,
    pub ids: Vec<u32>,
    pub count: usize,
    pub index: usize,
}

/// Where an embedding's vectors go: token positions `position .. position + count` of a chunk's
/// 77-token row (position 0 is the start token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkFix {
    pub position: usize,
    pub count: usize,
    pub index: usize,
}

/// The token id written under an embedding's vectors (A1111 writes 0 too); the text encoder
/// replaces its embedding row, so the id only matters to code reading the ids.
const PLACEHOLDER: u32 = 0;

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
    /// Per chunk, the embeddings placed in it.
    pub fixes: Vec<Vec<ChunkFix>>,
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

    /// `from_prompt` with textual-inversion embeddings recognised.
    pub fn from_prompt_with(
        tok: &ClipTokenizer,
        prompt: &str,
        opts: &ChunkOptions,
        embeddings: &[PromptEmbedding],
    ) -> Result<Self, PromptError> {
        Self::from_segments_with(tok, &parse_emphasis(prompt)?, opts, embeddings)
    }

    /// Chunks segments already parsed (or one plain segment, A1111's "emphasis: None").
    pub fn from_segments(
        tok: &ClipTokenizer,
        segments: &[Segment],
        opts: &ChunkOptions,
    ) -> Result<Self, PromptError> {
        Self::from_segments_with(tok, segments, opts, &[])
    }

    /// `from_segments` with textual-inversion embeddings: at each token the longest embedding
    /// name starting there wins (A1111's `find_embedding_at_position`).
    pub fn from_segments_with(
        tok: &ClipTokenizer,
        segments: &[Segment],
        opts: &ChunkOptions,
        embeddings: &[PromptEmbedding],
    ) -> Result<Self, PromptError> {
        let mut by_length: Vec<&PromptEmbedding> = embeddings.iter().collect();
        by_length.sort_by_key(|e| std::cmp::Reverse(e.ids.len()));
        if let Some(e) = by_length.iter().find(|e| e.count > CHUNK_TOKENS) {
            return Err(PromptError::EmbeddingTooLong {
                name: e.name.clone(),
                count: e.count,
            });
        }
        let mut b = Builder {
            bos: tok.bos_id(),
            eos: tok.eos_id(),
            out: PromptChunks {
                ids: Vec::new(),
                weights: Vec::new(),
                token_count: 0,
                fixes: Vec::new(),
            },
            tokens: Vec::with_capacity(CHUNK_TOKENS),
            weights: Vec::with_capacity(CHUNK_TOKENS),
            fixes: Vec::new(),
            last_comma: None,
        };
        let comma = tok.token_id(",</w>");
        for seg in segments {
            if seg.is_break {
                b.close(false);
                continue;
            }
            let tokens = tok.encode(&seg.text)?;
            let mut at = 0;
            while at < tokens.len() {
                let token = tokens[at];
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
                let found = by_length.iter().find(|e| tokens[at..].starts_with(&e.ids));
                let Some(e) = found else {
                    b.tokens.push(token);
                    b.weights.push(seg.weight);
                    at += 1;
                    continue;
                };
                if b.tokens.len() + e.count > CHUNK_TOKENS {
                    b.close(false);
                }
                b.fixes.push(ChunkFix {
                    position: b.tokens.len() + 1,
                    count: e.count,
                    index: e.index,
                });
                b.tokens.extend(std::iter::repeat_n(PLACEHOLDER, e.count));
                b.weights.extend(std::iter::repeat_n(seg.weight, e.count));
                at += e.ids.len();
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
    fixes: Vec<ChunkFix>,
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
        self.out.fixes.push(std::mem::take(&mut self.fixes));
        self.tokens.clear();
        self.weights.clear();
        self.last_comma = None;
    }

    /// Closes the chunk at `cut` and starts the next one with the tokens after it.
    /// Embeddings after the cut move with their tokens (A1111 leaves them behind, writing the
    /// vectors into the old chunk's padding: a bug kiln does not copy).
    fn move_after_comma(&mut self, cut: usize) {
        let tokens = self.tokens.split_off(cut);
        let weights = self.weights.split_off(cut);
        let (stay, moved): (Vec<ChunkFix>, Vec<ChunkFix>) =
            self.fixes.drain(..).partition(|f| f.position <= cut);
        self.fixes = stay;
        self.close(false);
        self.tokens = tokens;
        self.weights = weights;
        self.fixes = moved
            .into_iter()
            .map(|f| ChunkFix {
                position: f.position - cut,
                ..f
            })
            .collect();
    }
}
