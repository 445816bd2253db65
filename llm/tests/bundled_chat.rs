//! The bundled chat model (llm/bundled, trained by tools/train_bundled_chat_model.py) against
//! transformers' greedy replies recorded by its `--verify` step
//! (tests/fixtures/llm/bundled_chat_expectations.json): the same prompt ids from its Jinja chat
//! template, the same reply ids and text for 21 questions of every phrasing and operation, and a
//! two-turn conversation with a system prompt whose second turn reuses the first turn's cache.
//! On the CPU backend and the GPU under test.

use std::path::{Path, PathBuf};

use kiln_kernels::testing::with_gpu;
use kiln_llm::sampling::{FinishReason, SamplingParams};
use kiln_llm::{ChatModel, Conversation, Flow, GenerateOptions, Message};
use kiln_nn::weights::WeightType;
use kiln_runtime::{DType, Device};
use serde_json::Value;

mod common;
use common::ids;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn expectations() -> Value {
    let path = root().join("tests/fixtures/llm/bundled_chat_expectations.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        constraint: None,
    }
}

fn check(device: &Device) {
    let chat = ChatModel::load(&root().join("llm/bundled"), device, WeightType::F32, None).unwrap();
    assert!(chat.template.describe().contains("tokenizer_config.json"));
    let e = expectations();
    let max = e["max_new_tokens"].as_u64().unwrap() as usize;
    let questions = e["questions"].as_array().unwrap();
    assert!(questions.len() >= 20);
    for q in questions {
        let prompt = q["prompt"].as_str().unwrap();
        if let Some(want) = q.get("prompt_ids") {
            let got = chat
                .template
                .encode(&chat.tokenizer, &[Message::user(prompt)])
                .unwrap();
            assert_eq!(got, ids(want), "prompt ids of {prompt:?}");
        }
        let mut conversation = Conversation::new(&chat, 128, DType::F32).unwrap();
        let mut streamed = String::new();
        let g = conversation
            .reply(&chat, prompt, &greedy(max), |t| {
                streamed.push_str(t);
                Flow::Continue
            })
            .unwrap();
        let mut reply_ids = g.tokens.clone();
        if g.finish == FinishReason::Stop {
            reply_ids.push(2);
        }
        assert_eq!(
            reply_ids,
            ids(&q["reply_ids"]),
            "{prompt:?} on {}",
            device.name()
        );
        assert_eq!(g.text, q["reply"].as_str().unwrap());
        assert_eq!(streamed, g.text);
    }

    // Two turns with a system prompt: the second renders to transformers' ids and runs only
    // what follows the cached first turn.
    let c = &e["conversation"];
    let messages = common::messages(&c["messages"]);
    assert_eq!(
        chat.template.encode(&chat.tokenizer, &messages).unwrap(),
        ids(&c["prompt_ids"])
    );
    let mut conversation = Conversation::new(&chat, 128, DType::F16).unwrap();
    conversation.set_system(Some(messages[0].content.clone()));
    let first = conversation
        .reply(&chat, &messages[1].content, &greedy(max), |_| {
            Flow::Continue
        })
        .unwrap();
    assert_eq!(first.text, messages[2].content);
    let second = conversation
        .reply(&chat, &messages[3].content, &greedy(max), |_| {
            Flow::Continue
        })
        .unwrap();
    assert_eq!(second.text, c["reply"].as_str().unwrap());
    assert_eq!(second.prompt_tokens, ids(&c["prompt_ids"]).len());
    assert!(
        second.prefilled < second.prompt_tokens / 2,
        "{} of {} prompt tokens run again",
        second.prefilled,
        second.prompt_tokens
    );
}

#[test]
fn bundled_chat_model_answers_as_transformers_does_on_the_cpu() {
    check(&Device::Cpu);
}

#[test]
fn bundled_chat_model_answers_as_transformers_does_on_the_gpu() {
    with_gpu(check);
}

#[test]
fn the_same_seed_gives_the_same_sampled_reply_on_cpu_and_gpu() {
    let options = GenerateOptions {
        sampling: SamplingParams {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(7),
            ..SamplingParams::default()
        },
        max_tokens: Some(24),
        stop: Vec::new(),
        constraint: None,
    };
    let reply = |device: &Device| {
        let chat =
            ChatModel::load(&root().join("llm/bundled"), device, WeightType::F32, None).unwrap();
        let mut conversation = Conversation::new(&chat, 64, DType::F32).unwrap();
        conversation
            .reply(&chat, "Tell me about cats.", &options, |_| Flow::Continue)
            .unwrap()
            .tokens
    };
    let cpu = reply(&Device::Cpu);
    assert_eq!(cpu, reply(&Device::Cpu), "same seed twice on the CPU");
    with_gpu(|gpu| assert_eq!(reply(gpu), cpu, "CPU vs {}", gpu.name()));
}

#[test]
fn stop_strings_max_tokens_and_the_context_are_honoured() {
    let chat = ChatModel::load(
        &root().join("llm/bundled"),
        &Device::Cpu,
        WeightType::F32,
        None,
    )
    .unwrap();
    let mut conversation = Conversation::new(&chat, 64, DType::F32).unwrap();
    let mut options = greedy(24);
    options.stop = vec![" is".to_string()];
    let g = conversation
        .reply(&chat, "What is 7 plus 5?", &options, |_| Flow::Continue)
        .unwrap();
    assert_eq!(
        (g.text.as_str(), g.finish),
        ("7 plus 5", FinishReason::Stop)
    );

    let g = conversation
        .reply(&chat, "What is 7 plus 5?", &greedy(3), |_| Flow::Continue)
        .unwrap();
    assert_eq!((g.tokens.len(), g.finish), (3, FinishReason::Length));

    let err = conversation
        .reply(&chat, "What is 7 plus 5?", &greedy(60), |_| Flow::Continue)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_tokens 60") && err.contains("64 tokens"),
        "{err}"
    );
    // A failed turn leaves the conversation as it was.
    assert_eq!(conversation.messages().len(), 4);

    // The callback can stop a reply (Ctrl-C in `kiln chat`).
    let mut conversation = Conversation::new(&chat, 64, DType::F32).unwrap();
    let g = conversation
        .reply(&chat, "Hello", &greedy(24), |_| Flow::Stop)
        .unwrap();
    assert!(g.interrupted && g.tokens.len() < 5, "{g:?}");
}
