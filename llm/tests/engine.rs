//! Several replies at once (`Engine`, `Mistral::forward_batch`) against one reply at a time
//! (`generate`): batched rows equal the lone sequence's logits, replies are the same tokens with
//! greedy and with seeded sampling, a cached prefix is not prefilled again, and a sink that stops
//! frees its slot. On the CPU backend and the GPU under test.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kiln_kernels::testing::{rel_rms, with_gpu};
use kiln_llm::sampling::SamplingParams;
use kiln_llm::{
    generate, ChatModel, Engine, EngineEvent, EngineRequest, Flow, GenerateOptions, Generation,
    Logits, Message, Session,
};
use kiln_nn::weights::WeightType;
use kiln_runtime::{DType, Device};

fn bundled(device: &Device) -> ChatModel {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundled");
    ChatModel::load(&dir, device, WeightType::F32, None).unwrap()
}

fn prompt(chat: &ChatModel, question: &str) -> Vec<u32> {
    chat.template
        .encode(&chat.tokenizer, &[Message::user(question)])
        .unwrap()
}

const QUESTIONS: [&str; 4] = [
    "What is 7 plus 5?",
    "Compute 6 times 7.",
    "Tell me about cats.",
    "how much is 19 minus 4?",
];

/// Sequences at different depths decoded in one pass give each the logits it gets alone.
fn batched_rows_match_lone_sequences(device: &Device) {
    let chat = bundled(device);
    let model = &chat.model;
    let prompts: Vec<Vec<u32>> = QUESTIONS.iter().map(|q| prompt(&chat, q)).collect();
    let next = [5u32, 17, 99, 3];
    let mut batch: Vec<Session> = Vec::new();
    let mut expected = Vec::new();
    for (p, &id) in prompts.iter().zip(&next) {
        let mut s = Session::new(model, 64, DType::F32).unwrap();
        s.prefill(model, p).unwrap();
        let mut alone = Session::new(model, 64, DType::F32).unwrap();
        alone.prefill(model, p).unwrap();
        expected.push(alone.decode(model, id).unwrap());
        batch.push(s);
    }
    let mut refs: Vec<&mut Session> = batch.iter_mut().collect();
    let logits = kiln_llm::decode_batch(model, &mut refs, &next)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    let vocab = model.config.vocab_size;
    assert_eq!(logits.len(), 4 * vocab);
    for (b, row) in logits.chunks_exact(vocab).enumerate() {
        let err = rel_rms(row, &expected[b]);
        assert!(err < 1e-5, "row {b} on {}: rel rms {err}", device.name());
    }
    for (s, (p, &id)) in batch.iter().zip(prompts.iter().zip(&next)) {
        assert_eq!(s.tokens().len(), p.len() + 1);
        assert_eq!(*s.tokens().last().unwrap(), id);
    }
    // One sequence whose cache is full is refused, naming it.
    let mut full = model.new_cache(prompts[0].len(), DType::F32).unwrap();
    model.forward(&prompts[0], &mut full, Logits::Last).unwrap();
    let err = model
        .forward_batch(&[1], &mut [&mut full])
        .unwrap_err()
        .to_string();
    assert!(err.contains("sequence 0") && err.contains("full"), "{err}");
}

#[test]
fn batched_rows_match_lone_sequences_on_the_cpu() {
    batched_rows_match_lone_sequences(&Device::Cpu);
}

#[test]
fn batched_rows_match_lone_sequences_on_the_gpu() {
    with_gpu(batched_rows_match_lone_sequences);
}

type Replies = Arc<Mutex<Vec<Option<(String, Generation)>>>>;

/// A sink collecting the streamed text of reply `index` and its final generation.
fn collector(replies: &Replies, index: usize) -> kiln_llm::Sink {
    let replies = replies.clone();
    let mut text = String::new();
    Box::new(move |event| {
        match event {
            EngineEvent::Token { text: piece, .. } => text.push_str(piece),
            EngineEvent::Done(g) => replies.lock().unwrap()[index] = Some((text.clone(), g)),
            EngineEvent::Failed(e) => panic!("reply {index} failed: {e}"),
        }
        Flow::Continue
    })
}

fn options(seed: Option<u64>) -> GenerateOptions {
    GenerateOptions {
        sampling: match seed {
            Some(seed) => SamplingParams {
                temperature: 1.0,
                seed: Some(seed),
                ..SamplingParams::default()
            },
            None => SamplingParams::greedy(),
        },
        max_tokens: Some(24),
        stop: Vec::new(),
        constraint: None,
    }
}

/// Four replies through two slots (so two wait for a free slot) equal the same replies made one
/// at a time, greedy and sampled with a seed.
fn engine_replies_match_generate(device: &Device) {
    let chat = bundled(device);
    let model = &chat.model;
    for seed in [None, Some(7)] {
        let mut engine = Engine::new(model, 2, 96, DType::F32).unwrap();
        let replies: Replies = Arc::new(Mutex::new(vec![None; QUESTIONS.len()]));
        let mut waiting: Vec<usize> = (0..QUESTIONS.len()).collect();
        waiting.reverse();
        let mut steps = 0;
        while !waiting.is_empty() || engine.active() > 0 {
            while engine.free_slots() > 0 {
                let Some(i) = waiting.pop() else { break };
                let request = EngineRequest {
                    prompt: prompt(&chat, QUESTIONS[i]),
                    images: Vec::new(),
                    options: options(seed.map(|s| s + i as u64)),
                };
                engine
                    .start(model, &chat.tokenizer, request, collector(&replies, i))
                    .unwrap();
            }
            engine.step(model, &chat.tokenizer).unwrap();
            steps += 1;
            assert!(steps < 200, "the engine never finished");
        }
        for (i, question) in QUESTIONS.iter().enumerate() {
            let mut session = Session::new(model, 96, DType::F32).unwrap();
            let alone = generate(
                model,
                &chat.tokenizer,
                &mut session,
                &prompt(&chat, question),
                &options(seed.map(|s| s + i as u64)),
                |_| Flow::Continue,
            )
            .unwrap();
            let (streamed, batched) = replies.lock().unwrap()[i].clone().unwrap();
            let what = format!("{question:?} seed {seed:?} on {}", device.name());
            assert_eq!(batched.tokens, alone.tokens, "{what}");
            assert_eq!(batched.text, alone.text, "{what}");
            assert_eq!(streamed, alone.text, "{what}");
            assert_eq!(batched.finish, alone.finish, "{what}");
            if seed.is_some() {
                assert_eq!(batched.seed, alone.seed, "{what}");
            }
        }
    }
}

#[test]
fn engine_replies_match_generate_on_the_cpu() {
    engine_replies_match_generate(&Device::Cpu);
}

#[test]
fn engine_replies_match_generate_on_the_gpu() {
    with_gpu(engine_replies_match_generate);
}

/// A second turn returns to the slot holding the first: only its new tokens are prefilled. A
/// sink that says stop ends its reply at once and frees the slot.
#[test]
fn prefix_reuse_and_stopping_sinks() {
    let device = Device::Cpu;
    let chat = bundled(&device);
    let model = &chat.model;
    let mut engine = Engine::new(model, 2, 128, DType::F32).unwrap();
    let replies: Replies = Arc::new(Mutex::new(vec![None; 3]));
    let first = vec![Message::user("What is 7 plus 5?")];
    let first_ids = chat.template.encode(&chat.tokenizer, &first).unwrap();
    let request = |prompt: Vec<u32>| EngineRequest {
        prompt,
        images: Vec::new(),
        options: options(None),
    };
    engine
        .start(
            model,
            &chat.tokenizer,
            request(first_ids.clone()),
            collector(&replies, 0),
        )
        .unwrap();
    while engine.active() > 0 {
        engine.step(model, &chat.tokenizer).unwrap();
    }
    let (_, reply) = replies.lock().unwrap()[0].clone().unwrap();
    assert_eq!(reply.prefilled, first_ids.len());

    let mut second = first.clone();
    second.push(Message::assistant(reply.text.clone()));
    second.push(Message::user("What is 2 plus 3?"));
    let second_ids = chat.template.encode(&chat.tokenizer, &second).unwrap();
    assert!(engine.cached_prefix(&second_ids) >= first_ids.len());
    engine
        .start(
            model,
            &chat.tokenizer,
            request(second_ids.clone()),
            collector(&replies, 1),
        )
        .unwrap();
    while engine.active() > 0 {
        engine.step(model, &chat.tokenizer).unwrap();
    }
    let (_, again) = replies.lock().unwrap()[1].clone().unwrap();
    assert!(
        again.prefilled < second_ids.len() - first_ids.len() + 2,
        "prefilled {} of {} (first turn {})",
        again.prefilled,
        second_ids.len(),
        first_ids.len()
    );

    // A sink that stops after its first token: the reply ends interrupted, the slot is free.
    let done = Arc::new(Mutex::new(None));
    let seen = done.clone();
    let sink: kiln_llm::Sink = Box::new(move |event| match event {
        EngineEvent::Token { .. } => Flow::Stop,
        EngineEvent::Done(g) => {
            *seen.lock().unwrap() = Some(g);
            Flow::Stop
        }
        EngineEvent::Failed(e) => panic!("{e}"),
    });
    engine
        .start(model, &chat.tokenizer, request(first_ids), sink)
        .unwrap();
    assert_eq!(engine.active(), 0);
    let g = done.lock().unwrap().clone().unwrap();
    assert!(g.interrupted);
    assert_eq!(g.tokens.len(), 1);

    // A request that cannot fit is refused before anything runs.
    let mut long = second_ids.clone();
    long.resize(200, second_ids[1]);
    let err = engine
        .start(
            model,
            &chat.tokenizer,
            request(long),
            collector(&replies, 2),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("200") && err.contains("128"), "{err}");
}
