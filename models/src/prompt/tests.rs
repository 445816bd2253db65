use super::*;
use crate::clip::tokenizer::ClipTokenizer;

fn parsed(prompt: &str) -> Vec<(String, f32)> {
    parse_emphasis(prompt)
        .unwrap()
        .into_iter()
        .map(|s| (s.text, s.weight))
        .collect()
}

fn pairs(expected: &[(&str, f64)]) -> Vec<(String, f32)> {
    expected
        .iter()
        .map(|&(t, w)| (t.to_string(), w as f32))
        .collect()
}

#[test]
fn a1111_docstring_examples() {
    assert_eq!(parsed("normal text"), pairs(&[("normal text", 1.0)]));
    assert_eq!(
        parsed("an (important) word"),
        pairs(&[("an ", 1.0), ("important", 1.1), (" word", 1.0)])
    );
    assert_eq!(parsed("(unbalanced"), pairs(&[("unbalanced", 1.1)]));
    assert_eq!(parsed(r"\(literal\]"), pairs(&[("(literal]", 1.0)]));
    assert_eq!(
        parsed("(unnecessary)(parens)"),
        pairs(&[("unnecessaryparens", 1.1)])
    );
    assert_eq!(
        parsed("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
        pairs(&[
            ("a ", 1.0),
            ("house", 1.573),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641),
            (".", 1.1),
        ])
    );
}

#[test]
fn nesting_and_explicit_weights() {
    assert_eq!(parsed("((word))"), pairs(&[("word", 1.21)]));
    assert_eq!(parsed("[word]"), pairs(&[("word", 1.0 / 1.1)]));
    assert_eq!(parsed("(word:1.5)"), pairs(&[("word", 1.5)]));
    assert_eq!(parsed("(word: 1.5 )"), pairs(&[("word", 1.5)]));
    // closers without openers are text; a colon not followed by a number is text
    assert_eq!(parsed("a ) b ] c"), pairs(&[("a ) b ] c", 1.0)]));
    assert_eq!(
        parsed("x:y (a:b) z"),
        pairs(&[("x:y ", 1.0), ("a:b", 1.1), (" z", 1.0)])
    );
    assert_eq!(parsed(""), pairs(&[("", 1.0)]));
}

#[test]
fn break_markers() {
    let segs = parse_emphasis("a BREAK b").unwrap();
    assert_eq!(segs.len(), 3);
    assert!(segs[1].is_break && !segs[0].is_break && !segs[2].is_break);
    assert_eq!((segs[0].text.as_str(), segs[2].text.as_str()), ("a", "b"));
    // BREAK must be a whole word
    assert!(parse_emphasis("aBREAKb")
        .unwrap()
        .iter()
        .all(|s| !s.is_break));
    // inside (..:1.2) the marker's weight becomes -1.2, so A1111 no longer treats it as a break
    let segs = parse_emphasis("(a BREAK b:1.2)").unwrap();
    assert!(segs.iter().all(|s| !s.is_break));
}

#[test]
fn bad_weight_is_an_error() {
    let err = parse_emphasis("(a:1.2.3)").unwrap_err();
    assert!(err.to_string().contains("1.2.3"), "{err}");
    // without an open bracket the same text is plain
    assert_eq!(parsed("a:1.2.3)"), pairs(&[("a:1.2.3)", 1.0)]));
}

#[test]
fn chunks_of_a_200_token_prompt() {
    let tok = ClipTokenizer::builtin().unwrap();
    let prompt = "cat ".repeat(200);
    let c = PromptChunks::from_prompt(&tok, &prompt, &ChunkOptions::default()).unwrap();
    assert_eq!(c.len(), 3);
    assert_eq!(c.token_count, 200);
    let cat = tok.encode("cat").unwrap()[0];
    for (i, row) in c.ids.iter().enumerate() {
        assert_eq!(row[0], tok.bos_id());
        let body = if i < 2 { 75 } else { 50 };
        assert!(row[1..=body].iter().all(|&t| t == cat));
        assert!(row[body + 1..].iter().all(|&t| t == tok.eos_id()));
    }
    assert!(c.weights.iter().flatten().all(|&w| w == 1.0));
}

#[test]
fn weights_follow_tokens_and_sd2_pads_with_zero() {
    let tok = ClipTokenizer::builtin_openclip().unwrap();
    let opts = ChunkOptions::default();
    let c = PromptChunks::from_prompt(&tok, "a (cat:1.5) [dog]", &opts).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(&c.ids[0][..6], &[49406, 320, 2368, 1929, 49407, 0]);
    assert!((c.weights[0][2] - 1.5).abs() < 1e-6);
    assert!((c.weights[0][3] - 1.0 / 1.1).abs() < 1e-6);
    assert!(c.ids[0][5..].iter().all(|&t| t == 0));
}

#[test]
fn break_starts_a_new_chunk() {
    let tok = ClipTokenizer::builtin().unwrap();
    let c = PromptChunks::from_prompt(&tok, "a cat BREAK a dog", &ChunkOptions::default()).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(&c.ids[0][..4], &[49406, 320, 2368, 49407]);
    assert_eq!(&c.ids[1][..4], &[49406, 320, 1929, 49407]);
    assert_eq!(c.token_count, 75 + 2);
}

#[test]
fn emphasis_keeps_the_mean() {
    // 3 tokens x 2 channels
    let mut z = vec![1.0f32, 2.0, 3.0, 4.0, -1.0, 0.5];
    let before: f32 = z.iter().sum::<f32>() / 6.0;
    apply_emphasis(&mut z, &[1.0, 2.0, 0.5]).unwrap();
    let after: f32 = z.iter().sum::<f32>() / 6.0;
    assert!((before - after).abs() < 1e-6);
    // the ratio between rows follows the weights
    assert!((z[2] / z[0] - 2.0 * 3.0).abs() < 1e-5);
    assert!(matches!(
        apply_emphasis(&mut z, &[1.0; 4]),
        Err(PromptError::Shape {
            values: 6,
            tokens: 4
        })
    ));
}

fn embedding(tok: &ClipTokenizer, name: &str, count: usize, index: usize) -> PromptEmbedding {
    PromptEmbedding {
        name: name.into(),
        ids: tok.encode(name).unwrap(),
        count,
        index,
    }
}

#[test]
fn embeddings_take_their_vector_count_in_slots() {
    let tok = ClipTokenizer::builtin().unwrap();
    // "easynegative" is several BPE tokens; its 3 vectors replace them wherever they occur, with
    // the weight of the text around them.
    let entries = [
        embedding(&tok, "easynegative", 3, 0),
        embedding(&tok, "easy", 1, 1),
    ];
    assert!(entries[0].ids.len() > 1, "{:?}", entries[0].ids);
    let c = PromptChunks::from_prompt_with(
        &tok,
        "a (easynegative:1.5) cat, easy",
        &ChunkOptions::default(),
        &entries,
    )
    .unwrap();
    assert_eq!(c.len(), 1);
    let a = tok.encode("a").unwrap()[0];
    assert_eq!(&c.ids[0][..2], &[tok.bos_id(), a]);
    // The longest name wins at a position, so "easynegative" is not read as "easy" + "negative".
    assert_eq!(
        c.fixes[0],
        [
            ChunkFix {
                position: 2,
                count: 3,
                index: 0
            },
            ChunkFix {
                position: 7,
                count: 1,
                index: 1
            }
        ]
    );
    assert!(c.weights[0][2..5].iter().all(|&w| (w - 1.5).abs() < 1e-6));
    // a, 3 vectors, cat, ",", 1 vector: 7 prompt tokens.
    assert_eq!(c.token_count, 7);
    assert_eq!(c.ids[0][8], tok.eos_id());
}

#[test]
fn an_embedding_is_never_split_across_chunks() {
    let tok = ClipTokenizer::builtin().unwrap();
    let entries = [embedding(&tok, "easynegative", 4, 0)];
    // 73 words then the 4-vector embedding: it does not fit in the 2 slots left, so it starts
    // the second chunk (A1111 pads the first).
    let prompt = format!("{}easynegative", "cat ".repeat(73));
    let c =
        PromptChunks::from_prompt_with(&tok, &prompt, &ChunkOptions::default(), &entries).unwrap();
    assert_eq!(c.len(), 2);
    assert!(c.fixes[0].is_empty());
    assert_eq!(
        c.fixes[1],
        [ChunkFix {
            position: 1,
            count: 4,
            index: 0
        }]
    );
    assert_eq!(c.ids[0][74], tok.eos_id());
    // An embedding longer than a chunk is refused by name.
    let huge = [embedding(&tok, "easynegative", 76, 0)];
    let err = PromptChunks::from_prompt_with(&tok, "x", &ChunkOptions::default(), &huge)
        .unwrap_err()
        .to_string();
    assert!(err.contains("easynegative") && err.contains("76"), "{err}");
}

#[test]
fn embeddings_move_with_their_words_when_a_comma_cuts_the_chunk() {
    let tok = ClipTokenizer::builtin().unwrap();
    let entries = [embedding(&tok, "easynegative", 2, 0)];
    // 70 words, a comma, the embedding (2 slots) and 5 words: at the 76th token the chunk is full
    // and the tokens after the comma (embedding included) move to the next chunk.
    let prompt = format!("{}, easynegative {}", "cat ".repeat(70), "dog ".repeat(5));
    let c =
        PromptChunks::from_prompt_with(&tok, &prompt, &ChunkOptions::default(), &entries).unwrap();
    assert_eq!(c.len(), 2);
    assert!(c.fixes[0].is_empty(), "{:?}", c.fixes);
    assert_eq!(
        c.fixes[1],
        [ChunkFix {
            position: 1,
            count: 2,
            index: 0
        }]
    );
    let dog = tok.encode("dog").unwrap()[0];
    assert_eq!(c.ids[1][3], dog);
}
