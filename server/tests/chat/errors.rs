//! Bad requests get a 400 in OpenAI's error shape naming the field, before anything is queued,
//! and the server keeps serving.

use serde_json::{json, Value};

use crate::common::*;

fn chat(body: Value) -> String {
    body.to_string()
}

#[test]
fn bad_bodies_are_400s_naming_the_field() {
    let server = start(config(1));
    let user = json!([{"role": "user", "content": "What is 7 plus 5?"}]);
    let long = "seven plus five ".repeat(100);
    let cases: Vec<(String, &str, &str)> = vec![
        ("{\"messages\": [".into(), "body", "JSON"),
        ("[1, 2]".into(), "body", "object"),
        (
            chat(json!({"messages": user, "temperature": "hot"})),
            "temperature",
            "temperature",
        ),
        (
            chat(json!({"messages": user, "temperature": 3})),
            "temperature",
            "0 to 2",
        ),
        (
            chat(json!({"messages": user, "top_p": 1.5})),
            "top_p",
            "top_p",
        ),
        (chat(json!({"messages": user, "n": 0})), "n", "n 0"),
        (chat(json!({"messages": user, "seed": -4})), "seed", "seed"),
        (
            chat(json!({"messages": user, "logit_bias": {"x": 1}})),
            "logit_bias",
            "token id",
        ),
        (
            chat(json!({"messages": user, "logit_bias": {"9999": 1}})),
            "logit_bias",
            "9999",
        ),
        (
            chat(json!({"messages": user, "top_logprobs": 2})),
            "top_logprobs",
            "logprobs",
        ),
        (
            chat(json!({"messages": user, "max_tokens": 0})),
            "max_tokens",
            "at least 1",
        ),
        (
            chat(json!({"messages": user, "max_tokens": 1000})),
            "max_tokens",
            "256",
        ),
        (chat(json!({"messages": user, "stop": ""})), "stop", "stop"),
        (
            chat(json!({"messages": user, "frobnicate": true})),
            "frobnicate",
            "not supported",
        ),
        (
            chat(json!({"messages": user, "model": "nope"})),
            "model",
            "nope",
        ),
        (
            chat(json!({"messages": user, "model": "bundled"})),
            "model",
            "bundled",
        ),
        (chat(json!({"messages": []})), "messages", "empty"),
        (chat(json!({"model": CHAT})), "messages", "required"),
        (
            chat(json!({"messages": [{"role": "wizard", "content": "hi"}]})),
            "messages[0].role",
            "wizard",
        ),
        (
            chat(json!({"messages": [{"content": "hi"}]})),
            "messages[0].role",
            "role",
        ),
        (
            chat(json!({"messages": [{"role": "user", "content": 5}]})),
            "messages[0].content",
            "string",
        ),
        (
            chat(json!({"messages": [{"role": "user", "content": [{"type": "audio"}]}]})),
            "messages[0].content[0]",
            "audio",
        ),
        (
            chat(json!({"messages": [{"role": "user", "content": long}]})),
            "messages",
            "256 tokens",
        ),
    ];
    for (body, param, says) in cases {
        let (status, e) = post_raw(&server, "/v1/chat/completions", &body);
        assert_eq!(status, 400, "{body}: {e}");
        let error = &e["error"];
        assert_eq!(error["param"], param, "{body}: {e}");
        assert_eq!(error["type"], "invalid_request_error", "{body}: {e}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    // A context overflow says so in OpenAI's code, with the numbers.
    let (_, e) = post_raw(
        &server,
        "/v1/chat/completions",
        &chat(json!({"messages": [{"role": "user", "content": long}]})),
    );
    assert_eq!(e["error"]["code"], "context_length_exceeded");
    // More choices than slots: refused by the worker, still a 400 before any stream starts.
    let (status, e) = post_raw(
        &server,
        "/v1/chat/completions",
        &chat(json!({"messages": user, "n": 3, "stream": true})),
    );
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["param"], "n");
    // Still serving.
    let (status, ok) = post_raw(
        &server,
        "/v1/chat/completions",
        &chat(json!({"messages": user, "temperature": 0})),
    );
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["choices"][0]["message"]["content"], "7 plus 5 is 12.");
}
