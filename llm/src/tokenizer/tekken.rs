//! Mistral's own tokenizer file, `tekken.json`, read directly: a tiktoken-style byte BPE whose
//! ranks are the merge priorities, after `default_num_special_tokens` control ids. Encoding splits
//! the text with the file's regex, then merges each piece's bytes by rank, as tiktoken does.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use fancy_regex::Regex;
use kiln_runtime::{Error, Result};
use serde::Deserialize;

/// The split pattern of every tekken.json so far (llama.cpp's pre-tokenizer "tekken" names it).
pub const TEKKEN_PATTERN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// mistral-common's control tokens for files without a `special_tokens` list.
const DEFAULT_SPECIALS: [&str; 20] = [
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
];

#[derive(Deserialize)]
struct TekkenFile {
    config: TekkenConfig,
    vocab: Vec<VocabEntry>,
    #[serde(default)]
    special_tokens: Vec<SpecialEntry>,
}

#[derive(Deserialize)]
struct TekkenConfig {
    pattern: String,
    default_vocab_size: usize,
    default_num_special_tokens: usize,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
struct VocabEntry {
    rank: usize,
    token_bytes: String,
}

#[derive(Deserialize)]
struct SpecialEntry {
    rank: usize,
    token_str: String,
}

pub struct Tekken {
    pattern: Regex,
    ranks: HashMap<Vec<u8>, u32>,
    /// Bytes of each ordinary rank, for decoding.
    bytes: Vec<Vec<u8>>,
    /// Control token strings by id (every id below `num_special`).
    specials: Vec<String>,
    version: Option<String>,
}

impl Tekken {
    pub fn load(path: &Path) -> Result<Tekken> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::load(path, format!("cannot read: {e}")))?;
        let file: TekkenFile = serde_json::from_str(&text)
            .map_err(|e| Error::load(path, format!("not a tekken tokenizer file: {e}")))?;
        let c = &file.config;
        if c.default_vocab_size <= c.default_num_special_tokens {
            return Err(Error::load(
                path,
                format!(
                    "default_vocab_size {} leaves no room after {} special tokens",
                    c.default_vocab_size, c.default_num_special_tokens
                ),
            ));
        }
        // Like mistral-common, only the first `default_vocab_size - specials` ranks are used.
        let inner = (c.default_vocab_size - c.default_num_special_tokens).min(file.vocab.len());
        let mut bytes = vec![Vec::new(); inner];
        let b64 = base64::engine::general_purpose::STANDARD;
        for entry in &file.vocab {
            if entry.rank >= inner {
                continue;
            }
            let token = b64.decode(&entry.token_bytes).map_err(|e| {
                Error::load(
                    path,
                    format!("rank {}: bad base64 token_bytes: {e}", entry.rank),
                )
            })?;
            bytes[entry.rank] = token;
        }
        if let Some(rank) = bytes.iter().position(Vec::is_empty) {
            return Err(Error::load(
                path,
                format!("rank {rank} of {inner} is missing"),
            ));
        }
        let mut specials: Vec<String> = (0..c.default_num_special_tokens)
            .map(|i| format!("<SPECIAL_{i}>"))
            .collect();
        if file.special_tokens.is_empty() {
            // Older files (tekken_240911.json) carry no list: mistral-common's default one.
            for (rank, name) in DEFAULT_SPECIALS.iter().enumerate().take(specials.len()) {
                specials[rank] = name.to_string();
            }
        }
        for s in &file.special_tokens {
            if s.rank < specials.len() {
                specials[s.rank] = s.token_str.clone();
            }
        }
        Tekken::from_vocab(path, &c.pattern, specials, bytes, c.version.clone())
    }

    /// A Tekken vocabulary given directly: control token names (ids `0..specials.len()`), then
    /// each ordinary rank's bytes, in rank order (a GGUF file's token list). `path` is named in
    /// errors.
    pub fn from_vocab(
        path: &Path,
        pattern: &str,
        specials: Vec<String>,
        bytes: Vec<Vec<u8>>,
        version: Option<String>,
    ) -> Result<Tekken> {
        let pattern = Regex::new(pattern)
            .map_err(|e| Error::load(path, format!("its split pattern does not compile: {e}")))?;
        let mut ranks = HashMap::with_capacity(bytes.len());
        for (rank, token) in bytes.iter().enumerate() {
            if token.is_empty() {
                return Err(Error::load(path, format!("rank {rank} is empty")));
            }
            ranks.insert(token.clone(), rank as u32);
        }
        for b in 0..=255u8 {
            if !ranks.contains_key(&[b][..]) {
                return Err(Error::load(path, format!("byte {b:#04x} has no rank")));
            }
        }
        Ok(Tekken {
            pattern,
            ranks,
            bytes,
            specials,
            version,
        })
    }

    /// The file's `config.version` ("v3", "v7", ...).
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    pub fn vocab_size(&self) -> usize {
        self.specials.len() + self.bytes.len()
    }

    pub fn specials(&self) -> &[String] {
        &self.specials
    }

    /// The bytes of each ordinary token, in id order after the control ids.
    pub fn ordinary_bytes(&self) -> &[Vec<u8>] {
        &self.bytes
    }

    /// Plain text to ids; control token strings in it are ordinary text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let offset = self.specials.len() as u32;
        let mut ids = Vec::new();
        for piece in self.pattern.find_iter(text) {
            let piece = piece.map_err(|e| {
                Error::shape("tekken encode", format!("the split pattern failed: {e}"))
            })?;
            let before = ids.len();
            self.merge(piece.as_str().as_bytes(), &mut ids);
            for id in &mut ids[before..] {
                *id += offset;
            }
        }
        Ok(ids)
    }

    /// Byte-pair merging of one piece by rank (lowest rank first, leftmost on ties).
    fn merge(&self, piece: &[u8], out: &mut Vec<u32>) {
        if let Some(&rank) = self.ranks.get(piece) {
            out.push(rank);
            return;
        }
        // Part boundaries: part i is piece[bounds[i]..bounds[i + 1]].
        let mut bounds: Vec<usize> = (0..=piece.len()).collect();
        let pair_rank = |bounds: &[usize], i: usize| -> Option<u32> {
            if i + 2 >= bounds.len() {
                return None;
            }
            self.ranks.get(&piece[bounds[i]..bounds[i + 2]]).copied()
        };
        let mut pair_ranks: Vec<Option<u32>> = (0..bounds.len() - 1)
            .map(|i| pair_rank(&bounds, i))
            .collect();
        loop {
            let best = pair_ranks
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.map(|r| (r, i)))
                .min();
            let Some((_, i)) = best else { break };
            bounds.remove(i + 1);
            pair_ranks.remove(i + 1);
            pair_ranks[i] = pair_rank(&bounds, i);
            if i > 0 {
                pair_ranks[i - 1] = pair_rank(&bounds, i - 1);
            }
        }
        out.extend(bounds.windows(2).map(|w| self.ranks[&piece[w[0]..w[1]]]));
    }

    /// The bytes of ids; control tokens give their names unless skipped.
    pub fn decode_bytes(&self, ids: &[u32], skip_special: bool) -> Result<Vec<u8>> {
        let n = self.specials.len();
        let mut out = Vec::new();
        for &id in ids {
            let id = id as usize;
            if id < n {
                if !skip_special {
                    out.extend_from_slice(self.specials[id].as_bytes());
                }
            } else {
                let bytes = self.bytes.get(id - n).ok_or_else(|| {
                    Error::shape(
                        "tekken decode",
                        format!("id {id} is outside the vocabulary of {}", self.vocab_size()),
                    )
                })?;
                out.extend_from_slice(bytes);
            }
        }
        Ok(out)
    }
}
