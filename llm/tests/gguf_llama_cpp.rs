//! kiln against llama.cpp itself on files llama.cpp quantised (tests/fixtures/llm/gguf-quant, written
//! by tools/make_gguf_quant_crosscheck.py): a random Mistral with every row 256 values wide (hidden
//! 256, intermediate 512, 2 layers, 8 heads of 32, 2 KV heads), by llama-quantize as Q8_0 and as
//! Q4_K_M (Q4_K and Q6_K blocks), the 32 greedy tokens and top-8 log-probabilities llama-server gave
//! on each file after a chat prompt, and the same ids' log-probabilities with the file's weights
//! dequantised by gguf-py and run in float64 ("exact").
//!
//! Each step runs on llama.cpp's tokens (teacher forcing), so every step is compared even past a
//! divergence; up to the first one this is kiln's own greedy run. Checked on the CPU and the GPU:
//! kiln's log-probabilities within `BOUNDS` of llama.cpp's and of the exact ones, and kiln's greedy
//! token equal to llama.cpp's but at near-ties, the first of which is stated per file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_kernels::testing::with_gpu;
use kiln_llm::{Mistral, Session};
use kiln_nn::weights::WeightType;
use kiln_runtime::gguf::GgufFile;
use kiln_runtime::{DType, Device};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/gguf-quant")
}

fn record() -> Value {
    let text = std::fs::read_to_string(fixtures().join("llama_cpp.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Worst |kiln - llama.cpp| and |kiln - exact| log-probability over llama.cpp's top 8 ids per
/// step, where "exact" is the file's weights as gguf-py dequantises them, run in float64 by
/// transformers. Bounds about 1.5x the worst measured (shown after each), but on the GPU against the
/// exact model: kiln's GPU path dequantises the blocks and multiplies in f32 (measured 9e-6 and
/// 7e-6), so a misread block value would show there. llama.cpp itself is 0.22
/// (Q8_0) / 0.33 (Q4_K_M) from exact: it rounds activations to q8_0 / q8_K blocks; kiln's CPU
/// path rounds them to 8 bits per 32 values in its own way, so the two move apart in both ways.
struct Bounds {
    file: &'static str,
    cpu_llama: f64,
    cpu_exact: f64,
    gpu_llama: f64,
    gpu_exact: f64,
    /// The first step whose greedy token differs from llama.cpp's, on the CPU and the GPU, as
    /// measured on this fixture: each at a near-tie (see `check`).
    cpu_diverges: Option<usize>,
    gpu_diverges: Option<usize>,
}

const BOUNDS: [Bounds; 2] = [
    Bounds {
        file: "q8_0.gguf",
        cpu_llama: 0.3,  // 0.191
        cpu_exact: 0.35, // 0.232
        gpu_llama: 0.35, // 0.216: llama.cpp's own distance from exact
        gpu_exact: 1e-4,
        cpu_diverges: None,
        // llama.cpp's top-2 gap is 0.009 there; the exact model's 0.052, the other way.
        gpu_diverges: Some(0),
    },
    Bounds {
        file: "q4_k_m.gguf",
        cpu_llama: 0.6, // 0.434
        cpu_exact: 0.3, // 0.200
        gpu_llama: 0.5, // 0.331
        gpu_exact: 1e-4,
        // llama.cpp's top-2 gap is 0.104 there; the exact model's 0.008, the other way.
        cpu_diverges: Some(26),
        gpu_diverges: Some(26),
    },
];

/// A step where kiln's greedy token may differ from llama.cpp's: the two are within this in the
/// exact model's log-probabilities, so either's rounding of activations may order them.
const NEAR_TIE: f64 = 0.1;

fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits.iter().map(|&l| l as f64 - max - sum.ln()).collect()
}

fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0 as u32
}

/// kiln's logits at each generated position, fed llama.cpp's tokens `ids` after `prompt`.
fn forced_steps(model: &Mistral, prompt: &[u32], ids: &[u32]) -> Vec<Vec<f32>> {
    let mut session = Session::new(model, prompt.len() + ids.len(), DType::F32).unwrap();
    let (mut logits, _) = session.prefill(model, prompt).unwrap();
    let mut out = Vec::new();
    for &id in ids {
        out.push(std::mem::take(&mut logits));
        if out.len() < ids.len() {
            logits = session.decode(model, id).unwrap();
        }
    }
    out
}

fn check(device: &Device) {
    let record = record();
    let prompt = u32s(&record["chat"]["ids"]);
    for b in BOUNDS {
        let (file, (bound_llama, bound_exact), diverges) = if device.is_cpu() {
            (b.file, (b.cpu_llama, b.cpu_exact), b.cpu_diverges)
        } else {
            (b.file, (b.gpu_llama, b.gpu_exact), b.gpu_diverges)
        };
        let r = &record["files"][file];
        let want = u32s(&r["ids"]);
        assert_eq!(want.len(), 32);
        let model = Mistral::load(&fixtures().join(file), device, WeightType::F32).unwrap();
        let got = forced_steps(&model, &prompt, &want);
        let (mut worst, mut worst_exact, mut llama_exact) = (0.0f64, 0.0f64, 0.0f64);
        let mut differ = Vec::new();
        for (i, logits) in got.iter().enumerate() {
            let lp = log_softmax(logits);
            let top = u32s(&r["top_ids"][i]);
            let top_lp = f64s(&r["top_logprobs"][i]);
            let exact = f64s(&r["exact_logprobs"][i]);
            assert_eq!(top[0], want[i], "{file} step {i}");
            for ((&id, &l), &e) in top.iter().zip(&top_lp).zip(&exact) {
                worst = worst.max((lp[id as usize] - l).abs());
                worst_exact = worst_exact.max((lp[id as usize] - e).abs());
                llama_exact = llama_exact.max((l - e).abs());
            }
            let kiln = argmax(logits);
            if kiln != want[i] {
                // Only a near-tie may differ: kiln picks llama.cpp's runner-up, and the exact
                // model puts the two within NEAR_TIE.
                assert_eq!(
                    kiln, top[1],
                    "{file} step {i}: kiln picks {kiln}, not a runner-up"
                );
                let gap = (exact[0] - exact[1]).abs();
                assert!(gap < NEAR_TIE, "{file} step {i}: exact gap {gap}");
                differ.push((i, top_lp[0] - top_lp[1], gap));
            }
        }
        eprintln!(
            "{file} on {}: worst |log-prob err| vs llama.cpp {worst:.4}, vs exact \
             {worst_exact:.2e} (llama.cpp vs exact {llama_exact:.4}); kiln's greedy differs at \
             (step, llama.cpp's gap, exact gap) {differ:?}",
            device.name()
        );
        assert!(worst <= bound_llama, "{file}: {worst} > {bound_llama}");
        assert!(
            worst_exact <= bound_exact,
            "{file}: {worst_exact} > {bound_exact}"
        );
        assert_eq!(differ.first().map(|d| d.0), diverges, "{file}");
    }
}

#[test]
fn quantised_files_give_llama_cpps_tokens_and_log_probs() {
    check(&Device::Cpu);
}

#[test]
fn quantised_files_give_llama_cpps_log_probs_on_the_gpu() {
    // About a second on llvmpipe: the model is small.
    with_gpu(check);
}

/// The Q4_K_M file really holds K-quant blocks (llama-quantize's mix: Q4_K, Q6_K where it gives
/// more bits), so the checks above run kiln's Q4_K and Q6_K readers; kiln reads each file's types
/// as gguf-py read them when the fixture was made.
#[test]
fn the_files_hold_the_block_types_gguf_py_read() {
    let record = record();
    for file in ["q8_0.gguf", "q4_k_m.gguf"] {
        let gguf = GgufFile::open(fixtures().join(file)).unwrap();
        let mut got = BTreeMap::<String, u64>::new();
        for name in gguf.names() {
            *got.entry(gguf.tensor(name).unwrap().kind.name())
                .or_default() += 1;
        }
        let want: BTreeMap<String, u64> = record["files"][file]["types"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        assert_eq!(got, want, "{file}");
    }
    let types = &record["files"]["q4_k_m.gguf"]["types"];
    assert!(types["Q4_K"].as_u64().unwrap() > 0 && types["Q6_K"].as_u64().unwrap() > 0);
}
