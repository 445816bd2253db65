//! Starting chat servers and talking to them.

use std::path::PathBuf;
use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestUserMessageArgs,
    CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
};
use async_openai::Client;
use futures_util::StreamExt;
use kiln_runtime::DeviceChoice;
use kiln_server::{LlmSettings, ModelSet, Server, ServerConfig};
use serde_json::Value;

pub fn bundled_chat() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../llm/bundled")
}

pub fn bundled_image() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/bundled")
}

/// Both bundled models on the CPU backend at a free port, `parallel` slots.
pub fn config(parallel: usize) -> ServerConfig {
    cpu_config(
        ModelSet::List(vec![bundled_image(), bundled_chat()]),
        parallel,
    )
}

/// `models` on the CPU backend at a free port, `parallel` chat slots of 256 tokens each.
pub fn cpu_config(models: ModelSet, parallel: usize) -> ServerConfig {
    let mut c = ServerConfig::new(models);
    c.device = DeviceChoice::Cpu;
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.llm = LlmSettings {
        parallel,
        ctx_size: Some(256 * parallel),
        ..LlmSettings::default()
    };
    c
}

pub fn start(config: ServerConfig) -> Server {
    Server::start(config).expect("server starts")
}

/// The chat model's name as this server lists it.
pub const CHAT: &str = "llm/bundled";

pub fn openai(server: &Server) -> Client<OpenAIConfig> {
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("{}/v1", server.url()))
            .with_api_key("unused"),
    )
}

pub fn user(text: &str) -> ChatCompletionRequestMessage {
    ChatCompletionRequestUserMessageArgs::default()
        .content(text)
        .build()
        .unwrap()
        .into()
}

/// A greedy one-question request.
pub fn ask(question: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(CHAT)
        .messages([user(question)])
        .temperature(0.0)
        .max_completion_tokens(24u32)
        .build()
        .unwrap()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// POSTs raw JSON text; status and JSON body.
pub fn post_raw(server: &Server, path: &str, body: &str) -> (u16, Value) {
    let r = http()
        .post(format!("{}{path}", server.url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// GETs `path`; the body as text.
pub fn get_text(server: &Server, path: &str) -> String {
    http()
        .get(format!("{}{path}", server.url()))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// GETs `path`; the body as JSON.
pub fn get_json(server: &Server, path: &str) -> Value {
    serde_json::from_str(&get_text(server, path)).unwrap()
}

/// The bundled model's recorded greedy replies (transformers, #7's golden file).
pub fn expectations() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/llm/bundled_chat_expectations.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Asks for `request`'s reply as a stream and joins the text of its deltas.
pub async fn streamed_text(
    client: &Client<OpenAIConfig>,
    mut request: CreateChatCompletionRequest,
) -> String {
    request.stream = Some(true);
    let mut stream = client.chat().create_stream(request).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        for c in chunk.unwrap().choices {
            text.push_str(c.delta.content.as_deref().unwrap_or(""));
        }
    }
    text
}
