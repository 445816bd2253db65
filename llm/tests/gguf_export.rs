//! `kiln quantize` to GGUF (kiln_llm::gguf_export) on the tiny fixture folders of
//! tests/fixtures/llm/gguf, against the files llama.cpp's converter made of the same folders:
//! - metadata: every key of the converter's F32 file but `general.name` / `general.size_label`
//!   (labels kiln does not write) has the same type and value, tokenizer arrays included, and
//!   `general.file_type` is the mix's; the keys come in the converter's order.
//! - tensors: for each mix, every tensor's type is the policy's (`policy::tensor_type`) and its
//!   bytes are what ggml's reference quantiser makes of the converter's F32 tensor (the same floats
//!   after the converter's Q/K row permutation); q8_0 files equal the converter's own q8_0 files
//!   tensor for tensor (the converter's Q8_0 and F16 fallback are llama-quantize's).
//! - the file loads back in kiln, and its prefill logits stay close to the folder's (bounds at
//!   `BOUNDS`); errors (existing output, unknown tokenizer) leave no file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_kernels::quant::ggml_pack::quantize_ggml;
use kiln_kernels::testing::rel_rms;
use kiln_llm::gguf_export::policy::{tensor_type, GgufMix, ModelShape, TensorType};
use kiln_llm::gguf_export::{quantize_to_gguf, GgufExportReport};
use kiln_llm::{Logits, Mistral};
use kiln_nn::weights::WeightType;
use kiln_runtime::gguf::{GgufFile, GgufType};
use kiln_runtime::{DType, Device, QuantFormat};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/gguf")
}

/// A fresh directory per call (tests run in parallel in one process).
fn temp(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "kiln-gguf-export-{name}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn export_report(model: &str, mix: GgufMix) -> (PathBuf, GgufFile, GgufExportReport) {
    let out = temp(&format!("{model}-{}", mix.name())).join("m.gguf");
    let report = quantize_to_gguf(&fixtures().join(model), &out, mix).unwrap();
    assert!(!out.with_extension("gguf.partial").exists());
    let file = GgufFile::open(&out).unwrap();
    (out, file, report)
}

fn export(model: &str, mix: GgufMix) -> (PathBuf, GgufFile) {
    let (out, file, _) = export_report(model, mix);
    (out, file)
}

const MIXES: [GgufMix; 3] = [GgufMix::Q4KM, GgufMix::Q6K, GgufMix::Q8_0];

#[test]
fn metadata_and_tokenizer_equal_the_converters() {
    for model in ["tekken", "spm"] {
        let want = GgufFile::open(fixtures().join(format!("{model}-f32.gguf"))).unwrap();
        for mix in MIXES {
            let (_, got) = export(model, mix);
            let mut want_keys: Vec<&String> = want
                .values()
                .keys()
                .filter(|k| !matches!(k.as_str(), "general.name" | "general.size_label"))
                .collect();
            let mut got_keys: Vec<&String> = got.values().keys().collect();
            want_keys.sort();
            got_keys.sort();
            assert_eq!(got_keys, want_keys, "{model} {}", mix.name());
            for key in want_keys {
                let value = got.value(key).unwrap();
                if key == "general.file_type" {
                    assert_eq!(value.as_u64(), Some(u64::from(mix.file_type())));
                } else {
                    assert_eq!(value, want.value(key).unwrap(), "{model} {key}");
                }
            }
            assert_eq!(
                got.get_strings("tokenizer.ggml.tokens")
                    .unwrap()
                    .unwrap()
                    .len(),
                if model == "tekken" { 1500 } else { 512 }
            );
        }
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn tensors_are_the_policys_types_packed_as_ggml_packs_the_converters_floats() {
    for model in ["tekken", "spm"] {
        let source = GgufFile::open(fixtures().join(format!("{model}-f32.gguf"))).unwrap();
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(model).join("config.json")).unwrap(),
        )
        .unwrap();
        let count = |k: &str| config[k].as_u64().unwrap() as usize;
        let shape = ModelShape {
            layers: count("num_hidden_layers"),
            heads: count("num_attention_heads"),
            kv_heads: count("num_key_value_heads"),
            tied: model == "spm",
        };
        for mix in MIXES {
            let (_, got) = export(model, mix);
            let mut names = got.names();
            let mut want_names = source.names();
            names.sort();
            want_names.sort();
            assert_eq!(names, want_names, "{model} {}", mix.name());
            for name in source.names() {
                let t = source.tensor(name).unwrap();
                let ty = tensor_type(mix, &shape, name, &t.shape).unwrap();
                let g = got.tensor(name).unwrap();
                assert_eq!(g.shape, t.shape, "{name}");
                let values = f32s(source.bytes(name).unwrap());
                let want: Vec<u8> = match ty {
                    TensorType::F32 => {
                        assert_eq!(g.kind, GgufType::F32, "{name}");
                        source.bytes(name).unwrap().to_vec()
                    }
                    TensorType::F16 => {
                        assert_eq!(g.kind, GgufType::F16, "{name}");
                        values
                            .iter()
                            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                            .collect()
                    }
                    TensorType::Packed(f) => {
                        assert_eq!(g.kind, GgufType::Packed(f), "{model} {} {name}", mix.name());
                        quantize_ggml(f, &t.shape, &values).unwrap()
                    }
                };
                assert_eq!(
                    got.bytes(name).unwrap(),
                    want,
                    "{model} {} {name}",
                    mix.name()
                );
            }
        }
    }
}

#[test]
fn the_policy_on_the_fixtures() {
    // tekken: rows of 32 / 64 (not whole 256-weight blocks): Q4_K -> Q5_0, Q6_K -> Q8_0; its
    // head is untied (Q8_0 by the output rule); spm's attn_output rows of 48 are F16 in every mix.
    let (_, t, report) = export_report("tekken", GgufMix::Q4KM);
    let kind = |f: &GgufFile, n: &str| f.tensor(n).unwrap().kind;
    let q = GgufType::Packed;
    assert_eq!(kind(&t, "output.weight"), q(QuantFormat::Q8_0));
    assert_eq!(kind(&t, "token_embd.weight"), q(QuantFormat::Q5_0));
    // use_more_bits(i, 2) holds for layer 1 only.
    assert_eq!(kind(&t, "blk.0.attn_v.weight"), q(QuantFormat::Q5_0));
    assert_eq!(kind(&t, "blk.1.attn_v.weight"), q(QuantFormat::Q8_0));
    assert_eq!(kind(&t, "blk.0.ffn_down.weight"), q(QuantFormat::Q5_0));
    assert_eq!(kind(&t, "blk.1.ffn_down.weight"), q(QuantFormat::Q8_0));
    assert_eq!(kind(&t, "blk.0.attn_q.weight"), q(QuantFormat::Q5_0));
    assert_eq!(kind(&t, "blk.0.attn_norm.weight"), GgufType::F32);
    let (_, s) = export("spm", GgufMix::Q4KM);
    assert!(s.tensor("output.weight").is_none());
    assert_eq!(kind(&s, "token_embd.weight"), q(QuantFormat::Q8_0));
    assert_eq!(kind(&s, "blk.0.attn_output.weight"), GgufType::F16);
    // Tensor order: llama-quantize's (outside layers first, then by layer and name).
    let order: Vec<&str> = report.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &order[..5],
        [
            "output.weight",
            "output_norm.weight",
            "token_embd.weight",
            "blk.0.attn_k.weight",
            "blk.0.attn_norm.weight"
        ]
    );
}

#[test]
fn q8_0_files_equal_the_converters_q8_0_files() {
    for model in ["tekken", "spm"] {
        let want = GgufFile::open(fixtures().join(format!("{model}-q8_0.gguf"))).unwrap();
        let (_, got) = export(model, GgufMix::Q8_0);
        for name in want.names() {
            let (w, g) = (want.tensor(name).unwrap(), got.tensor(name).unwrap());
            assert_eq!((g.kind, &g.shape), (w.kind, &w.shape), "{model} {name}");
            assert_eq!(got.bytes(name), want.bytes(name), "{model} {name}");
        }
    }
}

/// Worst |GGUF - folder| prefill logit and relative RMS allowed, 1.5x the measured (CPU): tekken
/// q4_k_m 1.20 / 0.183, q6_k and q8_0 0.214 / 0.034; spm q4_k_m 2.21 / 0.140, q6_k and q8_0
/// 0.515 / 0.030. The logits span about +-10 and these random models (weights N(0, 0.2)) amplify
/// weight rounding through their norms (the converter's own q8_0 files measure alike, see
/// tests/gguf.rs). Their rows (32, 48, 64) are not whole 256-weight blocks, so q4_k_m is mostly
/// Q5_0 and q6_k is Q8_0 here: 256-wide rows are the cross-check script's model.
const BOUNDS: [(&str, GgufMix, f32, f32); 6] = [
    ("tekken", GgufMix::Q4KM, 1.8, 0.28),
    ("tekken", GgufMix::Q6K, 0.33, 0.051),
    ("tekken", GgufMix::Q8_0, 0.33, 0.051),
    ("spm", GgufMix::Q4KM, 3.3, 0.21),
    ("spm", GgufMix::Q6K, 0.8, 0.045),
    ("spm", GgufMix::Q8_0, 0.8, 0.045),
];

#[test]
fn the_file_loads_back_with_logits_close_to_the_folders() {
    for (model, mix, max_err, max_rms) in BOUNDS {
        let (path, _) = export(model, mix);
        let prompt: Vec<u32> = (1..40).map(|i| (i * 37 % 400 + 10) as u32).collect();
        let logits = |m: &Mistral| {
            let mut cache = m.new_cache(64, DType::F32).unwrap();
            m.forward(&prompt, &mut cache, Logits::All)
                .unwrap()
                .to_vec_f32()
                .unwrap()
        };
        let folder = Mistral::load(&fixtures().join(model), &Device::Cpu, WeightType::F32).unwrap();
        let gguf = Mistral::load(&path, &Device::Cpu, WeightType::F32).unwrap();
        let (want, got) = (logits(&folder), logits(&gguf));
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let rms = rel_rms(&got, &want);
        eprintln!(
            "{model} {}: max |err| {worst:.3e}, relative RMS {rms:.3e}",
            mix.name()
        );
        assert!(
            worst <= max_err && rms <= max_rms,
            "{model} {}: {worst} / {rms}",
            mix.name()
        );
    }
}

#[test]
fn errors_leave_no_file() {
    let dir = temp("errors");
    let out = dir.join("exists.gguf");
    std::fs::write(&out, b"keep").unwrap();
    let e = quantize_to_gguf(&fixtures().join("tekken"), &out, GgufMix::Q8_0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("exists.gguf") && e.contains("already exists"),
        "{e}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    // A folder without a tokenizer kiln can write fails before any file is made.
    let folder = dir.join("no-tokenizer");
    std::fs::create_dir_all(&folder).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("tekken").join(f), folder.join(f)).unwrap();
    }
    let out = dir.join("m.gguf");
    let e = quantize_to_gguf(&folder, &out, GgufMix::Q4KM)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no tokenizer") && e.contains("tekken.json"),
        "{e}"
    );
    assert!(!out.exists() && !dir.join("m.gguf.partial").exists());
    // A truncated weight file fails mid-write: the partial file is removed.
    std::fs::copy(
        fixtures().join("tekken").join("tekken.json"),
        folder.join("tekken.json"),
    )
    .unwrap();
    let weights = std::fs::read(fixtures().join("tekken").join("model.safetensors")).unwrap();
    std::fs::write(
        folder.join("model.safetensors"),
        &weights[..weights.len() - 4096],
    )
    .unwrap();
    assert!(quantize_to_gguf(&folder, &out, GgufMix::Q4KM).is_err());
    assert!(!out.exists() && !dir.join("m.gguf.partial").exists());
}

/// A folder with tekken.json and tokenizer.json (as Mistral Nemo / Small ship): the vocabulary is
/// tekken.json's (the converter's keys for it), the chat template the folder's own.
#[test]
fn tekken_beside_tokenizer_json_keeps_the_folders_template() {
    let dir = temp("tekken-json");
    let folder = dir.join("model");
    std::fs::create_dir_all(&folder).unwrap();
    for f in ["config.json", "model.safetensors", "tekken.json"] {
        std::fs::copy(fixtures().join("tekken").join(f), folder.join(f)).unwrap();
    }
    std::fs::write(folder.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(folder.join("chat_template.jinja"), "{{ messages }}").unwrap();
    let out = dir.join("m.gguf");
    quantize_to_gguf(&folder, &out, GgufMix::Q8_0).unwrap();
    let (got, want) = (
        GgufFile::open(&out).unwrap(),
        GgufFile::open(fixtures().join("tekken-f32.gguf")).unwrap(),
    );
    assert_eq!(
        got.get_str("tokenizer.chat_template"),
        Some("{{ messages }}")
    );
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.pre",
    ] {
        assert_eq!(got.value(key), want.value(key), "{key}");
    }
}
