//! llama.cpp GGUF chat models served (tests/fixtures/llm/gguf, tools/make_gguf_llm_fixtures.py):
//! a models folder holding the Tekken and SentencePiece files lists both as LLMs; a greedy reply
//! to the recorded first chat is the text of llama.cpp's 16 greedy tokens, whole and streamed,
//! with the prompt counted as llama-server counts it; /tokenize gives llama.cpp's ids.

use std::path::PathBuf;

use kiln_runtime::gguf::GgufFile;
use kiln_server::{ModelSet, Server};
use serde_json::{json, Value};

use crate::common::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/gguf")
}

fn record(model: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join("llama_cpp.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()[model].clone()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// A models folder with the two F32 files (copied: the fixture folder also holds the HF folders).
fn gguf_server() -> (Server, PathBuf) {
    let dir = std::env::temp_dir().join(format!("kiln-serve-gguf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["tekken-f32.gguf", "spm-f32.gguf"] {
        std::fs::copy(fixtures().join(f), dir.join(f)).unwrap();
    }
    (start(cpu_config(ModelSet::Dir(dir.clone()), 1)), dir)
}

#[test]
fn gguf_files_are_served_with_llama_cpps_replies_and_ids() {
    let (server, dir) = gguf_server();
    let models = get_json(&server, "/v1/models");
    let listed: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        listed.contains(&"tekken-f32.gguf") && listed.contains(&"spm-f32.gguf"),
        "{models}"
    );
    let client = openai(&server);
    for model in ["tekken", "spm"] {
        let name = format!("{model}-f32.gguf");
        let rec = record(model);
        let tokenizer =
            kiln_llm::Tokenizer::from_gguf(&GgufFile::open(fixtures().join(&name)).unwrap())
                .unwrap();
        let want = tokenizer.decode(&ids(&rec["greedy"]["ids"]), true).unwrap();
        let chat = &rec["chats"][0];
        let mut request = ask(chat["messages"][0]["content"].as_str().unwrap());
        request.model = name.clone();
        request.max_completion_tokens = Some(16);
        runtime().block_on(async {
            let reply = client.chat().create(request.clone()).await.unwrap();
            assert_eq!(
                reply.choices[0].message.content.as_deref(),
                Some(want.as_str()),
                "{model}"
            );
            let usage = reply.usage.unwrap();
            assert_eq!(usage.completion_tokens, 16, "{model}");
            assert_eq!(
                usage.prompt_tokens as usize,
                chat["ids"].as_array().unwrap().len(),
                "{model}"
            );
            let text = streamed_text(&client, request.clone()).await;
            assert_eq!(text, want, "{model} streamed");
        });
        // Plain text through /tokenize: llama.cpp's ids.
        for s in rec["strings"].as_array().unwrap().iter().take(40) {
            let (status, body) = post_raw(
                &server,
                "/tokenize",
                &json!({"model": name, "content": s["text"]}).to_string(),
            );
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                ids(&body["tokens"]),
                ids(&s["ids"]),
                "{model}: {}",
                s["text"]
            );
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// `kiln serve -m FILE.gguf` on a Q4_K_M file llama.cpp's own tools made
/// (tests/fixtures/llm/gguf-quant): the greedy reply is the text of llama-server's first 16
/// tokens on that file (kiln's first divergence is at step 26, a near-tie:
/// llm/tests/gguf_llama_cpp.rs), the prompt counted as llama-server counted it.
#[test]
fn a_llama_cpp_q4_k_m_file_is_served_with_llama_cpps_reply() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/gguf-quant");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("llama_cpp.json")).unwrap())
            .unwrap();
    let file = dir.join("q4_k_m.gguf");
    let server = start(cpu_config(ModelSet::Single(file.clone()), 1));
    let tokenizer = kiln_llm::Tokenizer::from_gguf(&GgufFile::open(&file).unwrap()).unwrap();
    let greedy: Vec<u32> = ids(&record["files"]["q4_k_m.gguf"]["ids"])
        .into_iter()
        .take(16)
        .collect();
    let want = tokenizer.decode(&greedy, true).unwrap();
    let mut request = ask(record["chat"]["messages"][0]["content"].as_str().unwrap());
    request.model = "q4_k_m.gguf".into();
    request.max_completion_tokens = Some(16);
    runtime().block_on(async {
        let reply = openai(&server).chat().create(request).await.unwrap();
        assert_eq!(
            reply.choices[0].message.content.as_deref(),
            Some(want.as_str())
        );
        let usage = reply.usage.unwrap();
        assert_eq!(usage.completion_tokens, 16);
        assert_eq!(
            usage.prompt_tokens as usize,
            record["chat"]["ids"].as_array().unwrap().len()
        );
    });
}
