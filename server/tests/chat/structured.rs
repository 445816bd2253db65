//! Schema-guaranteed JSON and tool calls through the API on the bundled model (whose domain is
//! arithmetic, so whatever it writes here comes from the grammar's masks): every reply parses
//! and validates at temperature 1 over many seeds; bad schemas are 400s before any generation;
//! tool calls round-trip through the conversation.

use serde_json::{json, Value};

use crate::common::*;

/// A small JSON-schema validator for what these schemas use: type, properties, required,
/// additionalProperties false, enum, items with minItems/maxItems, integer bounds, $ref to
/// $defs, anyOf.
fn validate(schema: &Value, value: &Value, root: &Value) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").ok_or(format!("ref {r}"))?;
        return validate(&root["$defs"][name], value, root);
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        return if options.iter().any(|o| validate(o, value, root).is_ok()) {
            Ok(())
        } else {
            Err(format!("{value} matches no anyOf option"))
        };
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            return Err(format!("{value} not in {options:?}"));
        }
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let obj = value
                .as_object()
                .ok_or(format!("{value} is not an object"))?;
            let props = schema["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for req in schema["required"].as_array().into_iter().flatten() {
                if !obj.contains_key(req.as_str().unwrap()) {
                    return Err(format!("{value} lacks {req}"));
                }
            }
            for (k, v) in obj {
                match props.get(k) {
                    Some(s) => validate(s, v, root)?,
                    None if schema["additionalProperties"] == json!(false) => {
                        return Err(format!("unexpected key {k}"))
                    }
                    None => {}
                }
            }
        }
        Some("array") => {
            let items = value.as_array().ok_or(format!("{value} is not an array"))?;
            if let Some(min) = schema["minItems"].as_u64() {
                if (items.len() as u64) < min {
                    return Err(format!("{value}: fewer than {min} items"));
                }
            }
            if let Some(max) = schema["maxItems"].as_u64() {
                if items.len() as u64 > max {
                    return Err(format!("{value}: more than {max} items"));
                }
            }
            for item in items {
                validate(&schema["items"], item, root)?;
            }
        }
        Some("integer") => {
            // JSON Schema: any number with no fractional part (`-0` included).
            let n = value
                .as_f64()
                .filter(|n| n.fract() == 0.0)
                .ok_or(format!("{value} is not an integer"))?;
            if schema["minimum"].as_f64().is_some_and(|m| n < m)
                || schema["maximum"].as_f64().is_some_and(|m| n > m)
            {
                return Err(format!("{n} out of bounds"));
            }
        }
        Some("string") => {
            value.as_str().ok_or(format!("{value} is not a string"))?;
        }
        Some("boolean") => {
            value.as_bool().ok_or(format!("{value} is not a boolean"))?;
        }
        _ => {}
    }
    Ok(())
}

fn schemas() -> Vec<Value> {
    vec![
        json!({"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 12},
            "address": {"type": "object", "properties": {
                "city": {"enum": ["Paris", "Lyon"]}, "zip": {"type": "integer", "minimum": 0, "maximum": 99999}},
                "required": ["city", "zip"], "additionalProperties": false}},
            "required": ["name", "address"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "scores": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9},
                       "minItems": 2, "maxItems": 4},
            "ok": {"type": "boolean"}},
            "required": ["scores", "ok"], "additionalProperties": false}),
        json!({"$defs": {"point": {"type": "object", "properties": {
                "x": {"type": "integer", "minimum": -9, "maximum": 9},
                "y": {"type": "integer", "minimum": -9, "maximum": 9}},
                "required": ["x", "y"], "additionalProperties": false}},
            "type": "object", "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
            "required": ["from", "to"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "value": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 99}, {"enum": ["none", "many"]}]}},
            "required": ["value"], "additionalProperties": false}),
    ]
}

#[test]
fn json_schemas_always_give_valid_json_at_temperature_1() {
    let server = start(config(4));
    for (s, schema) in schemas().iter().enumerate() {
        for seed in 0..6 {
            let body = json!({
                "model": CHAT,
                "messages": [{"role": "user", "content": "Tell me about cats."}],
                "temperature": 1.0,
                "seed": seed,
                "max_tokens": 200,
                "response_format": {"type": "json_schema",
                    "json_schema": {"name": format!("s{s}"), "strict": true, "schema": schema}},
            });
            let (status, r) = post_raw(&server, "/v1/chat/completions", &body.to_string());
            assert_eq!(status, 200, "{r}");
            let choice = &r["choices"][0];
            assert_eq!(
                choice["finish_reason"], "stop",
                "schema {s} seed {seed}: {r}"
            );
            let text = choice["message"]["content"].as_str().unwrap();
            let value: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("schema {s} seed {seed}: {text:?}: {e}"));
            validate(schema, &value, schema)
                .unwrap_or_else(|e| panic!("schema {s} seed {seed}: {text}: {e}"));
        }
    }
    // json_object: an object.
    let object = json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}],
                        "temperature": 0, "response_format": {"type": "json_object"}});
    let (status, r) = post_raw(&server, "/v1/chat/completions", &object.to_string());
    assert_eq!(status, 200, "{r}");
    let text = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        serde_json::from_str::<Value>(text).unwrap().is_object(),
        "{text}"
    );
    // A max_tokens cut says "length" (the JSON is unfinished, and the client can tell).
    let cut = json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}],
                     "temperature": 0, "max_tokens": 4,
                     "response_format": {"type": "json_schema",
                        "json_schema": {"name": "s", "schema": schemas()[0]}}});
    let (status, r) = post_raw(&server, "/v1/chat/completions", &cut.to_string());
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    assert!(r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .starts_with('{'));
}

#[test]
fn bad_schemas_are_400s_before_generation() {
    let server = start(config(1));
    let bad = [
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}),
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/nowhere"}}}),
        json!({"type": "json_schema"}),
        json!({"type": "xml"}),
    ];
    for format in bad {
        let body = json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}],
                          "response_format": format});
        let (status, e) = post_raw(&server, "/v1/chat/completions", &body.to_string());
        assert_eq!(status, 400, "{format}: {e}");
        assert_eq!(e["error"]["param"], "response_format", "{e}");
    }
    let (_, metrics) = (0, get_text(&server, "/metrics"));
    assert!(
        metrics.contains("kiln_requests_total{api=\"chat\"} 0"),
        "{metrics}"
    );
}

/// The bundled model with its Jinja template (which has no tools) taken away: the built-in
/// V7-Tekken format renders tools, calls and results as mistral-common does.
fn tool_model() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-tool-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(bundled_chat()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let config = dir.join("tokenizer_config.json");
    let mut t: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    t.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&config, t.to_string()).unwrap();
    dir
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Lyon"]},
                       "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                       "required": ["city", "days"]},
        "strict": true}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
        "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}}])
}

#[test]
fn tool_calls_round_trip() {
    let dir = tool_model();
    let mut config = config(2);
    config.models = kiln_server::ModelSet::Single(dir.clone());
    // The tools' JSON costs many tokens in this 512-token vocabulary: the model's whole context.
    config.llm.ctx_size = Some(1024);
    let server = start(config);
    let model = dir.file_name().unwrap().to_str().unwrap().to_string();
    let ask = |choice: Value, stream: bool, seed: u64| {
        json!({"model": model, "messages": [{"role": "user", "content": "Weather in Paris?"}],
               "tools": weather_tools(), "tool_choice": choice, "temperature": 1.0, "seed": seed,
               "max_tokens": 80, "stream": stream, "parallel_tool_calls": false})
        .to_string()
    };
    let mut first_call = None;
    for seed in 0..4 {
        let (status, r) = post_raw(
            &server,
            "/v1/chat/completions",
            &ask(json!("required"), false, seed),
        );
        assert_eq!(status, 200, "{r}");
        let choice = &r["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{r}");
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "parallel_tool_calls false: {r}");
        for call in calls {
            let id = call["id"].as_str().unwrap();
            assert!(
                id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric()),
                "{id}"
            );
            assert_eq!(call["type"], "function");
            let name = call["function"]["name"].as_str().unwrap();
            let args: Value =
                serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
            let tools = weather_tools();
            let spec = tools
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["function"]["name"] == name)
                .unwrap();
            let schema = &spec["function"]["parameters"];
            validate(schema, &args, schema).unwrap_or_else(|e| panic!("{name} {args}: {e}"));
        }
        first_call.get_or_insert(calls[0].clone());
    }
    // A named function: only it is called.
    let named = json!({"type": "function", "function": {"name": "get_time"}});
    let (status, r) = post_raw(&server, "/v1/chat/completions", &ask(named, false, 9));
    assert_eq!(status, 200, "{r}");
    for call in r["choices"][0]["message"]["tool_calls"].as_array().unwrap() {
        assert_eq!(call["function"]["name"], "get_time");
    }
    // Streamed: the calls arrive as a tool_calls delta and the stream ends with "tool_calls".
    let body = http()
        .post(format!("{}/v1/chat/completions", server.url()))
        .header("content-type", "application/json")
        .body(ask(json!("required"), true, 0))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(body.contains("\"tool_calls\":[{"), "{body}");
    assert!(body.contains("\"finish_reason\":\"tool_calls\""), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"));
    // The call and its result go back through the template; the model answers in text.
    let call = first_call.unwrap();
    let follow_up = json!({"model": model, "temperature": 0, "max_tokens": 24, "tools": weather_tools(),
        "tool_choice": "none",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"sky\": \"clear\"}"},
            {"role": "user", "content": "What is 2 plus 3?"}]});
    let (status, r) = post_raw(&server, "/v1/chat/completions", &follow_up.to_string());
    assert_eq!(status, 200, "{r}");
    assert!(r["choices"][0]["message"]["tool_calls"].is_null());
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 30);
    // A result answering no call is refused naming the message.
    let mut orphan = follow_up.clone();
    orphan["messages"][2]["tool_call_id"] = json!("AAAAAAAAA");
    let (status, e) = post_raw(&server, "/v1/chat/completions", &orphan.to_string());
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AAAAAAAAA"),
        "{e}"
    );
    // Tools on a model whose template cannot render them: a 400 that says so.
    let plain = start(crate::common::config(1));
    let with_tools = json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}],
                            "tools": weather_tools()});
    let (status, e) = post_raw(&plain, "/v1/chat/completions", &with_tools.to_string());
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["param"], "tools", "{e}");
    // ... unless the server is told to use the built-in format (llama-server's --chat-template).
    let mut v7 = crate::common::config(1);
    v7.llm.chat_template = Some("mistral-v7".into());
    v7.llm.ctx_size = Some(512);
    let v7 = start(v7);
    let (status, r) = post_raw(&v7, "/v1/chat/completions", &with_tools.to_string());
    assert_eq!(status, 200, "{r}");
    let _ = std::fs::remove_dir_all(dir);
}
