//! A model folder's tokenizer as llama.cpp's converter (convert_hf_to_gguf.py) writes it into a GGUF
//! file: the `tokenizer.ggml.*` values, `tokenizer.chat_template`, in the converter's order, so
//! kiln's GGUF exports carry the same vocabulary keys as the converter's files.
//!
//! - `tekken.json`, read as mistral-common does: model "gpt2", pre
//!   "tekken", the control tokens then each rank's bytes in GPT-2's byte-level spelling, scores 0
//!   (i32), types CONTROL / NORMAL, merges rebuilt from the ranks (every split of a rank's bytes
//!   into two ranked halves, ordered by the halves' ranks, then by the merged rank), bos / eos / unk
//!   / pad from the file (pad falling back to eos), add_bos true, add_eos false, and llama.cpp's
//!   built-in template name for the tokenizer version (v1 "mistral-v1", v3 "mistral-v3-tekken", v7
//!   "mistral-v7-tekken"; later versions name template files of llama.cpp's tree, so no template
//!   is written for them). A folder that also has `tokenizer.json` (Mistral Nemo / Small on the
//!   Hub) is read the same way, as kiln's own tokenizer reads it, where the converter would read
//!   tokenizer.json instead (same ids; merges and token types as above); its chat template is the
//!   folder's (chat_template.jinja or tokenizer_config.json), as the converter takes it on that path.
//! - `tokenizer.model` (SentencePiece): model "llama", pre "default", every piece with its score and
//!   type (padded to the config's vocab_size with `[PADn]`, as the converter does), `added_tokens.json`
//!   and `tokenizer_config.json`'s `added_tokens_decoder` types, special ids from config.json
//!   (`bos/eos/unk/sep/pad_token_id`), add_bos / add_eos from tokenizer_config.json and its chat
//!   template (or chat_template.jinja).
//!
//! A folder with only `tokenizer.json` is refused: the converter names its pre-tokenizer by hashing
//! the Hugging Face tokenizer's output on a test text, which kiln does not reproduce.

use std::collections::HashMap;
use std::path::Path;

use kiln_runtime::gguf::GgufValue;
use kiln_runtime::{Error, Result};
use serde_json::Value;

use super::hf::byte_level_table;
use super::spm::{BYTE, CONTROL, NORMAL, UNKNOWN};
use super::Tekken;

const UNUSED: i32 = 5;
const USER_DEFINED: i32 = 4;

/// The tokenizer keys of the folder `dir` (its config.json already parsed as `config`).
pub fn folder_vocab_metadata(dir: &Path, config: &Value) -> Result<Vec<(String, GgufValue)>> {
    if dir.join("tekken.json").is_file() {
        let mut kv = tekken(&dir.join("tekken.json"))?;
        if dir.join("tokenizer.json").is_file() {
            let tok_config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
            kv.retain(|(k, _)| k != "tokenizer.chat_template");
            if let Some(t) = chat_template(dir, &tok_config)? {
                kv.push(kv_pair("tokenizer.chat_template", GgufValue::String(t)));
            }
        }
        return Ok(kv);
    }
    if dir.join("tokenizer.model").is_file() {
        return sentencepiece(dir, config);
    }
    Err(Error::load(
        dir,
        "no tokenizer kiln can write to GGUF: expected tekken.json or a \
         SentencePiece tokenizer.model (tokenizer.json-only folders: use llama.cpp's convert_hf_to_gguf.py)",
    ))
}

fn strings(items: impl IntoIterator<Item = String>) -> GgufValue {
    GgufValue::Array(items.into_iter().map(GgufValue::String).collect())
}

fn kv_pair(key: &str, value: GgufValue) -> (String, GgufValue) {
    (key.to_string(), value)
}

/// GPT-2's byte-level spelling of `bytes` (each byte one character).
fn byte_level(bytes: &[u8], chars: &[char; 256]) -> String {
    bytes.iter().map(|&b| chars[b as usize]).collect()
}

fn byte_chars() -> [char; 256] {
    let mut chars = ['\0'; 256];
    for (c, b) in byte_level_table().into_iter().enumerate() {
        if let Some(b) = b {
            chars[b as usize] = char::from_u32(c as u32).unwrap_or('\0');
        }
    }
    chars
}

fn tekken(path: &Path) -> Result<Vec<(String, GgufValue)>> {
    let t = Tekken::load(path)?;
    let chars = byte_chars();
    let specials = t.specials();
    let ranks_bytes = t.ordinary_bytes();
    let ranks: HashMap<&[u8], usize> = ranks_bytes
        .iter()
        .enumerate()
        .map(|(r, b)| (b.as_slice(), r))
        .collect();
    // mistral-common's merges, as the converter rebuilds them: for each rank past the 256 bytes,
    // every split into two ranked halves, ordered by (left rank, right rank).
    let mut merges = Vec::new();
    for token in ranks_bytes.iter().skip(256) {
        let mut local: Vec<(usize, usize, usize)> = (1..token.len())
            .filter_map(|j| {
                let (l, r) = token.split_at(j);
                Some((*ranks.get(l)?, *ranks.get(r)?, j))
            })
            .collect();
        if local.is_empty() {
            return Err(Error::load(
                path,
                format!("rank bytes {token:?} cannot be made by merging two ranks"),
            ));
        }
        local.sort();
        for (_, _, j) in local {
            let (l, r) = token.split_at(j);
            merges.push(format!(
                "{} {}",
                byte_level(l, &chars),
                byte_level(r, &chars)
            ));
        }
    }
    let id = |name: &str| specials.iter().position(|s| s == name);
    let bos = id("<s>").unwrap_or(1);
    let eos = id("</s>").unwrap_or(2);
    let unk = id("<unk>").unwrap_or(0);
    let pad = id("<pad>").unwrap_or(eos);
    let n = specials.len() + ranks_bytes.len();
    let mut out = vec![
        kv_pair("tokenizer.ggml.model", "gpt2".into()),
        kv_pair("tokenizer.ggml.pre", "tekken".into()),
        kv_pair("tokenizer.ggml.merges", strings(merges)),
        kv_pair("tokenizer.ggml.bos_token_id", GgufValue::U32(bos as u32)),
        kv_pair("tokenizer.ggml.eos_token_id", GgufValue::U32(eos as u32)),
        kv_pair(
            "tokenizer.ggml.unknown_token_id",
            GgufValue::U32(unk as u32),
        ),
        kv_pair(
            "tokenizer.ggml.padding_token_id",
            GgufValue::U32(pad as u32),
        ),
        kv_pair(
            "tokenizer.ggml.tokens",
            strings(
                specials
                    .iter()
                    .cloned()
                    .chain(ranks_bytes.iter().map(|b| byte_level(b, &chars))),
            ),
        ),
        kv_pair(
            "tokenizer.ggml.scores",
            GgufValue::Array(vec![GgufValue::I32(0); n]),
        ),
        kv_pair(
            "tokenizer.ggml.token_type",
            GgufValue::Array(
                (0..n)
                    .map(|i| GgufValue::I32(if i < specials.len() { CONTROL } else { NORMAL }))
                    .collect(),
            ),
        ),
        kv_pair("tokenizer.ggml.add_bos_token", GgufValue::Bool(true)),
        kv_pair("tokenizer.ggml.add_eos_token", GgufValue::Bool(false)),
    ];
    let template = match t.version() {
        Some("v1") => Some("mistral-v1"),
        Some("v3") => Some("mistral-v3-tekken"),
        Some("v7") => Some("mistral-v7-tekken"),
        _ => None,
    };
    if let Some(name) = template {
        out.push(kv_pair("tokenizer.chat_template", name.into()));
    }
    Ok(out)
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::load(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::load(path, format!("not JSON: {e}")))
}

fn sentencepiece(dir: &Path, config: &Value) -> Result<Vec<(String, GgufValue)>> {
    let model = dir.join("tokenizer.model");
    let bytes =
        std::fs::read(&model).map_err(|e| Error::load(&model, format!("cannot read: {e}")))?;
    let pieces = super::spm_model::pieces(&bytes).map_err(|e| Error::load(&model, e))?;
    let vocab_size = config
        .get("vocab_size")
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .unwrap_or(pieces.len());
    let mut tokens: Vec<String> = (0..vocab_size).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; vocab_size];
    let mut types = vec![UNUSED; vocab_size];
    for (i, p) in pieces.into_iter().enumerate().take(vocab_size) {
        tokens[i] = p.piece;
        scores[i] = p.score;
        // SentencePiece's types are GGUF's, but user-defined pieces count as normal here.
        types[i] = match p.kind {
            UNKNOWN | CONTROL | UNUSED | BYTE => p.kind,
            _ => NORMAL,
        };
    }
    if let Some(Value::Object(added)) = read_json(&dir.join("added_tokens.json"))? {
        for (text, id) in added {
            if let Some(id) = id.as_u64().map(|i| i as usize).filter(|&i| i < vocab_size) {
                tokens[id] = text;
                scores[id] = -1000.0;
                types[id] = USER_DEFINED;
            }
        }
    }
    let tok_config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
    if let Some(Value::Object(decoder)) = tok_config.get("added_tokens_decoder") {
        for (id, data) in decoder {
            let Some(id) = id.parse::<usize>().ok().filter(|&i| i < vocab_size) else {
                continue;
            };
            let content = data.get("content").and_then(Value::as_str).unwrap_or("");
            let special = data
                .get("special")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            // The converter changes only the type here (its text stays the piece's).
            types[id] = if special || looks_special(content) {
                CONTROL
            } else {
                USER_DEFINED
            };
        }
    }
    let mut out = Vec::new();
    if let Some(b) = tok_config.get("add_prefix_space").and_then(Value::as_bool) {
        out.push(kv_pair(
            "tokenizer.ggml.add_space_prefix",
            GgufValue::Bool(b),
        ));
    }
    out.extend([
        kv_pair("tokenizer.ggml.model", "llama".into()),
        kv_pair("tokenizer.ggml.pre", "default".into()),
        kv_pair("tokenizer.ggml.tokens", strings(tokens)),
        kv_pair(
            "tokenizer.ggml.scores",
            GgufValue::Array(scores.into_iter().map(GgufValue::F32).collect()),
        ),
        kv_pair(
            "tokenizer.ggml.token_type",
            GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()),
        ),
    ]);
    for (typ, key) in [
        ("bos", "bos_token_id"),
        ("eos", "eos_token_id"),
        ("unk", "unknown_token_id"),
        ("sep", "seperator_token_id"),
        ("pad", "padding_token_id"),
    ] {
        let id = config
            .get(format!("{typ}_token_id"))
            .and_then(Value::as_u64)
            .filter(|&i| (i as usize) < vocab_size);
        if let Some(id) = id {
            out.push(kv_pair(
                &format!("tokenizer.ggml.{key}"),
                GgufValue::U32(id as u32),
            ));
        }
    }
    for typ in ["bos", "eos"] {
        if let Some(b) = tok_config
            .get(format!("add_{typ}_token"))
            .and_then(Value::as_bool)
        {
            out.push(kv_pair(
                &format!("tokenizer.ggml.add_{typ}_token"),
                GgufValue::Bool(b),
            ));
        }
    }
    if let Some(t) = chat_template(dir, &tok_config)? {
        out.push(kv_pair("tokenizer.chat_template", GgufValue::String(t)));
    }
    Ok(out)
}

/// The converter's `does_token_look_special`.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// `chat_template.jinja` beside the model, else tokenizer_config.json's string template.
fn chat_template(dir: &Path, tok_config: &Value) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| Error::load(&jinja, format!("cannot read: {e}")));
    }
    Ok(tok_config
        .get("chat_template")
        .and_then(Value::as_str)
        .map(str::to_string))
}
