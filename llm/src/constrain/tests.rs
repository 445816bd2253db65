//! The mask against what the grammar allows, on the bundled model's byte-level tokenizer.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::tokenizer::Tokenizer;

fn bundled() -> (Tokenizer, Arc<TokenVocabulary>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundled");
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let vocab = TokenVocabulary::new(&tokenizer).unwrap();
    (tokenizer, vocab)
}

/// The ids the mask leaves finite.
fn allowed(c: &mut GrammarConstraint, vocab: usize) -> Vec<u32> {
    let mut logits = vec![0.0f32; vocab];
    c.mask(&mut logits).unwrap();
    (0..vocab as u32)
        .filter(|&i| logits[i as usize].is_finite())
        .collect()
}

#[test]
fn shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<TokenVocabulary>();
    send_sync::<Grammar>();
    send_sync::<Tokenizer>();
    send::<GrammarConstraint>();
    send::<Box<dyn TokenConstraint>>();
}

#[test]
fn the_tokenizer_builds_its_vocabulary_once() {
    let (tokenizer, _) = bundled();
    let a = tokenizer.constraint_vocabulary().unwrap();
    let b = tokenizer.constraint_vocabulary().unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn vocabulary_has_each_ids_bytes_and_marks_control_tokens() {
    let (tokenizer, vocab) = bundled();
    assert_eq!(vocab.size(), 512);
    assert_eq!(vocab.eos_ids(), &[2]);
    assert_eq!(vocab.special_id("[TOOL_CALLS]"), Some(9));
    assert_eq!(vocab.special_lark("[TOOL_CALLS]").as_deref(), Some("<[9]>"));
    assert_eq!(vocab.token_bytes(9), b"\xff[TOOL_CALLS]");
    // Ordinary ids: the bytes they decode to, a leading space included (byte-level `Ġ`).
    for text in ["{", " plus", "7", "\n"] {
        let ids = tokenizer.encode(text).unwrap();
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| vocab.token_bytes(i).to_vec())
            .collect();
        assert_eq!(bytes, text.as_bytes(), "{text:?} -> {ids:?}");
    }
}

/// With one possible reply, the allowed ids at each step are exactly those whose bytes are a
/// prefix of the rest of it; at the end only EOS is.
#[test]
fn the_mask_allows_exactly_the_prefixes_of_the_only_reply() {
    let (_, vocab) = bundled();
    let schema = json!({
        "type": "object",
        "properties": {"a": {"const": 1}, "b": {"enum": ["x"]}},
        "required": ["a", "b"]
    });
    let grammar = Grammar::json_schema(&schema, &vocab).unwrap();
    let mut c = grammar.start();
    let reply = br#"{"a": 1, "b": "x"}"#;
    let mut done = 0;
    let mut steps = 0;
    while done < reply.len() {
        let rest = &reply[done..];
        let want: Vec<u32> = (0..vocab.size() as u32)
            .filter(|&i| {
                let b = vocab.token_bytes(i);
                !b.is_empty() && rest.starts_with(b)
            })
            .collect();
        assert!(!want.is_empty());
        assert_eq!(
            allowed(&mut c, vocab.size()),
            want,
            "after {:?}",
            &reply[..done]
        );
        assert!(!c.is_accepting() && !c.is_finished());
        // Take the longest allowed token, as a model might.
        let id = *want
            .iter()
            .max_by_key(|&&i| vocab.token_bytes(i).len())
            .unwrap();
        c.commit(id).unwrap();
        done += vocab.token_bytes(id).len();
        steps += 1;
    }
    assert!(steps >= 4);
    assert!(c.is_accepting() && c.is_finished());
    assert_eq!(allowed(&mut c, vocab.size()), vec![2]);
    c.commit(2).unwrap();
}

#[test]
fn a_token_the_mask_bans_cannot_be_committed() {
    let (tokenizer, vocab) = bundled();
    let grammar = Grammar::json_object(&vocab).unwrap();
    let mut c = grammar.start();
    let mut logits = vec![0.0f32; 600]; // a padded head: ids past the tokenizer's are banned
    c.mask(&mut logits).unwrap();
    assert!(logits[512..].iter().all(|l| *l == f32::NEG_INFINITY));
    let brace = tokenizer.encode("{").unwrap()[0];
    assert!(logits[brace as usize].is_finite());
    let letter = tokenizer.encode("a").unwrap()[0];
    assert_eq!(logits[letter as usize], f32::NEG_INFINITY);
    assert_eq!(logits[2], f32::NEG_INFINITY, "EOS before any JSON");
    let err = c.commit(100_000).unwrap_err().to_string();
    assert!(err.contains("not allowed"), "{err}");
    let err = c.commit(letter).unwrap_err().to_string();
    assert!(err.contains("not allowed"), "{err}");
    let err = c.commit(2).unwrap_err().to_string();
    assert!(err.contains("not allowed"), "{err}");
    // An object that is complete can end; EOS is then allowed.
    for id in tokenizer.encode("{}").unwrap() {
        c.commit(id).unwrap();
    }
    assert!(c.is_accepting());
    let mut logits = vec![0.0f32; 512];
    c.mask(&mut logits).unwrap();
    assert!(logits[2].is_finite());
}

#[test]
fn json_has_no_free_whitespace() {
    let (tokenizer, vocab) = bundled();
    let grammar = Grammar::json_schema(
        &json!({"type": "object", "properties": {"n": {"type": "array", "items": {"type": "integer"}}}}),
        &vocab,
    )
    .unwrap();
    let mut c = grammar.start();
    let space = tokenizer.encode(" ").unwrap()[0];
    let newline = tokenizer.encode("\n").unwrap()[0];
    for id in tokenizer.encode("{\"n\": [1,").unwrap() {
        c.commit(id).unwrap();
    }
    // After ",": only the separator's one space, then no more blanks.
    let ok = allowed(&mut c, vocab.size());
    assert!(ok.contains(&space) && !ok.contains(&newline));
    c.commit(space).unwrap();
    let ok = allowed(&mut c, vocab.size());
    assert!(!ok.contains(&space) && !ok.contains(&newline));
    // `{` or a space at the very start is not allowed either.
    let ok = allowed(&mut grammar.start(), vocab.size());
    assert!(!ok.contains(&space) && !ok.contains(&newline));
}

#[test]
fn bad_schemas_are_errors_naming_the_problem() {
    let (_, vocab) = bundled();
    let cases = [
        (json!({"type": "nonsense"}), "nonsense"),
        (
            json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}),
            "missing",
        ),
        (json!([1, 2]), "must be a JSON object"),
        (json!(false), "accepts no value"),
        (
            json!({"type": "object", "dependentSchemas": {"a": {"required": ["b"]}}}),
            "dependentSchemas",
        ),
        (
            json!({"type": "string", "minLength": 5, "maxLength": 2}),
            "nsatisfiable",
        ),
    ];
    for (schema, needle) in cases {
        let format = ResponseFormat::JsonSchema {
            name: "reply".into(),
            schema: schema.clone(),
            strict: true,
        };
        let Err(err) = Grammar::compile(&format, &vocab) else {
            panic!("{schema} compiled");
        };
        let msg = err.to_string();
        assert!(matches!(err, ConstraintError::Grammar(_)), "{msg}");
        assert!(msg.contains("json_schema `reply`"), "{msg}");
        assert!(msg.contains(needle), "{schema}: {msg}");
    }
    let err = Grammar::lark("start: undefined_rule", &vocab)
        .unwrap_err()
        .to_string();
    assert!(err.contains("undefined_rule"), "{err}");
}

#[test]
fn response_format_reads_openai_requests() {
    let f = ResponseFormat::from_openai(&json!({"type": "json_object"})).unwrap();
    assert_eq!(f, ResponseFormat::JsonObject);
    let f = ResponseFormat::from_openai(&json!({
        "type": "json_schema",
        "json_schema": {"name": "w", "strict": true, "schema": {"type": "object"}}
    }))
    .unwrap();
    assert_eq!(
        f,
        ResponseFormat::JsonSchema {
            name: "w".into(),
            schema: json!({"type": "object"}),
            strict: true
        }
    );
    assert!(ResponseFormat::from_openai(&json!({"type": "text"}))
        .unwrap()
        .is_text());
    let err = ResponseFormat::from_openai(&json!({"type": "xml"})).unwrap_err();
    assert!(err.to_string().contains("xml"), "{err}");
    let err = ResponseFormat::from_openai(&json!({"type": "json_schema"})).unwrap_err();
    assert!(err.to_string().contains("json_schema"), "{err}");
    let (_, vocab) = bundled();
    assert!(ResponseFormat::Text.compile(&vocab).unwrap().is_none());
}

#[test]
fn tool_calls_start_with_the_control_token_then_a_json_array() {
    let (tokenizer, vocab) = bundled();
    let tools = vec![(
        "get_weather".to_string(),
        json!({"type": "object", "properties": {"city": {"enum": ["Paris"]}}, "required": ["city"]}),
    )];
    let grammar = tool_calls_grammar(&tools, &vocab).unwrap();
    let mut c = grammar.start();
    assert_eq!(
        allowed(&mut c, vocab.size()),
        vec![9],
        "only [TOOL_CALLS] first"
    );
    c.commit(9).unwrap();
    let text = r#"[{"name": "get_weather", "arguments": {"city": "Paris"}}]"#;
    for id in tokenizer.encode(text).unwrap() {
        c.commit(id).unwrap();
    }
    assert!(c.is_accepting());
    // No parameters schema: any object as arguments, and nothing else.
    let specs = [crate::chat::ToolSpec {
        name: "ping".into(),
        description: None,
        parameters: serde_json::Value::Null,
        strict: false,
    }];
    let grammar = tool_specs_grammar(&specs, &vocab).unwrap();
    let mut c = grammar.start();
    c.commit(9).unwrap();
    for id in tokenizer
        .encode(r#"[{"name": "ping", "arguments": {"n": [1]}}]"#)
        .unwrap()
    {
        c.commit(id).unwrap();
    }
    assert!(c.is_accepting());
    let mut c = grammar.start();
    c.commit(9).unwrap();
    let ids = tokenizer
        .encode(r#"[{"name": "ping", "arguments": 1"#)
        .unwrap();
    let last = ids.len() - 1;
    for &id in &ids[..last] {
        c.commit(id).unwrap();
    }
    assert!(c.commit(ids[last]).is_err(), "arguments must be an object");
    let err = tool_calls_grammar(&[], &vocab).unwrap_err().to_string();
    assert!(err.contains("no tools"), "{err}");
    let bad = vec![("f".to_string(), json!({"type": "nonsense"}))];
    let err = tool_calls_grammar(&bad, &vocab).unwrap_err().to_string();
    assert!(
        err.contains("tool `f`") || err.contains("nonsense"),
        "{err}"
    );
}

/// An integer with no bounds takes at most 16 digits (|n| < 2^53), so a weak model cannot pad
/// one until max_tokens; an explicit bound stays the caller's.
#[test]
fn unbounded_integers_are_bounded() {
    let (tokenizer, vocab) = bundled();
    let grammar = Grammar::json_schema(&json!({"type": "integer"}), &vocab).unwrap();
    assert!(accepts(&grammar, &tokenizer, "9007199254740991"));
    assert!(accepts(&grammar, &tokenizer, "-9007199254740991"));
    assert!(!accepts(&grammar, &tokenizer, "9007199254740992"));
    assert!(!accepts(&grammar, &tokenizer, "12345678901234567890"));
    let big = Grammar::json_schema(&json!({"type": "integer", "maximum": 1e18}), &vocab).unwrap();
    assert!(accepts(&big, &tokenizer, "12345678901234567"));
}

/// `tool_choice: "auto"` with strict tools: text or `[TOOL_CALLS]` first; once the marker is
/// written, only calls that follow the schema; text may end at any point, calls only when whole.
#[test]
fn auto_tool_grammar_allows_text_or_schema_bound_calls() {
    let (tokenizer, vocab) = bundled();
    let specs = [crate::chat::ToolSpec {
        name: "get_weather".into(),
        description: None,
        parameters: json!({"type": "object", "properties": {"city": {"enum": ["Paris"]}}, "required": ["city"]}),
        strict: true,
    }];
    let grammar = super::tool_specs_or_text_grammar(&specs, &vocab).unwrap();
    let mut c = grammar.start();
    let first = allowed(&mut c, vocab.size());
    let hello = tokenizer.encode("Hello").unwrap()[0];
    assert!(first.contains(&9) && first.contains(&hello), "{first:?}");
    assert!(!first.contains(&3), "other control tokens stay banned");
    for id in tokenizer.encode("Hello there.").unwrap() {
        c.commit(id).unwrap();
    }
    assert!(c.is_accepting(), "text may end anywhere");
    assert!(c.commit(9).is_err(), "no tool call after text");

    let mut c = grammar.start();
    c.commit(9).unwrap();
    assert!(!c.is_accepting());
    let ok = tokenizer
        .encode(r#"[{"name": "get_weather", "arguments": {"city": "Paris"}}]"#)
        .unwrap();
    for &id in &ok {
        c.commit(id).unwrap();
    }
    assert!(c.is_accepting());
    let mut c = grammar.start();
    c.commit(9).unwrap();
    let bad = tokenizer
        .encode(r#"[{"name": "get_weather", "arguments": {"city": "Rome"#)
        .unwrap();
    let committed = bad.iter().take_while(|&&id| c.commit(id).is_ok()).count();
    assert!(committed < bad.len(), "Rome is not in the enum");

    // One call only: after the first call, the list must close.
    let rules = super::ToolCallRules {
        or_text: false,
        single_call: true,
    };
    let grammar = super::tool_specs_grammar_with(&specs, rules, &vocab).unwrap();
    let mut c = grammar.start();
    c.commit(9).unwrap();
    let one = r#"[{"name": "get_weather", "arguments": {"city": "Paris"}}"#;
    for id in tokenizer.encode(one).unwrap() {
        c.commit(id).unwrap();
    }
    let comma = tokenizer.encode(",").unwrap()[0];
    assert!(!c.allows(comma).unwrap(), "a second call is refused");
    c.commit(tokenizer.encode("]").unwrap()[0]).unwrap();
    assert!(c.is_accepting());
}

/// The same vocabulary as tekken.json and as its Hugging Face conversion (byte-level
/// tokenizer.json): every id has the same bytes, and the same ids are control tokens.
#[test]
fn tekken_and_its_tokenizer_json_give_the_same_bytes_per_id() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/tokenizer");
    let tekken = Tokenizer::from_file(&dir.join("tekken.json")).unwrap();
    let hf = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let a = tekken.token_pieces().unwrap();
    let b = hf.token_pieces().unwrap();
    assert_eq!(a.len(), 17000);
    assert_eq!(a.len(), b.len());
    let mut multibyte = 0;
    for (id, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "id {id}");
        multibyte += usize::from(std::str::from_utf8(&x.0).is_err());
    }
    // Pieces that are part of a character (not valid UTF-8 alone) exist and still match.
    assert!(multibyte > 10, "{multibyte}");
    let v = TokenVocabulary::new(&tekken).unwrap();
    assert_eq!(v.special_id("[TOOL_CALLS]"), Some(9));
    assert_eq!(v.eos_ids(), &[2]);
}

/// Feeds `text` token by token; false at the first token the grammar refuses.
fn accepts(grammar: &Grammar, tokenizer: &Tokenizer, text: &str) -> bool {
    let mut c = grammar.start();
    for id in tokenizer.encode(text).unwrap() {
        if c.commit(id).is_err() {
            return false;
        }
    }
    c.is_accepting()
}

/// Objects that name their properties get no others (the model cannot invent keys), unless
/// the schema says what others may be; parts of an `allOf` are not closed against each other.
#[test]
fn named_properties_close_an_object_except_where_that_would_reject_valid_keys() {
    let (tokenizer, vocab) = bundled();
    let g = |schema: serde_json::Value| Grammar::json_schema(&schema, &vocab).unwrap();
    let named = g(json!({"type": "object", "properties": {"a": {"type": "integer"}}}));
    assert!(accepts(&named, &tokenizer, r#"{"a": 1}"#));
    assert!(!accepts(&named, &tokenizer, r#"{"a": 1, "z": 2}"#));
    let open = g(
        json!({"type": "object", "properties": {"a": {"type": "integer"}},
        "additionalProperties": {"type": "integer"}}),
    );
    assert!(accepts(&open, &tokenizer, r#"{"a": 1, "z": 2}"#));
    let both = g(json!({"allOf": [
        {"properties": {"a": {"type": "integer"}}, "required": ["a"]},
        {"properties": {"b": {"type": "integer"}}, "required": ["b"]}
    ]}));
    assert!(accepts(&both, &tokenizer, r#"{"a": 1, "b": 2}"#));
    // Nested objects are closed too.
    let nested = g(
        json!({"type": "object", "properties": {"p": {"type": "object",
        "properties": {"x": {"type": "integer"}}}}}),
    );
    assert!(accepts(&nested, &tokenizer, r#"{"p": {"x": 1}}"#));
    assert!(!accepts(&nested, &tokenizer, r#"{"p": {"x": 1, "y": 2}}"#));
}
