//! kiln's tokenizers against mistral-common on tests/fixtures/llm/tokenizer (made by
//! tools/make_llm_tokenizer_fixtures.py from a 16,000-rank cut of mistral-common's own Tekken
//! vocabulary): 119 strings (unicode, emoji, CJK, whitespace runs, digits, control-token text)
//! encoded to identical ids by the tekken.json reader and the tokenizer.json path, decoded back,
//! and streamed without ever releasing half a character.

use std::path::{Path, PathBuf};

use kiln_llm::Tokenizer;
use serde_json::Value;

mod common;
use common::ids;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/tokenizer")
}

fn goldens() -> Value {
    let text = std::fs::read_to_string(dir().join("goldens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn strings() -> Vec<(String, Vec<u32>)> {
    goldens()["strings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["text"].as_str().unwrap().to_string(), ids(&s["ids"])))
        .collect()
}

fn check_strings(tokenizer: &Tokenizer) {
    let cases = strings();
    assert!(cases.len() >= 100, "only {} strings", cases.len());
    for (text, want) in &cases {
        let got = tokenizer.encode(text).unwrap();
        assert_eq!(&got, want, "ids of {text:?}");
        assert_eq!(
            &tokenizer.decode(&got, true).unwrap(),
            text,
            "decode of {text:?}"
        );
    }
}

#[test]
fn tekken_json_ids_match_mistral_common() {
    let t = Tokenizer::from_file(&dir().join("tekken.json")).unwrap();
    assert_eq!(t.vocab_size(), 17_000);
    assert_eq!(t.tekken_version(), Some("v7"));
    check_strings(&t);
}

#[test]
fn tokenizer_json_ids_match_mistral_common() {
    let t = Tokenizer::from_file(&dir().join("tokenizer.json")).unwrap();
    check_strings(&t);
}

#[test]
fn control_tokens_by_name() {
    for file in ["tekken.json", "tokenizer.json"] {
        let t = Tokenizer::from_file(&dir().join(file)).unwrap();
        let named = [
            ("<unk>", 0),
            ("<s>", 1),
            ("</s>", 2),
            ("[INST]", 3),
            ("[/INST]", 4),
            ("[IMG]", 10),
            ("[IMG_BREAK]", 12),
            ("[IMG_END]", 13),
            ("[SYSTEM_PROMPT]", 17),
            ("[/SYSTEM_PROMPT]", 18),
        ];
        for (name, id) in named {
            assert_eq!(t.token_id(name), Some(id), "{file}: {name}");
        }
        assert_eq!((t.bos_id(), t.eos_id()), (Some(1), Some(2)), "{file}");
        assert!(t.token_id("[NOT_A_TOKEN]").is_none());
        // Typed by a user, control token text is plain text.
        let ids = t.encode("[INST] hi [/INST]</s>").unwrap();
        assert!(ids.iter().all(|&id| id >= 1000), "{file}: {ids:?}");
        // A rendered template's control strings are control ids, unless escaped.
        let escaped = t.escape_controls("[INST]");
        assert_eq!(
            t.encode_rendered(&format!("<s>[INST]{escaped}[/INST]"))
                .unwrap(),
            [vec![1, 3], t.encode("[INST]").unwrap(), vec![4]].concat(),
            "{file}"
        );
    }
}

#[test]
fn the_folder_picks_tekken_json_and_the_whole_folder_loads() {
    let t = Tokenizer::from_dir(&dir()).unwrap();
    assert_eq!(t.path().file_name().unwrap(), "tekken.json");
    assert!(t.check_fits(17_000).is_ok());
    let err = t.check_fits(16_999).unwrap_err().to_string();
    assert!(err.contains("17000") && err.contains("16999"), "{err}");
}

#[test]
fn streaming_releases_whole_characters_only() {
    for file in ["tekken.json", "tokenizer.json"] {
        let t = Tokenizer::from_file(&dir().join(file)).unwrap();
        let mut split_chars = 0;
        for (text, ids) in strings() {
            let mut stream = t.stream(true);
            let mut out = String::new();
            for &id in &ids {
                let piece = stream.push(&t, id).unwrap();
                assert!(
                    !piece.contains('\u{FFFD}'),
                    "{file}: {text:?} gave {piece:?}"
                );
                if piece.is_empty() {
                    split_chars += 1;
                }
                out.push_str(&piece);
            }
            out.push_str(&stream.finish(&t).unwrap());
            assert_eq!(out, text, "{file}");
        }
        // The emoji and CJK strings do split characters across tokens in this vocabulary.
        assert!(
            split_chars > 10,
            "{file}: only {split_chars} held-back tokens"
        );
    }
}

#[test]
fn bad_files_are_named() {
    let tmp = std::env::temp_dir().join(format!("kiln-tok-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let bad = tmp.join("tekken.json");
    std::fs::write(&bad, "{\"config\": 3}").unwrap();
    let err = Tokenizer::from_file(&bad).err().unwrap().to_string();
    assert!(err.contains("tekken.json"), "{err}");
    std::fs::remove_file(&bad).unwrap();
    let err = Tokenizer::from_dir(&tmp).err().unwrap().to_string();
    assert!(err.contains("no tokenizer"), "{err}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
