//! llama.cpp GGUF files of tiny decoders (tests/fixtures/llm/gguf, written by
//! tools/make_gguf_llm_fixtures.py with llama.cpp's own convert_hf_to_gguf.py) against the
//! Hugging Face folders they were converted from, and against llama.cpp itself:
//! - tekken: MistralForCausalLM, GQA 4/2, head_dim 16 != hidden 32 / 4 heads, untied head, a
//!   Tekken vocabulary (tokenizer.ggml.model "gpt2", pre "tekken"); as F32, F16 and Q8_0 files.
//! - spm: LlamaForCausalLM, GQA 2/1, head_dim 24 != 32 / 2, tied embeddings (no `output`), a
//!   SentencePiece vocabulary (tokenizer.ggml.model "llama"); as F32 and Q8_0 files.
//!
//! Checked: the config read from the metadata equals config.json's; every prefill logit of the
//! GGUF model against the folder's (F32: within 1e-5, the same weights after the Q/K rows are read
//! back; F16 and Q8_0: the bounds stated at `BOUNDS`); 16 greedy tokens through the KV cache equal
//! to the ones llama.cpp generated from the same file (and transformers from the folder, both
//! recorded in llama_cpp.json). Bad files fail naming the file and the tensor or key.

use std::path::{Path, PathBuf};

use kiln_kernels::testing::{rel_rms, with_gpu};
use kiln_llm::{ChatTemplate, Logits, Message, Mistral, MistralConfig, Role, Session, Tokenizer};
use kiln_nn::weights::WeightType;
use kiln_runtime::gguf::{write_gguf_with, GgufFile, GgufValue};
use kiln_runtime::{DType, Device};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/gguf")
}

fn llama_cpp(model: &str) -> Value {
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

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-llm-gguf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every prefill logit of `model` on the first recorded chat prompt.
fn logits(model: &Mistral, prompt: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(64, DType::F32).unwrap();
    model
        .forward(prompt, &mut cache, Logits::All)
        .unwrap()
        .to_vec_f32()
        .unwrap()
}

fn prompt(model: &str) -> Vec<u32> {
    ids(&llama_cpp(model)["chats"][0]["ids"])
}

#[test]
fn the_config_from_the_metadata_is_the_folders() {
    for model in ["tekken", "spm"] {
        let folder = MistralConfig::from_file(&fixtures().join(model).join("config.json")).unwrap();
        let file = GgufFile::open(fixtures().join(format!("{model}-f32.gguf"))).unwrap();
        let gguf = MistralConfig::from_gguf(&file).unwrap();
        assert_eq!(gguf.model_type, "llama");
        let same = MistralConfig {
            model_type: folder.model_type.clone(),
            ..gguf.clone()
        };
        assert_eq!(same, folder, "{model}");
    }
}

/// Worst |GGUF - folder| logit and relative RMS allowed per file, about 1.5x the worst measured
/// (CPU and llvmpipe) when set. The F32 files hold the folder's weights exactly (measured: 0).
/// F16 rounds weights to 11 bits (measured 3.5e-3 / 6.3e-4); Q8_0 to 8 bits per 32-weight block,
/// the embedding and head too, and on the CPU its matrix products also round activations to 8
/// bits as llama.cpp does (measured tekken 0.14 / 0.027, spm 0.25 / 0.018). The logits span about
/// +-10: these random models (weights N(0, 0.2)) amplify any perturbation through their norms.
const BOUNDS: [(&str, &str, f32, f32); 5] = [
    // (model, type, max |err|, relative RMS)
    ("tekken", "f32", 1e-5, 1e-6),
    ("tekken", "f16", 6e-3, 1e-3),
    ("tekken", "q8_0", 0.25, 0.04),
    ("spm", "f32", 1e-5, 1e-6),
    ("spm", "q8_0", 0.4, 0.03),
];

fn check_logits(device: &Device) {
    for (model, ty, max_err, max_rms) in BOUNDS {
        let prompt = prompt(model);
        let folder = Mistral::load(&fixtures().join(model), device, WeightType::F32).unwrap();
        let path = fixtures().join(format!("{model}-{ty}.gguf"));
        let gguf = Mistral::load(&path, device, WeightType::F32).unwrap();
        assert_eq!(gguf.config.tie_word_embeddings, model == "spm");
        let (want, got) = (logits(&folder, &prompt), logits(&gguf, &prompt));
        assert_eq!(got.len(), prompt.len() * folder.config.vocab_size);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let rms = rel_rms(&got, &want);
        eprintln!(
            "{model} {ty} on {}: max |err| {worst:.3e}, relative RMS {rms:.3e}",
            device.name()
        );
        assert!(
            worst <= max_err && rms <= max_rms,
            "{model} {ty}: {worst} / {rms}"
        );
    }
}

#[test]
fn gguf_logits_match_the_folder_it_was_converted_from() {
    check_logits(&Device::Cpu);
}

#[test]
fn gguf_logits_match_the_folder_on_the_gpu() {
    with_gpu(check_logits);
}

/// 16 greedy tokens through the KV cache, as llama.cpp generated them from the same F32 file
/// (every step's top-2 gap >= 0.01 in float64, so f32 arithmetic cannot flip one).
#[test]
fn greedy_tokens_are_llama_cpps() {
    for model in ["tekken", "spm"] {
        let record = llama_cpp(model);
        let want = ids(&record["greedy"]["ids"]);
        assert_eq!(want, ids(&record["transformers_greedy"]));
        for ty in ["f32"] {
            let path = fixtures().join(format!("{model}-{ty}.gguf"));
            let m = Mistral::load(&path, &Device::Cpu, WeightType::F32).unwrap();
            let mut session = Session::new(&m, 64, DType::F32).unwrap();
            let (mut logits, _) = session.prefill(&m, &prompt(model)).unwrap();
            let mut got = Vec::new();
            for _ in 0..want.len() {
                let id = logits
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0 as u32;
                got.push(id);
                logits = session.decode(&m, id).unwrap();
            }
            assert_eq!(got, want, "{model} {ty}");
        }
    }
}

/// A copy of the tekken F32 file with `edit` applied to its metadata and tensors.
fn edited(
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, GgufValue)>, &mut Vec<(String, Vec<usize>, u32, Vec<u8>)>),
) -> PathBuf {
    edited_file(&fixtures().join("tekken-f32.gguf"), name, edit)
}

/// A copy of the F32 file `path` with `edit` applied to its metadata and tensors.
fn edited_file(
    path: &Path,
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, GgufValue)>, &mut Vec<(String, Vec<usize>, u32, Vec<u8>)>),
) -> PathBuf {
    let file = GgufFile::open(path).unwrap();
    let mut metadata: Vec<(String, GgufValue)> = file
        .values()
        .iter()
        .filter(|(k, _)| k.as_str() != "general.alignment")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tensors: Vec<(String, Vec<usize>, u32, Vec<u8>)> = file
        .names()
        .into_iter()
        .map(|n| {
            let t = file.tensor(n).unwrap();
            (
                n.to_string(),
                t.shape.clone(),
                0,
                file.bytes(n).unwrap().to_vec(),
            )
        })
        .collect();
    edit(&mut metadata, &mut tensors);
    let path = temp(name).join("model.gguf");
    let meta: Vec<(&str, GgufValue)> = metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let tensors: Vec<(&str, Vec<usize>, u32, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, t, b)| (n.as_str(), s.clone(), *t, b.clone()))
        .collect();
    write_gguf_with(&path, &meta, &tensors).unwrap();
    path
}

fn load_error(path: &Path) -> String {
    match Mistral::load(path, &Device::Cpu, WeightType::F32) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_files_fail_naming_the_file_and_what_is_wrong() {
    // The rewrite itself loads, so each failure below is the edit's.
    let same = edited("same", |_, _| {});
    Mistral::load(&same, &Device::Cpu, WeightType::F32).unwrap();

    // Truncated: every cut of the file fails (header or tensor data), naming it.
    let bytes = std::fs::read(fixtures().join("tekken-f32.gguf")).unwrap();
    let cut = temp("cut").join("cut.gguf");
    for len in [10, 1000, 30_000, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let e = load_error(&cut);
        assert!(
            e.contains("cut.gguf") && e.contains("truncated"),
            "{len}: {e}"
        );
    }

    // An architecture kiln does not run.
    let qwen = edited("arch", |m, _| {
        for (k, v) in m.iter_mut() {
            if k == "general.architecture" {
                *v = "qwen2".into();
            }
        }
    });
    let e = load_error(&qwen);
    assert!(e.contains("model.gguf") && e.contains("`qwen2`"), "{e}");

    // A tensor whose type and shape need more bytes than it has: `blk.0.attn_q.weight` declared
    // with twice its rows.
    let big = edited("size", |_, t| {
        let q = t.iter_mut().find(|t| t.0 == "blk.0.attn_q.weight").unwrap();
        q.1[0] *= 2;
    });
    let e = load_error(&big);
    assert!(
        e.contains("model.gguf")
            && e.contains("`blk.0.attn_q.weight`")
            && e.contains("does not match"),
        "{e}"
    );

    // A vocabulary that does not fit the embedding: 1500 tokens, 1400 rows.
    let rows = edited("vocab", |_, t| {
        for name in ["token_embd.weight", "output.weight"] {
            let e = t.iter_mut().find(|t| t.0 == name).unwrap();
            e.1[0] = 1400;
            e.3.truncate(1400 * 32 * 4);
        }
    });
    let e = load_error(&rows);
    assert!(
        e.contains("model.gguf")
            && e.contains("1500 tokens")
            && e.contains("`token_embd.weight` has 1400 rows"),
        "{e}"
    );
    // A vocabulary size the embedding does not have: named by the tensor and both shapes.
    let size = edited("vocab-size", |m, _| {
        for (k, v) in m.iter_mut() {
            if k == "llama.vocab_size" {
                *v = GgufValue::U32(1600);
            }
        }
    });
    let e = load_error(&size);
    assert!(
        e.contains("`token_embd.weight` (read as `model.embed_tokens.weight`) has shape [1500, 32], expected [1600, 32]"),
        "{e}"
    );

    // A shape that does not fit the config: named by its stored and its read name.
    let wrong = edited("shape", |_, t| {
        let k = t.iter_mut().find(|t| t.0 == "blk.1.attn_k.weight").unwrap();
        k.1 = vec![16, 64];
    });
    let e = load_error(&wrong);
    assert!(
        e.contains("`blk.1.attn_k.weight` (read as `model.layers.1.self_attn.k_proj.weight`)"),
        "{e}"
    );

    // Corrupt sizes fail before anything of their size is allocated.
    let layers = edited("layers", |m, _| {
        for (k, v) in m.iter_mut() {
            if k == "llama.block_count" {
                *v = GgufValue::U32(4_000_000_000);
            }
        }
    });
    let e = load_error(&layers);
    assert!(e.contains("`llama.block_count` is 4000000000"), "{e}");
    let heads = edited("heads", |m, _| {
        for (k, v) in m.iter_mut() {
            match k.as_str() {
                "llama.attention.head_count" | "llama.attention.head_count_kv" => {
                    *v = GgufValue::U32(1 << 30)
                }
                "llama.attention.key_length" | "llama.attention.value_length" => {
                    *v = GgufValue::U32(1 << 30)
                }
                "llama.rope.dimension_count" => *v = GgufValue::U32(1 << 30),
                _ => {}
            }
        }
    });
    let e = load_error(&heads);
    assert!(
        e.contains("`blk.0.attn_q.weight`") && e.contains("has shape [64, 32]"),
        "{e}"
    );

    // A tensor the decoder would not use (Llama 3.1's RoPE factors) is refused, not ignored.
    let extra = edited("extra", |_, t| {
        t.push(("rope_freqs.weight".into(), vec![8], 0, vec![0; 32]));
    });
    let e = load_error(&extra);
    assert!(
        e.contains("`rope_freqs.weight`") && e.contains("not supported"),
        "{e}"
    );

    // A missing tensor is named with llama.cpp's name.
    let missing = edited("missing", |_, t| t.retain(|t| t.0 != "blk.1.ffn_up.weight"));
    let e = load_error(&missing);
    assert!(e.contains("blk.1.ffn_up.weight"), "{e}");
}

/// The tokenizer read from each file gives llama.cpp's ids for every string of
/// tests/fixtures/llm/tokenizer/goldens.json (plain text: llama.cpp's parse_special false), and
/// decodes them back to the string.
#[test]
fn tokenizers_give_llama_cpps_ids() {
    for (model, files) in [
        ("tekken", ["tekken-f32.gguf", "tekken-q8_0.gguf"]),
        ("spm", ["spm-f32.gguf", "spm-q8_0.gguf"]),
    ] {
        let record = llama_cpp(model);
        for file in files {
            let gguf = GgufFile::open(fixtures().join(file)).unwrap();
            let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
            assert_eq!(
                tokenizer.vocab_size(),
                gguf.get_array("tokenizer.ggml.tokens").unwrap().len()
            );
            assert_eq!((tokenizer.bos_id(), tokenizer.eos_id()), (Some(1), Some(2)));
            assert!(tokenizer.adds_bos());
            let strings = record["strings"].as_array().unwrap();
            assert_eq!(strings.len(), 119);
            for s in strings {
                let text = s["text"].as_str().unwrap();
                let got = tokenizer.encode(text).unwrap();
                assert_eq!(got, ids(&s["ids"]), "{file}: {text:?}");
                assert_eq!(
                    tokenizer.decode(&got, false).unwrap(),
                    text,
                    "{file}: {text:?}"
                );
            }
        }
    }
}

fn messages(v: &Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let role = Role::parse(m["role"].as_str().unwrap()).unwrap();
            Message::new(role, m["content"].as_str().unwrap())
        })
        .collect()
}

/// Each file's own chat template (tekken: the name "mistral-v7-tekken", kiln's built-in V7-Tekken
/// format; spm: Mistral-7B-Instruct-v0.1's Jinja, BOS added as llama.cpp adds it) gives the
/// prompt ids llama-server gives for the same conversation.
#[test]
fn chat_prompts_are_llama_cpps() {
    for (model, template) in [
        ("tekken", "built-in mistral-v7-tekken"),
        ("spm", "Jinja template from"),
    ] {
        let file = GgufFile::open(fixtures().join(format!("{model}-f32.gguf"))).unwrap();
        let tokenizer = Tokenizer::from_gguf(&file).unwrap();
        let chat = ChatTemplate::for_gguf(&file, &tokenizer).unwrap();
        assert!(chat.describe().starts_with(template), "{}", chat.describe());
        let record = llama_cpp(model);
        let chats = record["chats"].as_array().unwrap();
        assert_eq!(chats.len(), if model == "tekken" { 3 } else { 2 });
        for c in chats {
            let got = chat.encode(&tokenizer, &messages(&c["messages"])).unwrap();
            assert_eq!(got, ids(&c["ids"]), "{model}: {}", c["prompt"]);
        }
    }
}

/// The SentencePiece Mistral templates a GGUF file may name render as llama.cpp's built-in ones.
#[test]
fn named_templates_render_as_llama_cpps() {
    let record = llama_cpp("spm")["named_templates"].clone();
    let conversation = messages(&record["messages"]);
    for (name, want) in record["prompts"].as_object().unwrap() {
        let path = fixtures().join("spm-f32.gguf");
        let renamed = edited_file(&path, name, |m, _| {
            for (k, v) in m.iter_mut() {
                if k == "tokenizer.chat_template" {
                    *v = name.as_str().into();
                }
            }
        });
        let file = GgufFile::open(&renamed).unwrap();
        let tokenizer = Tokenizer::from_gguf(&file).unwrap();
        let ChatTemplate::Jinja(t) = ChatTemplate::for_gguf(&file, &tokenizer).unwrap() else {
            panic!("{name}: not a Jinja template");
        };
        let got = t.render(&tokenizer, &conversation).unwrap();
        assert_eq!(&got, want.as_str().unwrap(), "{name}");
    }
    // The Tekken names are kiln's built-in formats; an unknown name is refused, naming it.
    let chatml = edited_file(&fixtures().join("spm-f32.gguf"), "chatml", |m, _| {
        for (k, v) in m.iter_mut() {
            if k == "tokenizer.chat_template" {
                *v = "chatml".into();
            }
        }
    });
    let file = GgufFile::open(&chatml).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let e = ChatTemplate::for_gguf(&file, &tokenizer)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("`chatml`") && e.contains("--chat-template"),
        "{e}"
    );
}

/// `tokenizer.ggml.pre` "llama3" (Llama 3's split pattern over the file's own merges): llama.cpp's
/// ids on the same vocabulary with only the pre-tokenizer renamed, where contractions are cut
/// apart as Llama 3's pattern cuts them (ids Tekken's pattern does not give).
#[test]
fn the_llama3_pre_tokenizer_gives_llama_cpps_ids() {
    let path = edited("llama3", |m, _| {
        for (k, v) in m.iter_mut() {
            if k == "tokenizer.ggml.pre" {
                *v = "llama3".into();
            }
        }
    });
    let llama3 = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let tekken =
        Tokenizer::from_gguf(&GgufFile::open(fixtures().join("tekken-f32.gguf")).unwrap()).unwrap();
    let record = llama_cpp("tekken")["llama3"].clone();
    let strings = record.as_array().unwrap();
    assert_eq!(strings.len(), 126);
    let mut differ = 0;
    for s in strings {
        let text = s["text"].as_str().unwrap();
        let got = llama3.encode(text).unwrap();
        assert_eq!(got, ids(&s["ids"]), "{text:?}");
        assert_eq!(llama3.decode(&got, false).unwrap(), text, "{text:?}");
        differ += usize::from(got != tekken.encode(text).unwrap());
    }
    assert!(differ >= 3, "only {differ} strings tell the patterns apart");
    // Control tokens: named, never produced from text.
    assert_eq!(llama3.token_id("[INST]"), Some(3));
    assert!(!llama3.encode("[INST]").unwrap().contains(&3));
    // Pixtral 12B's files say "pixtral", which llama.cpp runs with the same pattern.
    let path = edited("pixtral", |m, _| {
        for (k, v) in m.iter_mut() {
            if k == "tokenizer.ggml.pre" {
                *v = "pixtral".into();
            }
        }
    });
    let pixtral = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    for s in strings {
        let text = s["text"].as_str().unwrap();
        assert_eq!(pixtral.encode(text).unwrap(), ids(&s["ids"]), "{text:?}");
    }
}
