//! CLIP's BPE vocabulary: the built-in merges, diffusers' vocab.json/merges.txt files, and the
//! derivation of the 49,408-entry vocabulary from the merges alone.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use tokenizers::models::bpe::{Merges, Vocab};

use super::TokenizerError;

/// OpenAI CLIP's merges (MIT licensed), gzip'd, written by tools/make_tokenizer_fixtures.py.
/// Embedded so that a single-file checkpoint, which carries no tokenizer, still tokenizes.
const BUILTIN_MERGES_GZ: &[u8] = include_bytes!("../../../assets/clip_bpe_merges.txt.gz");
pub(crate) const BUILTIN_NAME: &str = "<built-in clip_bpe_merges.txt.gz>";

pub(crate) const BOS_TOKEN: &str = "<|startoftext|>";
pub(crate) const EOS_TOKEN: &str = "<|endoftext|>";
pub(crate) const END_OF_WORD: &str = "</w>";

/// The merges count of OpenAI's CLIP vocabulary: 49,408 ids minus 512 byte symbols minus 2 specials.
pub const CLIP_MERGES: usize = 48_894;

/// GPT-2/CLIP byte-to-symbol table: printable Latin-1 bytes map to themselves, the rest to
/// U+0100 onwards, so that every byte is a visible character in vocab.json. The order (printable
/// first) fixes the ids of the first 256 vocabulary entries.
pub(crate) fn byte_symbols() -> Vec<char> {
    let printable = |b: u32| {
        (u32::from('!')..=u32::from('~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    // Printable bytes keep their code point; the others take U+0100, U+0101, ... in byte order.
    let mut points: Vec<u32> = (0..256u32).filter(|&b| printable(b)).collect();
    let others = (0..256u32).filter(|&b| !printable(b)).count() as u32;
    points.extend(256..256 + others);
    // Every code point here is below U+0144, so from_u32 cannot fail; filter_map keeps this panic-free.
    points.into_iter().filter_map(char::from_u32).collect()
}

/// The vocabulary OpenAI's tokenizer builds: byte symbols, byte symbols + `</w>`, one entry per
/// merge, then the two specials. Ids are positions in that list, as in diffusers' vocab.json.
pub(crate) fn vocab_from_merges(merges: &Merges, file: &str) -> Result<Vocab, TokenizerError> {
    let symbols = byte_symbols();
    let mut entries: Vec<String> = symbols.iter().map(|c| c.to_string()).collect();
    entries.extend(symbols.iter().map(|c| format!("{c}{END_OF_WORD}")));
    entries.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    entries.push(BOS_TOKEN.to_string());
    entries.push(EOS_TOKEN.to_string());
    let count = entries.len();
    let vocab: Vocab = entries
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    // A repeated entry would shift every later id away from the published vocabulary.
    if vocab.len() != count {
        return Err(TokenizerError::format(
            file,
            format!(
                "merges produce {} duplicate vocabulary entries",
                count - vocab.len()
            ),
        ));
    }
    Ok(vocab)
}

/// Parses merges.txt: an optional `#version` header, then one `left right` pair per line.
pub(crate) fn parse_merges(text: &str, file: &str) -> Result<Merges, TokenizerError> {
    let mut merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if (n == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((a.to_string(), b.to_string()))
            }
            _ => {
                return Err(TokenizerError::format(
                    file,
                    format!("line {} is not a `left right` merge: {line:?}", n + 1),
                ))
            }
        }
    }
    Ok(merges)
}

/// The embedded OpenAI CLIP vocabulary and merges.
pub(crate) fn builtin() -> Result<(Vocab, Merges), TokenizerError> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(BUILTIN_MERGES_GZ)
        .read_to_string(&mut text)
        .map_err(|e| TokenizerError::format(BUILTIN_NAME, format!("cannot decompress: {e}")))?;
    let merges = parse_merges(&text, BUILTIN_NAME)?;
    if merges.len() != CLIP_MERGES {
        return Err(TokenizerError::format(
            BUILTIN_NAME,
            format!("{} merges, expected {CLIP_MERGES}", merges.len()),
        ));
    }
    let vocab = vocab_from_merges(&merges, BUILTIN_NAME)?;
    Ok((vocab, merges))
}

pub(crate) fn read_text(path: &Path) -> Result<String, TokenizerError> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads diffusers' tokenizer/vocab.json and merges.txt.
pub(crate) fn read_files(vocab: &Path, merges: &Path) -> Result<(Vocab, Merges), TokenizerError> {
    let vocab_name = vocab.display().to_string();
    let map: HashMap<String, u32> = serde_json::from_str(&read_text(vocab)?)
        .map_err(|e| TokenizerError::format(&vocab_name, format!("not a token -> id map: {e}")))?;
    let merges_name = merges.display().to_string();
    let merges = parse_merges(&read_text(merges)?, &merges_name)?;
    // The BPE builder also checks this, but its message would not name the file.
    for (a, b) in &merges {
        for part in [a, b, &format!("{a}{b}")] {
            if !map.contains_key(part.as_str()) {
                return Err(TokenizerError::format(
                    &merges_name,
                    format!("merge `{a} {b}` uses {part:?}, which {vocab_name} lacks"),
                ));
            }
        }
    }
    Ok((map.into_iter().collect(), merges))
}
