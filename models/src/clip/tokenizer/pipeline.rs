//! Assembles the `tokenizers` pipeline that transformers' CLIPTokenizer builds (transformers 5:
//! models/clip/tokenization_clip.py), so that ids match it exactly.

use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::vocab::{BOS_TOKEN, END_OF_WORD, EOS_TOKEN};
use super::TokenizerError;

/// CLIP's word pattern: specials, English contractions, letter runs, single digits, and runs of
/// anything else that is not whitespace. Whitespace between matches is dropped.
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

fn build_err(what: &str, e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Build(format!("{what}: {e}"))
}

/// `file` names the vocabulary's origin in errors.
pub(crate) fn clip_pipeline(
    vocab: Vocab,
    merges: Merges,
    file: &str,
) -> Result<Tokenizer, TokenizerError> {
    // Checked here because registering a missing special token below would silently append it.
    for special in [BOS_TOKEN, EOS_TOKEN] {
        if !vocab.contains_key(special) {
            return Err(TokenizerError::format(
                file,
                format!("vocabulary lacks {special}"),
            ));
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(EOS_TOKEN.to_string())
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(END_OF_WORD.to_string())
        .fuse_unk(false)
        .build()
        .map_err(|e| build_err("BPE model", e))?;
    let mut tk = Tokenizer::new(bpe);

    // NFC first so that a decomposed accent becomes the single code point the vocab knows;
    // every whitespace run becomes one space; then lower-case as CLIP was trained.
    let collapse = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
        .map_err(|e| build_err("normalizer", e))?;
    let norm = NormSequence::new(vec![NFC.into(), collapse.into(), Lowercase.into()]);
    tk.with_normalizer(Some(norm))
        .map_err(|e| build_err("normalizer", e))?;

    // invert = true: the pattern's matches are the words, the gaps between them are removed.
    let words = Split::new(
        SplitPattern::Regex(CLIP_PATTERN.into()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(|e| build_err("pre-tokenizer", e))?;
    let bytes = ByteLevel::new(false, true, true);
    tk.with_pre_tokenizer(Some(PreSequence::new(vec![words.into(), bytes.into()])));

    // transformers registers BOS/EOS as special added tokens: written literally in a prompt they
    // map to their ids before normalisation instead of being split into BPE pieces.
    add_special(&mut tk, &[BOS_TOKEN, EOS_TOKEN])?;
    Ok(tk)
}

/// Registers tokens as transformers registers its special tokens: matched in the raw text
/// (before lower-casing) and never split by BPE.
pub(crate) fn add_special(tk: &mut Tokenizer, tokens: &[&str]) -> Result<(), TokenizerError> {
    tk.add_special_tokens(tokens.iter().map(|&t| AddedToken::from(t, true)))
        .map_err(|e| build_err("special tokens", e))?;
    Ok(())
}
