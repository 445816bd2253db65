use std::path::PathBuf;

use super::vocab::{byte_symbols, parse_merges, vocab_from_merges};
use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-tok-unit-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn byte_symbols_cover_every_byte_once() {
    let s = byte_symbols();
    assert_eq!(s.len(), 256);
    let mut sorted = s.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 256);
    // printable bytes first and unchanged, the rest from U+0100 in byte order
    assert_eq!(s[0], '!');
    assert_eq!(s[93], '~');
    assert_eq!(s[188], '\u{100}'); // byte 0x00
    assert_eq!(s[188 + 32], '\u{120}'); // byte 0x20, the space: GPT-2's 'Ġ'
}

#[test]
fn builtin_vocab_has_clip_ids() {
    let tok = ClipTokenizer::builtin().unwrap();
    assert_eq!(tok.vocab_size(), CLIP_VOCAB_SIZE);
    assert_eq!(tok.bos_id(), 49406);
    assert_eq!(tok.eos_id(), 49407);
    assert_eq!(tok.token_id("!"), Some(0));
    assert_eq!(tok.token_id("a</w>"), Some(320));
    assert_eq!(tok.token_id(",</w>"), Some(267));
    assert_eq!(tok.padding(), Padding::Eos);
}

#[test]
fn encodes_a_plain_prompt() {
    let tok = ClipTokenizer::builtin().unwrap();
    // ids from transformers' CLIPTokenizer
    assert_eq!(
        tok.encode("a photo of a cat").unwrap(),
        [320, 1125, 539, 320, 2368]
    );
    assert_eq!(
        tok.encode("A  PHOTO\nof a Cat ").unwrap(),
        [320, 1125, 539, 320, 2368]
    );
    assert!(tok.encode("").unwrap().is_empty());
}

#[test]
fn padding_modes() {
    let tok = ClipTokenizer::builtin().unwrap();
    let eos = tok.encode_padded("a cat", 8).unwrap();
    assert_eq!(eos, [49406, 320, 2368, 49407, 49407, 49407, 49407, 49407]);
    let sd2 = ClipTokenizer::builtin_openclip().unwrap();
    assert_eq!(sd2.padding(), Padding::OPENCLIP);
    let bang = sd2.encode_padded("a cat", 8).unwrap();
    assert_eq!(bang, [49406, 320, 2368, 49407, 0, 0, 0, 0]);
    // transformers makes the pad token special: "!" stops joining BPE pieces
    assert_eq!(tok.encode("wow!!").unwrap(), [2781, 748]);
    assert_eq!(sd2.encode("wow!!").unwrap(), [2781, 0, 0]);
    // back to EOS padding drops the special "!"
    let back = sd2.with_padding(Padding::Eos).unwrap();
    assert_eq!(back.encode("wow!!").unwrap(), [2781, 748]);
    // truncation keeps the end token
    let cut = tok.encode_padded("a cat a cat", 4).unwrap();
    assert_eq!(cut, [49406, 320, 2368, 49407]);
    assert_eq!(tok.encode_padded("", 2).unwrap(), [49406, 49407]);
    assert!(matches!(
        tok.encode_padded("a", 1),
        Err(TokenizerError::MaxLen(1))
    ));
    assert!(matches!(
        ClipTokenizer::builtin()
            .unwrap()
            .with_padding(Padding::Token(99_999)),
        Err(TokenizerError::PadId(99_999))
    ));
}

#[test]
fn bad_merges_line_names_file_and_line() {
    let err = parse_merges("#version: 0.2\ni n\nthree part line\n", "m.txt").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("m.txt") && msg.contains("line 3"), "{msg}");
}

#[test]
fn duplicate_merges_are_rejected() {
    let merges = vec![("i".to_string(), "n".to_string()), ("i".into(), "n".into())];
    let err = vocab_from_merges(&merges, "dup.txt").unwrap_err();
    assert!(err.to_string().contains("dup.txt"), "{err}");
}

#[test]
fn unreadable_files_are_named() {
    let dir = temp_dir("missing");
    let vocab = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    let err = ClipTokenizer::from_vocab_merges(&vocab, &merges).unwrap_err();
    assert!(err.to_string().contains("vocab.json"), "{err}");

    std::fs::write(&vocab, "not json").unwrap();
    let err = ClipTokenizer::from_vocab_merges(&vocab, &merges).unwrap_err();
    assert!(err.to_string().contains("vocab.json"), "{err}");

    std::fs::write(&vocab, r#"{"a": 0, "b": 1}"#).unwrap();
    std::fs::write(&merges, "#version: 0.2\na b\n").unwrap();
    let err = ClipTokenizer::from_vocab_merges(&vocab, &merges).unwrap_err();
    assert!(err.to_string().contains("merges.txt"), "{err}");

    let json = dir.join("tokenizer.json");
    std::fs::write(&json, "{}").unwrap();
    let err = ClipTokenizer::from_tokenizer_json(&json).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    let empty = temp_dir("empty");
    let err = ClipTokenizer::from_dir(&empty).unwrap_err();
    assert!(err.to_string().contains("kiln-tok-unit"), "{err}");
}
