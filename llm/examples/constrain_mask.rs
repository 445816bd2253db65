//! The cost of constrained decoding per token at a Mistral-size vocabulary: build the vocabulary
//! trie, compile a schema, then step replies where each step masks a row of logits, picks the
//! best allowed token and commits it. Prints microseconds per token for `mask` and `commit`.
//!
//! ```text
//! cargo run -p kiln-llm --example constrain_mask                  # synthetic 131072-token vocab
//! cargo run -p kiln-llm --example constrain_mask -- tekken.json   # a real tokenizer file
//! ```
//! (The dev profile builds llguidance at opt-level 3, as release does.)

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_llm::constrain::{Grammar, TokenConstraint, TokenVocabulary};
use kiln_llm::Tokenizer;
use serde_json::json;

/// xorshift64*: a reproducible stream without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// 1000 control tokens, the 256 bytes, then word-like pieces (letters, a leading space, digits,
/// JSON punctuation runs such as `",` and `{"`) up to 131072 ids, EOS = 2, as Tekken lays out.
fn synthetic(size: usize) -> Vec<(Vec<u8>, bool)> {
    let mut pieces: Vec<(Vec<u8>, bool)> = (0..1000)
        .map(|i| (format!("<SPECIAL_{i}>").into_bytes(), true))
        .collect();
    pieces.extend((0..=255u8).map(|b| (vec![b], false)));
    let mut seen: std::collections::HashSet<Vec<u8>> = pieces.iter().map(|p| p.0.clone()).collect();
    let mut rng = Rng(0x6b696c6e);
    let letters = b"etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUM";
    let punct: [&[u8]; 12] = [
        b"\",", b"\":", b"{\"", b"\"}", b"\": \"", b", \"", b"],", b"[{", b"}}", b"\"]", b": ",
        b", ",
    ];
    while pieces.len() < size {
        let kind = rng.below(10);
        let mut w = Vec::new();
        if kind < 6 {
            if rng.below(2) == 0 {
                w.push(b' ');
            }
            for _ in 0..1 + rng.below(9) {
                w.push(letters[rng.below(letters.len())]);
            }
        } else if kind < 8 {
            for _ in 0..1 + rng.below(3) {
                w.push(b'0' + rng.below(10) as u8);
            }
        } else if kind < 9 {
            w.extend_from_slice(punct[rng.below(punct.len())]);
            w.push(letters[rng.below(letters.len())]);
        } else {
            // Multi-byte UTF-8 (2- and 3-byte characters).
            let c = char::from_u32(0xC0 + rng.below(0x2000) as u32).unwrap_or('é');
            w.extend_from_slice(c.to_string().as_bytes());
        }
        if seen.insert(w.clone()) {
            pieces.push((w, false));
        }
    }
    pieces
}

fn main() {
    let t = Instant::now();
    let (vocab, source): (Arc<TokenVocabulary>, String) = match std::env::args().nth(1) {
        Some(path) => {
            let tokenizer = Tokenizer::from_file(Path::new(&path)).expect("tokenizer");
            let built = Instant::now();
            let v = TokenVocabulary::new(&tokenizer).expect("vocabulary");
            eprintln!("tokenizer loaded in {:.0?}", built - t);
            let elapsed = built.elapsed();
            eprintln!("vocabulary built in {elapsed:.0?}");
            (v, path)
        }
        None => {
            let pieces = synthetic(131072);
            let built = Instant::now();
            let v = TokenVocabulary::from_pieces(pieces, &[2]).expect("vocabulary");
            eprintln!("vocabulary built in {:.0?}", built.elapsed());
            (v, "synthetic".into())
        }
    };
    let n = vocab.size();
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 5},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["city", "zip"]
            },
            "kind": {"enum": ["person", "company", "other"]}
        },
        "required": ["name", "age", "tags", "address", "kind"]
    });
    let t = Instant::now();
    let grammar = Grammar::json_schema(&schema, &vocab).expect("schema");
    eprintln!("schema compiled in {:.0?}", t.elapsed());

    let mut rng = Rng(42);
    let mut logits = vec![0f32; n];
    let mut compute_time = Duration::ZERO;
    let (mut mask_time, mut commit_time, mut start_time) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut per_token: Vec<f64> = Vec::new();
    let (mut tokens, mut replies) = (0usize, 0usize);
    while tokens < 3000 {
        let t = Instant::now();
        let mut c = grammar.start();
        start_time += t.elapsed();
        replies += 1;
        for _ in 0..400 {
            for l in logits.iter_mut() {
                *l = (rng.next() >> 40) as f32 / (1u64 << 24) as f32;
            }
            let t0 = Instant::now();
            c.allows(0).expect("mask"); // llguidance's part: the allowed set
            let ta = Instant::now();
            c.mask(&mut logits).expect("mask"); // kiln's part: -inf into the logits
            let t1 = Instant::now();
            compute_time += ta - t0;
            let id = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as u32)
                .unwrap();
            let t2 = Instant::now();
            c.commit(id).expect("commit");
            let t3 = Instant::now();
            mask_time += t1 - t0;
            commit_time += t3 - t2;
            per_token.push(((t1 - t0) + (t3 - t2)).as_secs_f64() * 1e6);

            tokens += 1;
            if vocab.eos_ids().contains(&id) {
                break;
            }
        }
    }
    per_token.sort_by(f64::total_cmp);
    let us = |d: Duration| d.as_secs_f64() * 1e6 / tokens as f64;
    println!(
        "{source} vocabulary of {n}: {tokens} tokens in {replies} replies; per token: mask {:.1} us (of which computing the set {:.1} us), commit {:.1} us, \
         mask+commit median {:.1} us, p99 {:.1} us, max {:.1} us; start {:.1} us per reply",
        us(mask_time),
        us(compute_time),
        us(commit_time),
        per_token[per_token.len() / 2],
        per_token[per_token.len() * 99 / 100],
        per_token[per_token.len() - 1],
        start_time.as_secs_f64() * 1e6 / replies as f64,
    );
}
