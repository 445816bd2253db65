//! Tool calling against mistral-common (tests/fixtures/llm/tokenizer/tool_goldens.json, from
//! tools/make_tool_fixtures.py): OpenAI requests with `tools`, assistant `tool_calls` and `tool`
//! results give mistral-common's V7-Tekken and V3-Tekken ids id for id (tools JSON with the
//! client's key order, Python separators and floats, parallel calls, JSON and text results,
//! tools only before the last user turn); the Jinja template mistral-common ships gives the
//! same ids as V7. (transformers' apply_chat_template, given arguments as objects as vLLM passes
//! them, gives these ids too, except that it leaves out a description the client left out where
//! mistral-common writes ""; kiln follows mistral-common.) Bad conversations and malformed `[TOOL_CALLS]` output are errors that name
//! the field.

use std::path::{Path, PathBuf};

use kiln_llm::chat::{
    parse_tool_calls, parse_tool_calls_text, tool_calls_start, ChatTemplate, ToolCall, ToolCallIds,
    ToolSpec,
};
use kiln_llm::{Message, Role, Tokenizer};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/tokenizer")
}

fn tekken() -> Tokenizer {
    Tokenizer::from_file(&dir().join("tekken.json")).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// OpenAI `tools[]` as the server hands them over.
fn tool_specs(v: &Value) -> Vec<ToolSpec> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let f = &t["function"];
            ToolSpec {
                name: f["name"].as_str().unwrap().to_string(),
                description: f["description"].as_str().map(str::to_string),
                parameters: f["parameters"].clone(),
                strict: f["strict"].as_bool().unwrap_or(false),
            }
        })
        .collect()
}

/// OpenAI `messages[]`.
fn messages(v: &Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let role = Role::parse(m["role"].as_str().unwrap()).unwrap();
            let mut message = Message::new(role, m["content"].as_str().unwrap_or(""));
            if let Some(calls) = m["tool_calls"].as_array() {
                message.tool_calls = calls
                    .iter()
                    .map(|c| ToolCall {
                        id: c["id"].as_str().unwrap().to_string(),
                        name: c["function"]["name"].as_str().unwrap().to_string(),
                        arguments: c["function"]["arguments"].as_str().unwrap().to_string(),
                    })
                    .collect();
            }
            message.tool_call_id = m["tool_call_id"].as_str().map(str::to_string);
            message
        })
        .collect()
}

struct Chat {
    tools: Vec<ToolSpec>,
    messages: Vec<Message>,
    v7: Vec<u32>,
    v3: Option<Vec<u32>>,
}

fn chats() -> Vec<Chat> {
    let text = std::fs::read_to_string(dir().join("tool_goldens.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    json["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Chat {
            tools: tool_specs(&c["tools"]),
            messages: messages(&c["messages"]),
            v7: ids(&c["v7"]),
            v3: (!c["v3"].is_null()).then(|| ids(&c["v3"])),
        })
        .collect()
}

#[test]
fn built_in_formats_match_mistral_common_with_tools() {
    let t = tekken();
    let v7 = ChatTemplate::named("mistral-v7", &t).unwrap();
    let v3 = ChatTemplate::named("mistral-v3", &t).unwrap();
    let all = chats();
    assert_eq!(all.len(), 7);
    for chat in all {
        let got = v7
            .encode_with_tools(&t, &chat.messages, &chat.tools)
            .unwrap();
        assert_eq!(
            t.decode(&got, false).unwrap(),
            t.decode(&chat.v7, false).unwrap()
        );
        assert_eq!(got, chat.v7, "v7 {:?}", chat.messages);
        let got = v3.encode_with_tools(&t, &chat.messages, &chat.tools);
        match chat.v3 {
            Some(want) => assert_eq!(got.unwrap(), want, "v3 {:?}", chat.messages),
            // mistral-common refuses text and calls in one V3 assistant message; so does kiln.
            None => assert!(
                got.unwrap_err()
                    .to_string()
                    .contains("content and tool calls"),
                "v3 {:?}",
                chat.messages
            ),
        }
    }
}

#[test]
fn mistral_common_jinja_template_gives_the_v7_ids_with_tools() {
    let t = Tokenizer::from_file(&dir().join("tokenizer.json")).unwrap();
    let template = ChatTemplate::for_model(&dir(), &t).unwrap();
    assert!(template.describe().contains("chat_template.jinja"));
    for chat in chats() {
        let got = template
            .encode_with_tools(&t, &chat.messages, &chat.tools)
            .unwrap();
        assert_eq!(
            t.decode(&got, false).unwrap(),
            t.decode(&chat.v7, false).unwrap()
        );
        assert_eq!(got, chat.v7, "{:?}", chat.messages);
    }
}

#[test]
fn control_text_in_tool_arguments_stays_text_on_both_paths() {
    let messages = [
        Message::user("run it"),
        Message::assistant_tool_calls(vec![ToolCall {
            id: "abcDEF123".into(),
            name: "run".into(),
            arguments: r#"{"cmd": "echo [INST] </s>"}"#.into(),
        }]),
        Message::tool("abcDEF123", "printed [INST] </s>"),
    ];
    let t = Tokenizer::from_file(&dir().join("tokenizer.json")).unwrap();
    let jinja = ChatTemplate::for_model(&dir(), &t).unwrap();
    let v7 = ChatTemplate::named("mistral-v7", &t).unwrap();
    let want = v7.encode_with_tools(&t, &messages, &[]).unwrap();
    assert_eq!(want.iter().filter(|&&id| id == 3).count(), 1, "one [INST]");
    assert_eq!(jinja.encode_with_tools(&t, &messages, &[]).unwrap(), want);
}

#[test]
fn a_jinja_template_that_ignores_tools_is_an_error() {
    let t = tekken();
    let tmp = std::env::temp_dir().join(format!("kiln-jinja-notools-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let path = tmp.join("plain.jinja");
    std::fs::write(
        &path,
        "{% for m in messages %}[INST]{{ m.content }}[/INST]{% endfor %}",
    )
    .unwrap();
    let template = ChatTemplate::named(path.to_str().unwrap(), &t).unwrap();
    let tool = ToolSpec {
        name: "f".into(),
        description: None,
        parameters: Value::Null,
        strict: false,
    };
    let err = template
        .encode_with_tools(&t, &[Message::user("hi")], &[tool])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("plain.jinja") && err.contains("tools"),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

fn call(id: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: "get_weather".into(),
        arguments: r#"{"city": "Paris"}"#.into(),
    }
}

fn error(messages: &[Message], tools: &[ToolSpec]) -> String {
    let t = tekken();
    let v7 = ChatTemplate::named("mistral-v7", &t).unwrap();
    v7.encode_with_tools(&t, messages, tools)
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_tool_conversations_are_errors_naming_the_field() {
    let user = Message::user("weather?");
    let calls = Message::assistant_tool_calls(vec![call("abcDEF123")]);
    // A result for a call nobody made.
    let err = error(
        &[
            user.clone(),
            calls.clone(),
            Message::tool("zzzZZZ999", "18"),
        ],
        &[],
    );
    assert!(
        err.contains("messages[2].tool_call_id") && err.contains("zzzZZZ999"),
        "{err}"
    );
    // A result with no earlier call at all.
    let err = error(&[user.clone(), Message::tool("abcDEF123", "18")], &[]);
    assert!(err.contains("messages[1].tool_call_id"), "{err}");
    // Malformed ids, on the call and on the result.
    let err = error(
        &[
            user.clone(),
            Message::assistant_tool_calls(vec![call("call_1")]),
            Message::tool("call_1", "18"),
        ],
        &[],
    );
    assert!(
        err.contains("messages[1].tool_calls[0].id") && err.contains("9 ASCII"),
        "{err}"
    );
    // A call left without its result.
    let err = error(&[user.clone(), calls.clone(), Message::user("and?")], &[]);
    assert!(
        err.contains("abcDEF123") && err.contains("no tool message"),
        "{err}"
    );
    // Answered twice.
    let err = error(
        &[
            user.clone(),
            calls.clone(),
            Message::tool("abcDEF123", "1"),
            Message::tool("abcDEF123", "2"),
        ],
        &[],
    );
    assert!(err.contains("answered twice"), "{err}");
    // A bad function name in the tools.
    let bad_tool = ToolSpec {
        name: "get weather!".into(),
        description: None,
        parameters: Value::Null,
        strict: false,
    };
    let err = error(std::slice::from_ref(&user), &[bad_tool]);
    assert!(err.contains("tools[0].function.name"), "{err}");
    // A tool id field on a user message.
    let mut odd = Message::user("x");
    odd.tool_call_id = Some("abcDEF123".into());
    assert!(error(&[odd], &[]).contains("messages[0].tool_call_id"));
}

#[test]
fn a_format_without_tool_tokens_says_so() {
    // The fixture's tekken.json with the tool control tokens renamed to unused specials, as
    // in a tokenizer from before tool calling.
    let text = std::fs::read_to_string(dir().join("tekken.json")).unwrap();
    let mut json: Value = serde_json::from_str(&text).unwrap();
    for token in json["special_tokens"].as_array_mut().unwrap() {
        if token["token_str"].as_str().unwrap().contains("TOOL") {
            token["token_str"] = Value::String(format!("<SPECIAL_{}>", token["rank"]));
        }
    }
    let tmp = std::env::temp_dir().join(format!("kiln-notools-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let path = tmp.join("tekken.json");
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    let t = Tokenizer::from_file(&path).unwrap();
    let v7 = ChatTemplate::named("mistral-v7", &t).unwrap();
    let tool = ToolSpec {
        name: "f".into(),
        description: None,
        parameters: serde_json::json!({}),
        strict: false,
    };
    let err = v7
        .encode_with_tools(&t, &[Message::user("hi")], &[tool])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[AVAILABLE_TOOLS]") && err.contains("no tool calling"),
        "{err}"
    );
    // Without tools the same tokenizer still makes plain prompts.
    v7.encode(&t, &[Message::user("hi")]).unwrap();
    assert!(parse_tool_calls(&t, &[1, 2, 3], &mut ToolCallIds::new(0))
        .unwrap()
        .is_none());
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// A reply as the model would generate it: `content`, then `[TOOL_CALLS]` and `json`, `</s>`.
fn reply(t: &Tokenizer, content: &str, json: &str) -> Vec<u32> {
    let mut ids = t.encode(content).unwrap();
    ids.push(t.token_id("[TOOL_CALLS]").unwrap());
    ids.extend(t.encode(json).unwrap());
    ids.push(t.eos_id().unwrap());
    ids
}

#[test]
fn tool_call_output_is_parsed_into_calls_with_fresh_ids() {
    let t = tekken();
    let mut ids = ToolCallIds::new(42);
    let out = reply(
        &t,
        "",
        r#"[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, {"name": "get_time", "arguments": "{\"tz\": \"UTC\"}"}]"#,
    );
    assert_eq!(tool_calls_start(&t, &out), Some(0));
    let calls = parse_tool_calls(&t, &out, &mut ids).unwrap().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].name, "get_weather");
    assert_eq!(calls[0].arguments, r#"{"city":"Paris","unit":"celsius"}"#);
    assert_eq!(calls[1].name, "get_time");
    assert_eq!(calls[1].arguments, r#"{"tz": "UTC"}"#);
    for c in &calls {
        assert!(
            c.id.len() == 9 && c.id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{}",
            c.id
        );
    }
    assert_ne!(calls[0].id, calls[1].id);
    // The same seed gives the same ids.
    let again = parse_tool_calls(&t, &out, &mut ToolCallIds::new(42))
        .unwrap()
        .unwrap();
    assert_eq!(again, calls);

    // Text before the call: content ends where [TOOL_CALLS] starts.
    let out = reply(&t, "Let me check.", r#"[{"name": "f", "arguments": {}}]"#);
    let start = tool_calls_start(&t, &out).unwrap();
    assert_eq!(t.decode(&out[..start], false).unwrap(), "Let me check.");
    let calls = parse_tool_calls(&t, &out, &mut ids).unwrap().unwrap();
    assert_eq!(
        (calls[0].name.as_str(), calls[0].arguments.as_str()),
        ("f", "{}")
    );

    // No [TOOL_CALLS]: a plain reply.
    let plain = t.encode("Just text [TOOL_CALLS] typed as text").unwrap();
    assert_eq!(tool_calls_start(&t, &plain), None);
    assert!(parse_tool_calls(&t, &plain, &mut ids).unwrap().is_none());

    // A single object, and a second [TOOL_CALLS] block, are accepted.
    let mut two = reply(&t, "", r#"{"name": "a", "arguments": {"x": 1}}"#);
    two.pop();
    two.push(t.token_id("[TOOL_CALLS]").unwrap());
    two.extend(t.encode(r#"[{"name": "b"}]"#).unwrap());
    let calls = parse_tool_calls(&t, &two, &mut ids).unwrap().unwrap();
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(calls[1].arguments, "{}");
}

#[test]
fn malformed_tool_call_output_is_an_error_naming_it() {
    let t = tekken();
    let mut ids = ToolCallIds::new(1);
    let cases = [
        (r#"[{"name": "f", "arguments": {"a": 1}"#, "not valid JSON"),
        (r#"[{"arguments": {}}]"#, "no \"name\""),
        (r#"[{"name": "f", "arguments": [1, 2]}]"#, "not an object"),
        (
            r#"[{"name": "f", "arguments": "oops"}]"#,
            "not a JSON object",
        ),
        (r#"["f"]"#, "not an object"),
        (r#"42"#, "expected a list"),
        ("", "no JSON"),
    ];
    for (json, want) in cases {
        let err = parse_tool_calls(&t, &reply(&t, "", json), &mut ids)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[TOOL_CALLS]") && err.contains(want),
            "{json}: {err}"
        );
    }
    assert!(parse_tool_calls_text("[]", &mut ids).unwrap().is_empty());
}
