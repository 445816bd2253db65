//! CLIP tokenizer and A1111 prompt handling against fixtures from tools/make_tokenizer_fixtures.py
//! (transformers' CLIPTokenizer on OpenAI's vocabulary; ports of A1111's parser and chunker).

use std::path::PathBuf;

use kiln_models::clip::tokenizer::{ClipTokenizer, Padding, TokenizerError, CLIP_MAX_LEN};
use kiln_models::prompt::{parse_emphasis, ChunkOptions, PromptChunks};
use kiln_tests::fixtures;
use kiln_tests::golden::read_json;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    read_json(&fixtures().join("tokenizer").join(name))
}

fn cases(name: &str) -> Vec<Value> {
    fixture(name)["cases"].as_array().unwrap().clone()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn temp_dir(name: &str) -> PathBuf {
    kiln_tests::temp::empty_dir(&format!("tokenizer-{name}"))
}

/// Every fixture prompt: unpadded ids, and 77-token ids padded with EOS (SD1) and, from the
/// same tokenizer set to pad with "!" (SD2), with id 0.
fn check_clip_ids(tok: &ClipTokenizer, label: &str) {
    let all = cases("clip_ids.json");
    assert!(all.len() >= 30);
    let sd2 = tok.clone().with_padding(Padding::OPENCLIP).unwrap();
    for case in all {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            ids(&case["ids"]),
            "{label}: {text:?}"
        );
        let eos = tok.encode_padded(text, CLIP_MAX_LEN).unwrap();
        assert_eq!(
            eos,
            ids(&case["padded_eos"]),
            "{label} EOS padding: {text:?}"
        );
        let bang = sd2.encode_padded(text, CLIP_MAX_LEN).unwrap();
        assert_eq!(
            bang,
            ids(&case["padded_bang"]),
            "{label} '!' padding: {text:?}"
        );
    }
}

#[test]
fn builtin_vocab_matches_transformers() {
    check_clip_ids(&ClipTokenizer::builtin().unwrap(), "built-in");
}

#[test]
fn tokenizer_folders_match_transformers() {
    let builtin = ClipTokenizer::builtin().unwrap();
    let full = temp_dir("full");
    builtin.save_dir(&full).unwrap();

    // vocab.json + merges.txt (what diffusers ships)
    let files = temp_dir("files");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(full.join(f), files.join(f)).unwrap();
    }
    let tok = ClipTokenizer::from_dir(&files).unwrap();
    assert_eq!(tok.padding(), Padding::Eos);
    check_clip_ids(&tok, "vocab.json + merges.txt");

    // tokenizer.json alone
    let json = temp_dir("json");
    std::fs::copy(full.join("tokenizer.json"), json.join("tokenizer.json")).unwrap();
    check_clip_ids(&ClipTokenizer::from_dir(&json).unwrap(), "tokenizer.json");
}

#[test]
fn folder_pad_token_sets_padding() {
    let sd2 = temp_dir("sd2");
    let tok = ClipTokenizer::builtin_openclip().unwrap();
    tok.save_dir(&sd2).unwrap();
    assert_eq!(
        ClipTokenizer::from_dir(&sd2).unwrap().padding(),
        Padding::OPENCLIP
    );

    // transformers' object form, and special_tokens_map.json winning over tokenizer_config.json
    std::fs::write(
        sd2.join("special_tokens_map.json"),
        r#"{"pad_token": {"content": "!", "lstrip": false}}"#,
    )
    .unwrap();
    std::fs::write(
        sd2.join("tokenizer_config.json"),
        r#"{"pad_token": "<|endoftext|>"}"#,
    )
    .unwrap();
    assert_eq!(
        ClipTokenizer::from_dir(&sd2).unwrap().padding(),
        Padding::Token(0)
    );
    std::fs::remove_file(sd2.join("special_tokens_map.json")).unwrap();
    assert_eq!(
        ClipTokenizer::from_dir(&sd2).unwrap().padding(),
        Padding::Eos
    );

    std::fs::write(
        sd2.join("tokenizer_config.json"),
        r#"{"pad_token": "nope-not-a-token"}"#,
    )
    .unwrap();
    let err = ClipTokenizer::from_dir(&sd2).unwrap_err();
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
}

#[test]
fn unreadable_vocab_files_are_named() {
    let dir = temp_dir("bad");
    std::fs::write(dir.join("vocab.json"), [0xff, 0xfe, 0x00]).unwrap();
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\n").unwrap();
    let err = ClipTokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, TokenizerError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("vocab.json"), "{err}");

    std::fs::write(dir.join("vocab.json"), r#"["a list"]"#).unwrap();
    let err = ClipTokenizer::from_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("vocab.json"), "{err}");

    // vocab without the special tokens
    std::fs::write(dir.join("vocab.json"), r#"{"a": 0}"#).unwrap();
    let err = ClipTokenizer::from_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("<|startoftext|>"), "{err}");

    let missing = dir.join("no-such").join("merges.txt");
    let err = ClipTokenizer::from_vocab_merges(&dir.join("vocab.json"), &missing).unwrap_err();
    assert!(err.to_string().contains("no-such"), "{err}");

    std::fs::write(dir.join("tokenizer.json"), "{\"version\": 1").unwrap();
    let err = ClipTokenizer::from_tokenizer_json(&dir.join("tokenizer.json")).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn emphasis_matches_a1111() {
    let all = cases("emphasis.json");
    assert!(all.len() >= 20);
    for case in all {
        let text = case["text"].as_str().unwrap();
        if case.get("error").is_some() {
            assert!(parse_emphasis(text).is_err(), "{text:?} should fail");
            continue;
        }
        let got = parse_emphasis(text).unwrap();
        let want = case["parsed"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{text:?}: {got:?}");
        for (g, w) in got.iter().zip(want) {
            let (wt, ww) = (w[0].as_str().unwrap(), w[1].as_f64().unwrap());
            assert_eq!(g.text, wt, "{text:?}");
            assert!(
                (f64::from(g.weight) - ww).abs() < 1e-6,
                "{text:?}: {g:?} vs {ww}"
            );
            assert_eq!(g.is_break, wt == "BREAK" && ww == -1.0, "{text:?}: {g:?}");
        }
    }
}

#[test]
fn chunks_match_a1111() {
    let sd1 = ClipTokenizer::builtin().unwrap();
    let sd2 = ClipTokenizer::builtin_openclip().unwrap();
    for case in cases("chunks.json") {
        let text = case["text"].as_str().unwrap();
        let tok = match case["pad"].as_str().unwrap() {
            "eos" => &sd1,
            _ => &sd2,
        };
        let got = PromptChunks::from_prompt(tok, text, &ChunkOptions::default()).unwrap();
        let want_ids: Vec<Vec<u32>> = case["ids"].as_array().unwrap().iter().map(ids).collect();
        let got_ids: Vec<Vec<u32>> = got.ids.iter().map(|r| r.to_vec()).collect();
        assert_eq!(got_ids, want_ids, "{text:?}");
        assert_eq!(
            got.token_count as u64,
            case["token_count"].as_u64().unwrap(),
            "{text:?}"
        );
        let want_w = case["weights"].as_array().unwrap();
        for (row, want_row) in got.weights.iter().zip(want_w) {
            for (g, w) in row.iter().zip(want_row.as_array().unwrap()) {
                assert!(
                    (f64::from(*g) - w.as_f64().unwrap()).abs() < 1e-6,
                    "{text:?}"
                );
            }
        }
    }
}

#[test]
fn comma_backtrack_moves_the_phrase() {
    let tok = ClipTokenizer::builtin().unwrap();
    let prompt = vec!["a red apple on a wooden table"; 20].join(", ");
    let on = PromptChunks::from_prompt(&tok, &prompt, &ChunkOptions::default()).unwrap();
    let off = ChunkOptions { comma_backtrack: 0 };
    let off = PromptChunks::from_prompt(&tok, &prompt, &off).unwrap();
    let comma = tok.token_id(",</w>").unwrap();
    // with backtrack the first chunk ends on a comma followed by EOS padding
    let end = on.ids[0].iter().position(|&t| t == tok.eos_id()).unwrap();
    assert!(end < 76);
    assert_eq!(on.ids[0][end - 1], comma);
    // without it the first chunk is full
    assert_eq!(off.ids[0][76], tok.eos_id());
    assert_ne!(off.ids[0][75], comma);
}
