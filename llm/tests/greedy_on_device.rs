//! Greedy decoding with the argmax taken on the device (`Session::prefill_greedy` /
//! `decode_greedy`, used by `generate` when `SamplingParams::is_plain_greedy`) against the logits
//! path, on the bundled chat model: the same ids step by step and the same replies, on the CPU
//! backend and the GPU under test; and on a GPU, one decode step is one queue submission.

use std::path::{Path, PathBuf};

use kiln_kernels::testing::{gpu, with_gpu};
use kiln_llm::sampling::{Sampler, SamplingContext, SamplingParams};
use kiln_llm::{ChatModel, Conversation, Flow, GenerateOptions, Message, Session};
use kiln_nn::weights::WeightType;
use kiln_runtime::gpu::GpuOptions;
use kiln_runtime::{DType, Device};

fn bundled(device: &Device, weight_type: WeightType) -> ChatModel {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundled");
    ChatModel::load(&dir, device, weight_type, None).unwrap()
}

/// The sampler's greedy choice from a whole row of logits: what the logits path does.
fn host_choice(logits: &[f32]) -> u32 {
    let mut sampler = Sampler::new(SamplingParams::greedy(), logits.len()).unwrap();
    sampler
        .sample(logits, &SamplingContext::new(&[]))
        .unwrap()
        .id
}

/// Two sessions fed the same ids, one returning logits, one the device's id: every step (the
/// prefill and 30 decodes, past the end of any reply) picks the same id.
fn same_ids_step_by_step(device: &Device) {
    for (weight_type, kv) in [(WeightType::F32, DType::F32), (WeightType::F16, DType::F16)] {
        let chat = bundled(device, weight_type);
        let model = &chat.model;
        for question in ["What is 7 plus 5?", "Tell me about cats."] {
            let prompt = chat
                .template
                .encode(&chat.tokenizer, &[Message::user(question)])
                .unwrap();
            let mut by_logits = Session::new(model, 64, kv).unwrap();
            let mut by_id = Session::new(model, 64, kv).unwrap();
            let (logits, run) = by_logits.prefill(model, &prompt).unwrap();
            let (mut id, run_id) = by_id.prefill_greedy(model, &prompt).unwrap();
            let what = format!("{question:?} {weight_type} on {}", device.name());
            assert_eq!((id, run_id), (host_choice(&logits), run), "prefill {what}");
            for step in 0..30 {
                let logits = by_logits.decode(model, id).unwrap();
                let next = by_id.decode_greedy(model, id).unwrap();
                assert_eq!(next, host_choice(&logits), "step {step} {what}");
                id = next;
            }
            assert_eq!(by_id.tokens(), by_logits.tokens());
        }
    }
}

#[test]
fn device_greedy_picks_the_logits_paths_ids_on_the_cpu() {
    same_ids_step_by_step(&Device::Cpu);
}

#[test]
fn device_greedy_picks_the_logits_paths_ids_on_the_gpu() {
    with_gpu(same_ids_step_by_step);
}

/// `generate` with plain greedy (the id path) and with `logprobs` (which needs the logits, and
/// changes no choice) gives the same replies; only the second reports log-probabilities.
fn same_replies(device: &Device) {
    let chat = bundled(device, WeightType::F32);
    let options = |logprobs: bool| GenerateOptions {
        sampling: SamplingParams {
            logprobs,
            ..SamplingParams::greedy()
        },
        max_tokens: Some(40),
        stop: Vec::new(),
        constraint: None,
    };
    assert!(options(false).sampling.is_plain_greedy());
    assert!(!options(true).sampling.is_plain_greedy());
    for question in [
        "What is 7 plus 5?",
        "Compute 6 times 7.",
        "Tell me about cats.",
    ] {
        let reply = |logprobs: bool| {
            let mut conversation = Conversation::new(&chat, 128, DType::F16).unwrap();
            conversation
                .reply(&chat, question, &options(logprobs), |_| Flow::Continue)
                .unwrap()
        };
        let (by_id, by_logits) = (reply(false), reply(true));
        let what = format!("{question:?} on {}", device.name());
        assert_eq!(by_id.tokens, by_logits.tokens, "{what}");
        assert_eq!(by_id.text, by_logits.text, "{what}");
        assert_eq!(by_id.finish, by_logits.finish, "{what}");
        let ids = |g: &kiln_llm::Generation| g.sampled.iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(&by_id), ids(&by_logits), "{what}");
        assert!(
            by_id
                .sampled
                .iter()
                .all(|s| s.logprob.is_none() && s.top_logprobs.is_empty()),
            "{what}"
        );
        assert!(
            by_logits
                .sampled
                .iter()
                .all(|s| s.logprob.is_some_and(|l| l <= 0.0)),
            "{what}"
        );
    }
}

#[test]
fn greedy_replies_match_the_logits_path_on_the_cpu() {
    same_replies(&Device::Cpu);
}

#[test]
fn greedy_replies_match_the_logits_path_on_the_gpu() {
    with_gpu(same_replies);
}

#[test]
fn a_decode_step_is_one_submission_on_the_gpu() {
    let Some(Device::Gpu(shared)) = gpu() else {
        return;
    };
    // A private device, so its counters see only this test's work.
    let device = Device::open_gpu(shared.index(), GpuOptions::default()).unwrap();
    let Device::Gpu(ctx) = &device else {
        unreachable!()
    };
    let chat = bundled(&device, WeightType::F32);
    let model = &chat.model;
    let prompt = chat
        .template
        .encode(&chat.tokenizer, &[Message::user("What is 7 plus 5?")])
        .unwrap();
    let mut session = Session::new(model, 64, DType::F16).unwrap();
    let (mut id, _) = session.prefill_greedy(model, &prompt).unwrap();
    for step in 0..3 {
        let before = ctx.stats().unwrap();
        id = session.decode_greedy(model, id).unwrap();
        let d = ctx.stats().unwrap() - before;
        // Every layer's kernels and the argmax in one command buffer, read back once.
        assert_eq!(d.submissions, 1, "greedy step {step}: {d:?}");
        assert!(d.dispatches > model.layers.len() as u64, "{d:?}");
    }
    // The logits path is one submission too; it only reads back more.
    let before = ctx.stats().unwrap();
    session.decode(model, id).unwrap();
    assert_eq!((ctx.stats().unwrap() - before).submissions, 1);
}
