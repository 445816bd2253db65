//! Constrained generation end to end: a random-weight model (the bundled chat model's shapes,
//! vocabulary 512) with the bundled byte-level tokenizer, sampled at temperature 1 with several
//! seeds, must reply with JSON that parses and validates against the schema, and finish by EOS
//! well within 200 tokens for small objects. CPU backend.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_kernels::testing::with_gpu;
use kiln_llm::chat::parse_tool_calls;
use kiln_llm::constrain::{tool_calls_grammar, Grammar, ResponseFormat, TokenVocabulary};
use kiln_llm::sampling::{FinishReason, SamplingParams};
use kiln_llm::{
    generate, Engine, EngineEvent, EngineRequest, Flow, GenerateOptions, Generation, Mistral,
    MistralConfig, Session, Tokenizer, ToolCallIds,
};
use kiln_nn::weights::WeightType;
use kiln_runtime::{DType, Device};
use serde_json::{json, Value};

fn bundled_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bundled")
}

struct Setup {
    model: Mistral,
    tokenizer: Tokenizer,
    vocab: Arc<TokenVocabulary>,
}

fn setup() -> Setup {
    setup_on(&Device::Cpu)
}

fn setup_on(device: &Device) -> Setup {
    let dir = bundled_dir();
    let config = MistralConfig::from_file(&dir.join("config.json")).unwrap();
    let model = Mistral::random(config, device, WeightType::F32, 11).unwrap();
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let vocab = tokenizer.constraint_vocabulary().unwrap();
    Setup {
        model,
        tokenizer,
        vocab,
    }
}

fn run(s: &Setup, grammar: &Grammar, seed: u64, max_tokens: usize) -> Generation {
    run_with(s, grammar, seed, max_tokens, SamplingParams::default())
}

fn run_with(
    s: &Setup,
    grammar: &Grammar,
    seed: u64,
    max_tokens: usize,
    base: SamplingParams,
) -> Generation {
    let mut session = Session::new(&s.model, 512, DType::F32).unwrap();
    let mut prompt = vec![1];
    prompt.extend(s.tokenizer.encode("Reply in JSON.").unwrap());
    // Temperature 1 over the whole vocabulary unless `base` is greedy.
    let temperature = if base.temperature == 0.0 { 0.0 } else { 1.0 };
    let options = GenerateOptions {
        sampling: SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(seed),
            ..base
        },
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        constraint: Some(grammar.clone()),
    };
    let mut streamed = String::new();
    let g = generate(
        &s.model,
        &s.tokenizer,
        &mut session,
        &prompt,
        &options,
        |t| {
            streamed.push_str(t);
            Flow::Continue
        },
    )
    .unwrap();
    assert_eq!(streamed, g.text);
    g
}

/// Checks `v` against the parts of JSON Schema these tests use; the error names the path.
fn validate(v: &Value, schema: &Value, root: &Value, path: &str) -> Result<(), String> {
    let err = |m: &str| Err(format!("{path}: {m} ({v})"));
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix("#/")
            .unwrap()
            .split('/')
            .fold(root, |node, key| &node[key]);
        assert!(!target.is_null(), "test schema: {r}");
        return validate(v, target, root, path);
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        if !options.iter().any(|o| validate(v, o, root, path).is_ok()) {
            return err("matches no anyOf option");
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !values.contains(v) {
            return err("not in the enum");
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            return err("not the const");
        }
    }
    match schema.get("type").and_then(Value::as_str) {
        None => {}
        Some("object") => {
            let Some(obj) = v.as_object() else {
                return err("not an object");
            };
            let props = schema.get("properties").and_then(Value::as_object);
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !obj.contains_key(req.as_str().unwrap()) {
                    return err(&format!("lacks required {req}"));
                }
            }
            for (k, val) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(sub) => validate(val, sub, root, &format!("{path}.{k}"))?,
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return err(&format!("has extra key {k}"))
                    }
                    None => {}
                }
            }
        }
        Some("array") => {
            let Some(items) = v.as_array() else {
                return err("not an array");
            };
            let n = items.len() as u64;
            if schema
                .get("minItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n < m)
            {
                return err("too few items");
            }
            if schema
                .get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
            {
                return err("too many items");
            }
            if let Some(item) = schema.get("items") {
                for (i, x) in items.iter().enumerate() {
                    validate(x, item, root, &format!("{path}[{i}]"))?;
                }
            }
        }
        Some("string") => {
            let Some(text) = v.as_str() else {
                return err("not a string");
            };
            let n = text.chars().count() as u64;
            if schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
            {
                return err("too long");
            }
            if schema
                .get("minLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n < m)
            {
                return err("too short");
            }
            // The one pattern used below: five digits.
            if schema.get("pattern").is_some()
                && !(text.len() == 5 && text.bytes().all(|b| b.is_ascii_digit()))
            {
                return err("does not match ^[0-9]{5}$");
            }
        }
        Some("integer") => {
            // `-0` and `3.0` are integers to JSON Schema (serde reads them as floats).
            let Some(n) = v.as_f64().filter(|n| n.fract() == 0.0) else {
                return err("not an integer");
            };
            if schema
                .get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n < m)
            {
                return err("below minimum");
            }
            if schema
                .get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n > m)
            {
                return err("above maximum");
            }
        }
        Some("boolean") if !v.is_boolean() => return err("not a boolean"),
        Some("null") if !v.is_null() => return err("not null"),
        Some(_) => {}
    }
    Ok(())
}

/// Outside strings, the only whitespace is one space after `,` and `:`.
fn compact(text: &str) -> bool {
    let (mut in_string, mut escaped, mut prev) = (false, false, ' ');
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c.is_whitespace() && !(c == ' ' && (prev == ',' || prev == ':')) {
            return false;
        }
        prev = c;
    }
    true
}

/// JSON as Python's `json.dumps` writes it (", " and ": "), keys in their order.
fn dumps(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(dumps).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), dumps(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        other => other.to_string(),
    }
}

fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "nested",
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 8},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "address": {
                        "type": "object",
                        "properties": {
                            "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                            "city": {"enum": ["Paris", "Rome", "Oslo"]}
                        },
                        "required": ["zip", "city"]
                    }
                },
                "required": ["name", "age", "address"]
            }),
        ),
        (
            "arrays",
            json!({
                "type": "object",
                "properties": {
                    "tags": {
                        "type": "array",
                        "items": {"enum": ["red", "green", "blue"]},
                        "minItems": 1,
                        "maxItems": 3
                    },
                    "digits": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0, "maximum": 9},
                        "minItems": 2,
                        "maxItems": 4
                    }
                },
                "required": ["tags", "digits"]
            }),
        ),
        (
            "refs and anyOf",
            json!({
                "$defs": {
                    "point": {
                        "type": "object",
                        "properties": {
                            "x": {"type": "integer", "minimum": -9, "maximum": 9},
                            "y": {"type": "integer", "minimum": -9, "maximum": 9}
                        },
                        "required": ["x", "y"]
                    }
                },
                "type": "object",
                "properties": {
                    "from": {"$ref": "#/$defs/point"},
                    "to": {"$ref": "#/$defs/point"},
                    "label": {"anyOf": [{"type": "null"}, {"type": "boolean"}, {"enum": ["a", "b"]}]}
                },
                "required": ["from", "to", "label"]
            }),
        ),
        (
            "optional fields",
            json!({
                "type": "object",
                "properties": {
                    "ok": {"type": "boolean"},
                    "n": {"type": "integer", "minimum": 1, "maximum": 5},
                    "kind": {"const": "k"}
                },
                "required": ["ok"]
            }),
        ),
    ]
}

#[test]
fn replies_parse_validate_and_finish_for_every_seed() {
    assert!(compact(r#"{"a": " x  ", "b": [1, 2]}"#));
    assert!(!compact(r#"{"a":  1}"#) && !compact("{\"a\": 1}\n"));
    let s = setup();
    replies_validate(&s, 0..6, SamplingParams::default());
    replies_validate(&s, 0..1, SamplingParams::greedy());
}

/// On the GPU, greedy decoding (which without a constraint picks the id on the device and never
/// reads the logits) must see the mask too, as must sampling.
#[test]
fn replies_validate_on_the_gpu_greedy_and_sampled() {
    with_gpu(|gpu| {
        let s = setup_on(gpu);
        replies_validate(&s, 0..1, SamplingParams::greedy());
        replies_validate(&s, 0..3, SamplingParams::default());
    });
}

fn replies_validate(s: &Setup, seeds: std::ops::Range<u64>, base: SamplingParams) {
    for (what, schema) in schemas() {
        let format = ResponseFormat::JsonSchema {
            name: what.into(),
            schema: schema.clone(),
            strict: true,
        };
        let grammar = Grammar::compile(&format, &s.vocab).unwrap();
        for seed in seeds.clone() {
            let g = run_with(s, &grammar, seed, 200, base.clone());
            assert_eq!(
                g.finish,
                FinishReason::Stop,
                "{what} seed {seed}: {:?}",
                g.text
            );
            assert!(g.tokens.len() < 200, "{what} seed {seed}");
            let v: Value = serde_json::from_str(&g.text)
                .unwrap_or_else(|e| panic!("{what} seed {seed}: {e}: {:?}", g.text));
            validate(&v, &schema, &schema, "$")
                .unwrap_or_else(|e| panic!("{what} seed {seed}: {e}; reply {}", g.text));
            assert!(
                compact(&g.text),
                "whitespace beyond the separators: {}",
                g.text
            );
            eprintln!("{what} seed {seed}: {} tokens: {}", g.tokens.len(), g.text);
        }
    }
}

/// Any object allows keys and strings of any length, which a uniform sampler over ~500 tokens
/// closes only about once in a hundred tokens; a bias towards `"` and `}` (which changes what
/// the model prefers, never what the grammar allows) makes the replies short.
#[test]
fn json_object_replies_are_objects() {
    let s = setup();
    let grammar = Grammar::compile(&ResponseFormat::JsonObject, &s.vocab).unwrap();
    let mut bias = std::collections::BTreeMap::new();
    for text in ["\"", "}"] {
        bias.insert(s.tokenizer.encode(text).unwrap()[0], 6.0);
    }
    let base = SamplingParams {
        logit_bias: bias,
        ..SamplingParams::default()
    };
    for seed in 0..6 {
        let g = run_with(&s, &grammar, seed, 400, base.clone());
        assert_eq!(g.finish, FinishReason::Stop, "seed {seed}: {:?}", g.text);
        let v: Value = serde_json::from_str(&g.text)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}: {:?}", g.text));
        assert!(v.is_object(), "seed {seed}: {v}");
    }
}

#[test]
fn a_reply_cut_by_max_tokens_finishes_with_length() {
    let s = setup();
    let schema = json!({
        "type": "array",
        "items": {"type": "integer", "minimum": 100, "maximum": 999},
        "minItems": 40
    });
    let grammar = Grammar::json_schema(&schema, &s.vocab).unwrap();
    let g = run(&s, &grammar, 1, 12);
    assert_eq!(g.finish, FinishReason::Length);
    assert_eq!(g.tokens.len(), 12);
    assert!(g.text.starts_with('['), "{:?}", g.text);
    assert!(serde_json::from_str::<Value>(&g.text).is_err());
}

#[test]
fn tool_calls_follow_mistral_format_and_each_tools_schema() {
    let s = setup();
    let weather = json!({
        "type": "object",
        "properties": {"city": {"enum": ["Paris", "Rome"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "days"]
    });
    let time = json!({
        "type": "object",
        "properties": {"zone": {"type": "string", "maxLength": 6}},
        "required": ["zone"]
    });
    let tools = vec![
        ("get_weather".to_string(), weather.clone()),
        ("get_time".to_string(), time.clone()),
    ];
    let grammar = tool_calls_grammar(&tools, &s.vocab).unwrap();
    let tool_calls = s.vocab.special_id("[TOOL_CALLS]").unwrap();
    for seed in 0..4 {
        let g = run(&s, &grammar, seed, 200);
        assert_eq!(g.finish, FinishReason::Stop, "seed {seed}: {:?}", g.text);
        assert_eq!(g.tokens[0], tool_calls, "seed {seed}");
        let full = s.tokenizer.decode(&g.tokens, false).unwrap();
        let rest = full.strip_prefix("[TOOL_CALLS]").unwrap();
        let calls: Value = serde_json::from_str(rest).unwrap_or_else(|e| panic!("{e}: {full}"));
        // The exact layout Mistral models write: json.dumps separators, keys in this order.
        assert_eq!(dumps(&calls), rest);
        eprintln!("seed {seed}: {full}");
        // What the server's parser reads back: the same calls.
        let parsed = parse_tool_calls(&s.tokenizer, &g.tokens, &mut ToolCallIds::new(1))
            .unwrap()
            .unwrap();
        assert_eq!(parsed.len(), calls.as_array().unwrap().len());
        for (p, call) in parsed.iter().zip(calls.as_array().unwrap()) {
            assert_eq!(p.name, call["name"].as_str().unwrap());
            let args: Value = serde_json::from_str(&p.arguments).unwrap();
            assert_eq!(args, call["arguments"]);
        }
        for call in calls.as_array().unwrap() {
            let obj = call.as_object().unwrap();
            assert_eq!(
                obj.keys().collect::<Vec<_>>(),
                ["name", "arguments"],
                "{rest}"
            );
            let schema = match call["name"].as_str().unwrap() {
                "get_weather" => &weather,
                "get_time" => &time,
                other => panic!("unknown tool {other}"),
            };
            validate(&call["arguments"], schema, schema, "arguments").unwrap();
        }
    }
}

/// Constrained replies through the batched engine (two slots, four requests, each its own
/// schema state; greedy ones included, which unconstrained would take the device's argmax)
/// are the same tokens as `generate` gives one at a time, and validate.
#[test]
fn engine_batches_constrained_replies_like_generate() {
    let s = setup();
    let all = schemas();
    let mut jobs = Vec::new();
    for (i, (what, schema)) in all.iter().enumerate() {
        let grammar = Grammar::json_schema(schema, &s.vocab).unwrap();
        let sampling = if i % 2 == 0 {
            SamplingParams::greedy()
        } else {
            SamplingParams {
                temperature: 1.0,
                seed: Some(i as u64),
                ..SamplingParams::default()
            }
        };
        let options = GenerateOptions {
            sampling,
            max_tokens: Some(200),
            stop: Vec::new(),
            constraint: Some(grammar),
        };
        jobs.push((*what, schema.clone(), options));
    }
    let mut prompt = vec![1];
    prompt.extend(s.tokenizer.encode("Reply in JSON.").unwrap());
    let done: Arc<Mutex<Vec<Option<Generation>>>> = Arc::new(Mutex::new(vec![None; jobs.len()]));
    let mut engine = Engine::new(&s.model, 2, 256, DType::F32).unwrap();
    let mut waiting: Vec<usize> = (0..jobs.len()).rev().collect();
    let mut steps = 0;
    while !waiting.is_empty() || engine.active() > 0 {
        while engine.free_slots() > 0 {
            let Some(i) = waiting.pop() else { break };
            let done = done.clone();
            let sink: kiln_llm::Sink = Box::new(move |event| {
                match event {
                    EngineEvent::Done(g) => done.lock().unwrap()[i] = Some(g),
                    EngineEvent::Failed(e) => panic!("reply {i} failed: {e}"),
                    _ => {}
                }
                Flow::Continue
            });
            let request = EngineRequest {
                prompt: prompt.clone(),
                images: Vec::new(),
                options: jobs[i].2.clone(),
            };
            engine.start(&s.model, &s.tokenizer, request, sink).unwrap();
        }
        engine.step(&s.model, &s.tokenizer).unwrap();
        steps += 1;
        assert!(steps < 1000, "the engine never finished");
    }
    for (i, (what, schema, options)) in jobs.iter().enumerate() {
        let batched = done.lock().unwrap()[i].clone().unwrap();
        let mut session = Session::new(&s.model, 256, DType::F32).unwrap();
        let alone = generate(
            &s.model,
            &s.tokenizer,
            &mut session,
            &prompt,
            options,
            |_| Flow::Continue,
        )
        .unwrap();
        assert_eq!(batched.tokens, alone.tokens, "{what}");
        assert_eq!(
            batched.finish,
            FinishReason::Stop,
            "{what}: {}",
            batched.text
        );
        let v: Value = serde_json::from_str(&batched.text).unwrap();
        validate(&v, schema, schema, "$").unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}
