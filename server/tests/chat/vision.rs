//! Images through the OpenAI API on the tiny random Mistral3 fixture
//! (tests/fixtures/llm/mistral3-vision, tools/make_vision_fixtures.py): the reply to a message
//! with one image, to a message with two, and to a conversation with images in two turns is the
//! text of transformers' 16 greedy tokens, whole and streamed, through async-openai; two
//! requests with different images in parallel slots each get their own reply; the same model as
//! llama.cpp's GGUF text file with `--mmproj` (its mmproj file) gives the same replies.

use std::path::PathBuf;

use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
    ChatCompletionRequestMessageContentPartImageArgs,
    ChatCompletionRequestMessageContentPartTextArgs, ChatCompletionRequestUserMessageArgs,
    ChatCompletionRequestUserMessageContentPart, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs, ImageUrlArgs,
};
use base64::Engine;
use kiln_runtime::DeviceChoice;
use kiln_server::{ModelSet, Server, ServerConfig};
use serde_json::Value;

use crate::common::*;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/mistral3-vision")
}

const MODEL: &str = "mistral3-vision";

fn vision_server(parallel: usize) -> Server {
    start(cpu_config(ModelSet::List(vec![fixture()]), parallel))
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("golden.json")).unwrap()).unwrap()
}

/// The text of the case's golden greedy ids, as kiln's tokenizer decodes them.
fn golden_reply(case: &str) -> String {
    let ids: Vec<u32> = manifest()[case]["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    kiln_llm::Tokenizer::from_dir(&fixture())
        .unwrap()
        .decode(&ids, true)
        .unwrap()
}

fn data_url(file: &str) -> String {
    let bytes = std::fs::read(fixture().join(file)).unwrap();
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The case's chat as OpenAI messages: parts in golden.json's order, images as data URLs.
fn messages(case: &str) -> Vec<ChatCompletionRequestMessage> {
    let m = &manifest()[case];
    let mut images = m["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string());
    m["prompt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|msg| match &msg["content"] {
            Value::String(text) => ChatCompletionRequestAssistantMessageArgs::default()
                .content(text.as_str())
                .build()
                .unwrap()
                .into(),
            Value::Array(parts) => {
                let parts: Vec<ChatCompletionRequestUserMessageContentPart> = parts
                    .iter()
                    .map(|p| match p["type"].as_str().unwrap() {
                        "text" => ChatCompletionRequestMessageContentPartTextArgs::default()
                            .text(p["text"].as_str().unwrap())
                            .build()
                            .unwrap()
                            .into(),
                        _ => ChatCompletionRequestMessageContentPartImageArgs::default()
                            .image_url(
                                ImageUrlArgs::default()
                                    .url(data_url(&images.next().unwrap()))
                                    .build()
                                    .unwrap(),
                            )
                            .build()
                            .unwrap()
                            .into(),
                    })
                    .collect();
                ChatCompletionRequestUserMessageArgs::default()
                    .content(parts)
                    .build()
                    .unwrap()
                    .into()
            }
            other => panic!("content {other}"),
        })
        .collect()
}

fn request(case: &str) -> CreateChatCompletionRequest {
    request_to(MODEL, case)
}

fn request_to(model: &str, case: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages(messages(case))
        .temperature(0.0)
        .max_completion_tokens(16u32)
        .build()
        .unwrap()
}

#[test]
fn image_replies_are_the_transformers_greedy_tokens_whole_and_streamed() {
    let server = vision_server(1);
    let client = openai(&server);
    runtime().block_on(async {
        for case in ["one", "two", "turns"] {
            let want = golden_reply(case);
            let reply = client.chat().create(request(case)).await.unwrap();
            let choice = &reply.choices[0];
            assert_eq!(
                choice.message.content.as_deref(),
                Some(want.as_str()),
                "{case}"
            );
            let usage = reply.usage.unwrap();
            assert_eq!(usage.completion_tokens, 16, "{case}");
            assert_eq!(
                usage.prompt_tokens as u64,
                manifest()[case]["prompt_tokens"].as_u64().unwrap(),
                "{case}: the prompt counts every image token"
            );

            let text = streamed_text(&client, request(case)).await;
            assert_eq!(text, want, "{case} streamed");
        }
    });
}

#[test]
fn parallel_requests_with_different_images_get_their_own_replies() {
    let server = vision_server(2);
    let client = openai(&server);
    runtime().block_on(async {
        let chat = client.chat();
        let (one, two) = tokio::join!(chat.create(request("one")), chat.create(request("two")));
        let text = |r: async_openai::types::chat::CreateChatCompletionResponse| {
            r.choices[0].message.content.clone().unwrap()
        };
        assert_eq!(text(one.unwrap()), golden_reply("one"));
        assert_eq!(text(two.unwrap()), golden_reply("two"));
    });
}

#[test]
fn a_gguf_text_model_with_mmproj_reads_images_as_the_folder_does() {
    let mut c = cpu_config(ModelSet::Single(fixture().join("text-f32.gguf")), 1);
    c.llm.mmproj = Some(fixture().join("mmproj-f32.gguf"));
    let server = start(c);
    let client = openai(&server);
    runtime().block_on(async {
        for case in ["one", "turns"] {
            let reply = client
                .chat()
                .create(request_to("text-f32.gguf", case))
                .await
                .unwrap();
            assert_eq!(
                reply.choices[0].message.content.as_deref(),
                Some(golden_reply(case).as_str()),
                "{case}"
            );
            assert_eq!(
                reply.usage.unwrap().prompt_tokens as u64,
                manifest()[case]["prompt_tokens"].as_u64().unwrap(),
                "{case}"
            );
        }
    });
    drop(server);

    // Without the projector the same file is text only: images are refused before queueing.
    let mut c = ServerConfig::new(ModelSet::Single(fixture().join("text-f32.gguf")));
    c.device = DeviceChoice::Cpu;
    c.listen = "127.0.0.1:0".parse().unwrap();
    let server = start(c);
    let (status, body) = post_raw(
        &server,
        "/v1/chat/completions",
        &serde_json::to_string(&request_to("text-f32.gguf", "one")).unwrap(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("no vision encoder"), "{body}");
}
