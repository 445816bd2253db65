//! The tokenizer a llama.cpp GGUF file carries (`tokenizer.ggml.*`):
//! - `model` "gpt2" with `pre` "tekken" (Mistral Small 3.x, Nemo): the control tokens, then
//!   byte-level strings (GPT-2's byte-to-character table) in rank order, run by kiln's Tekken
//!   encoder (its merges follow from the ranks, as llama.cpp's converter derived them);
//! - `model` "gpt2" with `pre` "llama3" / "llama-bpe" / "llama-v3" (Llama 3), or "pixtral" (Pixtral
//!   12B, which llama.cpp runs the same way): byte-level BPE with
//!   the file's merges, the Llama 3 split pattern, whole words taken as they are when they are
//!   tokens (llama.cpp's `ignore_merges`), through the tokenizers crate;
//! - `model` "llama" (Llama 2, Mistral 7B): SentencePiece pieces, scores and token types, run as
//!   llama.cpp runs them (`spm.rs`).
//!
//! Control tokens are the ids of type CONTROL; BOS / EOS / unknown come from their `*_token_id`
//! keys; `add_bos_token` (llama.cpp's default: true for both) says whether a prompt starts with
//! BOS when its template does not write one.

use std::sync::OnceLock;

use kiln_runtime::gguf::GgufFile;
use kiln_runtime::{Error, Result};

use super::hf::{byte_level_table, HfTokenizer};
use super::spm::{self, Spm};
use super::tekken::{Tekken, TEKKEN_PATTERN};
use super::{Backend, Tokenizer};

impl Tokenizer {
    /// The tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        let path = file.path();
        let bad = |msg: String| Error::load(path, msg);
        let model = file.get_str("tokenizer.ggml.model").ok_or_else(|| {
            bad("no `tokenizer.ggml.model`: the file carries no tokenizer".into())
        })?;
        let tokens = file
            .get_strings("tokenizer.ggml.tokens")?
            .ok_or_else(|| bad("no `tokenizer.ggml.tokens`".into()))?;
        let types: Vec<i32> = match file.get_numbers("tokenizer.ggml.token_type")? {
            Some(t) if t.len() == tokens.len() => t.into_iter().map(|v| v as i32).collect(),
            Some(t) => {
                return Err(bad(format!(
                    "{} tokens but {} token types",
                    tokens.len(),
                    t.len()
                )))
            }
            None => vec![spm::NORMAL; tokens.len()],
        };
        let id = |key: &str| -> Result<Option<u32>> {
            match file.get_u64(key) {
                None => Ok(None),
                Some(v) if (v as usize) < tokens.len() => Ok(Some(v as u32)),
                Some(v) => Err(bad(format!(
                    "`{key}` {v} is outside the vocabulary of {} tokens",
                    tokens.len()
                ))),
            }
        };
        let named = |name: &str| tokens.iter().position(|t| *t == name).map(|i| i as u32);
        let bos = id("tokenizer.ggml.bos_token_id")?.or_else(|| named("<s>"));
        let eos = id("tokenizer.ggml.eos_token_id")?.or_else(|| named("</s>"));
        let unk = id("tokenizer.ggml.unknown_token_id")?;
        // Tekken's unnamed placeholders (`<SPECIAL_20>`, ...) stay text, as for tekken.json.
        let controls: Vec<(String, u32)> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (_, &ty))| ty == spm::CONTROL)
            .map(|(i, (t, _))| (t.to_string(), i as u32))
            .filter(|(t, _)| {
                let placeholder = model == "gpt2" && t.starts_with("<SPECIAL_");
                !t.is_empty() && !placeholder
            })
            .collect();
        let backend = match model {
            "gpt2" => {
                let pre = file.get_str("tokenizer.ggml.pre").unwrap_or("default");
                match pre {
                    "tekken" => Backend::Tekken(Box::new(tekken(file, &tokens, &types)?)),
                    // llama.cpp runs Pixtral 12B's vocabulary ("pixtral") with Llama 3's pattern.
                    "llama3" | "llama-v3" | "llama-bpe" | "pixtral" => {
                        Backend::Hf(Box::new(llama3(file, &tokens, &types)?))
                    }
                    _ => {
                        return Err(bad(format!(
                            "tokenizer.ggml.pre `{pre}`: kiln reads byte-level vocabularies with \
                             the `tekken` (Mistral), `llama3` / `llama-bpe` (Llama 3) and `pixtral` \
                             (llama.cpp gives it Llama 3's pattern) pre-tokenizers, and SentencePiece (`llama`) ones"
                        )))
                    }
                }
            }
            "llama" => {
                let scores: Vec<f32> = match file.get_numbers("tokenizer.ggml.scores")? {
                    Some(s) => s.into_iter().map(|v| v as f32).collect(),
                    None => return Err(bad("no `tokenizer.ggml.scores`".into())),
                };
                let prefix = file
                    .get_bool("tokenizer.ggml.add_space_prefix")
                    .unwrap_or(true);
                let unk = unk.or_else(|| {
                    types
                        .iter()
                        .position(|&t| t == spm::UNKNOWN)
                        .map(|i| i as u32)
                });
                let owned: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
                Backend::Spm(Box::new(
                    Spm::new(owned, scores, types, unk, prefix).map_err(bad)?,
                ))
            }
            other => {
                return Err(bad(format!(
                    "tokenizer.ggml.model `{other}`: kiln reads `gpt2` (Tekken) and `llama` \
                     (SentencePiece) vocabularies"
                )))
            }
        };
        let mut tokenizer = Tokenizer {
            backend,
            path: path.to_path_buf(),
            controls,
            bos,
            eos,
            add_bos: file
                .get_bool("tokenizer.ggml.add_bos_token")
                .unwrap_or(true),
            constraint_vocab: OnceLock::new(),
        };
        tokenizer.sort_controls();
        Ok(tokenizer)
    }
}

/// A Tekken vocabulary from the token list: the tokens before the first normal one are its
/// control ids (CONTROL, or user-defined where a tokenizer.json did not mark one special), the
/// rest byte-level strings in rank order.
fn tekken(file: &GgufFile, tokens: &[&str], types: &[i32]) -> Result<Tekken> {
    let path = file.path();
    let specials = types.iter().take_while(|&&t| t != spm::NORMAL).count();
    let table = byte_level_table();
    let mut bytes = Vec::with_capacity(tokens.len() - specials);
    for (i, token) in tokens.iter().enumerate().skip(specials) {
        if types[i] == spm::CONTROL {
            return Err(Error::load(
                path,
                format!(
                    "token {i} `{token}` is a control token after the first ordinary one; \
                     a Tekken vocabulary has its control tokens first"
                ),
            ));
        }
        let b: Option<Vec<u8>> = token
            .chars()
            .map(|c| table.get(c as usize).copied().flatten())
            .collect();
        bytes.push(b.ok_or_else(|| {
            Error::load(
                path,
                format!("token {i} {token:?} is not a byte-level string"),
            )
        })?);
    }
    let specials = tokens[..specials].iter().map(|t| t.to_string()).collect();
    Tekken::from_vocab(path, TEKKEN_PATTERN, specials, bytes, None)
}

/// Llama 3's split pattern (its tokenizer.json's; llama.cpp's pre-tokenizer "llama3").
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A byte-level BPE over the file's tokens and merges with Llama 3's pre-tokenizer, as a
/// tokenizer.json would describe it; control tokens are added tokens.
fn llama3(file: &GgufFile, tokens: &[&str], types: &[i32]) -> Result<HfTokenizer> {
    let path = file.path();
    let merges = file.get_strings("tokenizer.ggml.merges")?.ok_or_else(|| {
        Error::load(
            path,
            "a byte-level vocabulary without `tokenizer.ggml.merges`",
        )
    })?;
    // llama.cpp splits a merge at the first space after its first character.
    let merges: Vec<serde_json::Value> = merges
        .iter()
        .map(|m| {
            let at = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(i, _)| i);
            match at {
                Some(i) => Ok(serde_json::json!([&m[..i], &m[i + 1..]])),
                None => Err(Error::load(path, format!("merge {m:?} is not two tokens"))),
            }
        })
        .collect::<Result<_>>()?;
    let mut vocab = serde_json::Map::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.entry(t.to_string()).or_insert(serde_json::json!(i));
    }
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == spm::CONTROL)
        .map(|(i, (t, _))| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": true, "vocab": vocab, "merges": merges},
    });
    HfTokenizer::from_json(path, &json.to_string())
}
