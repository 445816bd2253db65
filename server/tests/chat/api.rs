//! Replies, streams, usage, seeds, stop strings, log-probabilities, n choices, prompt-cache reuse,
//! the text completion and tokenizer routes.

use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionStreamOptions,
    CreateChatCompletionRequestArgs, FinishReason, StopConfiguration,
};
use async_openai::types::completions::CreateCompletionRequestArgs;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::common::*;

/// Greedy replies equal transformers' recorded ones, token for token (usage counts the prompt's
/// ids and every generated id, the closing </s> included); the streamed reply is the same text.
#[test]
fn replies_match_the_golden_tokens_streamed_or_not() {
    let server = start(config(2));
    let client = openai(&server);
    let golden = expectations();
    runtime().block_on(async {
        for q in golden["questions"].as_array().unwrap().iter().take(4) {
            let question = q["prompt"].as_str().unwrap();
            let reply = q["reply"].as_str().unwrap();
            let whole = client.chat().create(ask(question)).await.unwrap();
            let choice = &whole.choices[0];
            assert_eq!(choice.message.content.as_deref(), Some(reply), "{question}");
            assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
            let usage = whole.usage.unwrap();
            if let Some(ids) = q["prompt_ids"].as_array() {
                assert_eq!(usage.prompt_tokens as usize, ids.len(), "{question}");
            }
            assert_eq!(
                usage.completion_tokens as usize,
                q["reply_ids"].as_array().unwrap().len()
            );
            assert_eq!(
                usage.total_tokens,
                usage.prompt_tokens + usage.completion_tokens
            );

            let mut request = ask(question);
            request.stream = Some(true);
            let mut stream = client.chat().create_stream(request).await.unwrap();
            let (mut text, mut finish, mut role_first, mut chunks) =
                (String::new(), None, false, 0);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap();
                assert!(chunk.usage.is_none(), "usage sent without include_usage");
                for c in chunk.choices {
                    if chunks == 0 {
                        role_first = c.delta.role.is_some();
                    }
                    chunks += 1;
                    text.push_str(c.delta.content.as_deref().unwrap_or_default());
                    finish = finish.or(c.finish_reason);
                }
            }
            assert!(role_first, "the first chunk carries the role");
            assert_eq!(text, reply, "{question} streamed");
            assert_eq!(finish, Some(FinishReason::Stop));
        }
    });
}

/// include_usage adds one last chunk with empty choices and the usage.
#[test]
fn streamed_usage_only_when_asked() {
    let server = start(config(1));
    let client = openai(&server);
    runtime().block_on(async {
        let mut request = ask("What is 7 plus 5?");
        request.stream = Some(true);
        request.stream_options = Some(ChatCompletionStreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        });
        let mut stream = client.chat().create_stream(request).await.unwrap();
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.next().await {
            chunks.push(chunk.unwrap());
        }
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty());
        let usage = last.usage.as_ref().unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (11, 10));
        assert!(chunks[..chunks.len() - 1].iter().all(|c| c.usage.is_none()));
    });
}

/// A seed reproduces a sampled reply; n gives n choices, each its own (seed + i). (A choice run
/// alone can differ from the same choice run beside others: a batch's matrix products sum in
/// another order, which moves a draw that falls near a boundary, as in llama.cpp.)
#[test]
fn seeds_reproduce_and_n_gives_n_choices() {
    let server = start(config(3));
    let client = openai(&server);
    runtime().block_on(async {
        let request = |n: u8, seed: i64| {
            CreateChatCompletionRequestArgs::default()
                .model(CHAT)
                .messages([user("Tell me about cats.")])
                .temperature(1.5)
                .seed(seed)
                .n(n)
                .max_completion_tokens(32u32)
                // Past its greeting the model is unsure: banning </s> lets sampling show.
                .logit_bias([("2".to_string(), -100i8)])
                .build()
                .unwrap()
        };
        let texts = |r: async_openai::types::chat::CreateChatCompletionResponse| {
            r.choices
                .into_iter()
                .map(|c| (c.index, c.message.content.unwrap_or_default()))
                .collect::<Vec<_>>()
        };
        let three = texts(client.chat().create(request(3, 41)).await.unwrap());
        assert_eq!(three.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(
            texts(client.chat().create(request(3, 41)).await.unwrap()),
            three
        );
        assert!(
            three[0].1 != three[1].1 || three[1].1 != three[2].1,
            "{three:?}"
        );
        // Different seeds sample differently somewhere over the three choices.
        let other = texts(client.chat().create(request(3, 99)).await.unwrap());
        assert_ne!(other, three);
    });
}

/// Stop strings end the reply before them; max_tokens ends it with finish_reason "length".
#[test]
fn stop_strings_and_length() {
    let server = start(config(1));
    let client = openai(&server);
    runtime().block_on(async {
        let mut request = ask("What is 7 plus 5?");
        request.stop = Some(StopConfiguration::StringArray(vec![
            " is".into(),
            "xyz".into(),
        ]));
        let r = client.chat().create(request).await.unwrap();
        assert_eq!(r.choices[0].message.content.as_deref(), Some("7 plus 5"));
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));

        let mut request = ask("What is 7 plus 5?");
        request.max_completion_tokens = Some(3);
        let r = client.chat().create(request).await.unwrap();
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Length));
        assert_eq!(r.usage.unwrap().completion_tokens, 3);
        assert_eq!(r.choices[0].message.content.as_deref(), Some("7 plus "));
    });
}

/// logprobs in OpenAI's shape: one entry per generated token, each with its bytes and the
/// requested number of alternatives, most likely first, all log-probabilities <= 0.
#[test]
fn logprobs_in_openai_shape() {
    let server = start(config(1));
    let client = openai(&server);
    runtime().block_on(async {
        let mut request = ask("What is 7 plus 5?");
        request.logprobs = Some(true);
        request.top_logprobs = Some(3);
        let r = client.chat().create(request).await.unwrap();
        let content = r.choices[0]
            .logprobs
            .as_ref()
            .unwrap()
            .content
            .clone()
            .unwrap();
        assert_eq!(content.len() as u32, r.usage.unwrap().completion_tokens);
        let text: String = content[..content.len() - 1]
            .iter()
            .map(|t| t.token.clone())
            .collect();
        assert_eq!(text, "7 plus 5 is 12.");
        for t in &content {
            assert!(t.logprob <= 0.0);
            assert_eq!(t.bytes.as_deref(), Some(t.token.as_bytes()));
            assert_eq!(t.top_logprobs.len(), 3);
            // Greedy: the chosen token is the most likely one.
            assert_eq!(t.top_logprobs[0].token, t.token);
            assert!(t
                .top_logprobs
                .windows(2)
                .all(|w| w[0].logprob >= w[1].logprob));
        }
    });
}

/// A second turn renders the first turn's prompt again: the slot that holds it prefills only the
/// new part, reported as cached prompt tokens; the reply is the one a fresh server gives.
#[test]
fn a_second_turn_reuses_the_cached_prefix() {
    let server = start(config(1));
    let client = openai(&server);
    runtime().block_on(async {
        let first = client
            .chat()
            .create(ask("What is 7 plus 5?"))
            .await
            .unwrap();
        let reply = first.choices[0].message.content.clone().unwrap();
        let second = CreateChatCompletionRequestArgs::default()
            .model(CHAT)
            .messages([
                user("What is 7 plus 5?"),
                ChatCompletionRequestAssistantMessageArgs::default()
                    .content(reply)
                    .build()
                    .unwrap()
                    .into(),
                user("What is 2 plus 3?"),
            ])
            .temperature(0.0)
            .build()
            .unwrap();
        let r = client.chat().create(second.clone()).await.unwrap();
        let cached = r
            .usage
            .as_ref()
            .unwrap()
            .prompt_tokens_details
            .as_ref()
            .unwrap()
            .cached_tokens
            .unwrap();
        assert!(
            cached >= first.usage.unwrap().prompt_tokens,
            "cached {cached}"
        );
        assert_eq!(
            r.choices[0].message.content.as_deref(),
            Some("2 plus 3 is 5.")
        );
        let fresh = start(config(1));
        let again = openai(&fresh).chat().create(second).await.unwrap();
        assert_eq!(
            again.choices[0].message.content,
            r.choices[0].message.content
        );
    });
}

/// /v1/completions continues raw text (no template); /tokenize and /detokenize round-trip.
#[test]
fn completions_and_tokenizer_routes() {
    let server = start(config(1));
    let client = openai(&server);
    runtime().block_on(async {
        let request = CreateCompletionRequestArgs::default()
            .model(CHAT)
            .prompt("[INST]What is 7 plus 5?[/INST]")
            .temperature(0.0)
            .max_tokens(24u32)
            .build()
            .unwrap();
        let r = client.completions().create(request).await.unwrap();
        assert_eq!(r.object, "text_completion");
        assert!(r.choices[0].finish_reason.is_some());
        assert!(!r.choices[0].text.is_empty());
    });
    let (status, t) = post_raw(
        &server,
        "/tokenize",
        r#"{"content": "What is 7 plus 5?", "add_special": true, "with_pieces": true}"#,
    );
    assert_eq!(status, 200, "{t}");
    let tokens = t["tokens"].as_array().unwrap();
    assert_eq!(tokens[0]["id"], 1);
    let pieces: String = tokens[1..]
        .iter()
        .map(|p| p["piece"].as_str().unwrap())
        .collect();
    assert_eq!(pieces, "What is 7 plus 5?");
    let ids: Vec<Value> = tokens[1..].iter().map(|p| p["id"].clone()).collect();
    let (status, d) = post_raw(&server, "/detokenize", &json!({"tokens": ids}).to_string());
    assert_eq!(status, 200);
    assert_eq!(d["content"], "What is 7 plus 5?");
}

/// Both kinds are listed with their kind; the A1111 checkpoint list never offers the LLM.
#[test]
fn models_are_listed_by_kind() {
    let server = start(config(1));
    let models = get_json(&server, "/v1/models");
    let kinds: Vec<(String, String)> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().into(),
                m["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("bundled".to_string(), "image".to_string()),
            (CHAT.to_string(), "llm".to_string())
        ]
    );
    let sd: Value = get_json(&server, "/sdapi/v1/sd-models");
    let titles: Vec<&str> = sd
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model_name"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["bundled"]);
    let health: Value = get_json(&server, "/health");
    assert_eq!(health["models"]["llm"], json!([CHAT]));
    assert!(health["loaded"]["llm"].is_null(), "{health}");
    let (status, _) = post_raw(
        &server,
        "/v1/chat/completions",
        r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}"#,
    );
    assert_eq!(status, 200);
    let health: Value = get_json(&server, "/health");
    assert_eq!(health["loaded"]["llm"], json!(CHAT), "{health}");
}
