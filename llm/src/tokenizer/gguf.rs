//! The tokenizer a llama.cpp GGUF file carries (`tokenizer.ggml.*`):
//! - `model` "gpt2" with `pre` "tekken" (Mistral Small 3.x, Nemo): the control tokens, then
//!   byte-level strings (GPT-2's byte-to-character table) in rank order, run by kiln's Tekken
//!   encoder (its merges follow from the ranks, as llama.cpp's converter derived them);
//! - `model` "llama" (Llama 2, Mistral 7B): SentencePiece pieces, scores and token types, run as
//!   llama.cpp runs them (`spm.rs`).
//!
//! Control tokens are the ids of type CONTROL; BOS / EOS / unknown come from their `*_token_id`
//! keys; `add_bos_token` (llama.cpp's default: true for both) says whether a prompt starts with
//! BOS when its template does not write one.

use std::sync::OnceLock;

use kiln_runtime::gguf::GgufFile;
use kiln_runtime::{Error, Result};

use super::hf::byte_level_table;
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
                if pre != "tekken" {
                    return Err(bad(format!(
                        "tokenizer.ggml.pre `{pre}`: kiln reads byte-level vocabularies with the \
                         `tekken` pre-tokenizer (Mistral) and SentencePiece (`llama`) ones"
                    )));
                }
                Backend::Tekken(Box::new(tekken(file, &tokens, &types)?))
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

/// A Tekken vocabulary from the token list: the leading CONTROL tokens are its control ids, the
/// rest byte-level strings in rank order.
fn tekken(file: &GgufFile, tokens: &[&str], types: &[i32]) -> Result<Tekken> {
    let path = file.path();
    let specials = types.iter().take_while(|&&t| t == spm::CONTROL).count();
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
