//! Image input against mistral-common and transformers on a tiny random Mistral3 model
//! (tests/fixtures/llm/mistral3-vision, made by tools/make_vision_fixtures.py; goldens computed
//! in float64 from the saved f32 weights). Three chats: one 70x130 image given after the text
//! (mistral-common moves it first), two images in one message (37x23 upscaled, 300x200 larger
//! than the 112-pixel longest edge), and images in two turns around an assistant reply.
//!
//! Checked on the CPU backend and the GPU under test (llvmpipe in CI):
//! - pixel values: mistral-common's, |err| <= 1e-4 (after normalisation; values are O(1));
//! - prompt ids (the `[IMG]` / `[IMG_BREAK]` / `[IMG_END]` layout) identical;
//! - vision tower output and projected rows, relative RMS <= 1e-5 (CPU) / 1e-4 (GPU);
//! - logits of the prompt's last 4 positions, |err| <= 1e-4 * (1 + |want|);
//! - 16 greedy tokens identical (every step's top-2 gap in the golden is > 1e-3);
//! - a second image at the same place as a cached one is not taken from the cache, and the
//!   prefix before it is reused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_kernels::testing::{assert_close, rel_rms, with_gpu};
use kiln_llm::sampling::SamplingParams;
use kiln_llm::vision::{decode_image, DecodedImage};
use kiln_llm::{generate_prompt, ChatModel, Flow, GenerateOptions, Logits, Message, Session};
use kiln_nn::weights::WeightType;
use kiln_runtime::{DType, Device};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/mistral3-vision")
}

fn image(name: &str) -> Arc<DecodedImage> {
    let bytes = std::fs::read(fixture().join(name)).unwrap();
    Arc::new(decode_image(&bytes, name).unwrap())
}

struct Goldens {
    bytes: Vec<u8>,
    manifest: Value,
}

impl Goldens {
    fn load() -> Goldens {
        let dir = fixture();
        Goldens {
            bytes: std::fs::read(dir.join("golden.safetensors")).unwrap(),
            manifest: serde_json::from_str(
                &std::fs::read_to_string(dir.join("golden.json")).unwrap(),
            )
            .unwrap(),
        }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    fn ids(&self, name: &str) -> Vec<u32> {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), Dtype::I64);
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect()
    }

    fn f32s(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), Dtype::F32);
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (v, t.shape().to_vec())
    }

    /// The case's chat as kiln messages: the texts and images in golden.json's order.
    fn messages(&self, case: &str) -> Vec<Message> {
        let m = &self.manifest[case];
        let mut images = m["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| image(n.as_str().unwrap()));
        m["prompt"]
            .as_array()
            .unwrap()
            .iter()
            .map(|msg| {
                let role = msg["role"].as_str().unwrap();
                match &msg["content"] {
                    Value::String(text) => match role {
                        "assistant" => Message::assistant(text.as_str()),
                        _ => Message::user(text.as_str()),
                    },
                    Value::Array(parts) => {
                        let mut text = String::new();
                        let mut message = Message::user("");
                        for part in parts {
                            match part["type"].as_str().unwrap() {
                                "text" => text.push_str(part["text"].as_str().unwrap()),
                                _ => message.images.push(images.next().unwrap()),
                            }
                        }
                        message.content = text;
                        message
                    }
                    other => panic!("content {other}"),
                }
            })
            .collect()
    }
}

const CASES: [&str; 3] = ["one", "two", "turns"];

fn load(device: &Device) -> ChatModel {
    ChatModel::load(&fixture(), device, WeightType::F32, None).unwrap()
}

#[test]
fn pixels_and_prompt_ids_match_mistral_common() {
    let g = Goldens::load();
    let chat = load(&Device::Cpu);
    let processor = chat
        .image_processor()
        .expect("the fixture has a vision tower");
    for case in CASES {
        let messages = g.messages(case);
        let prompt = chat
            .template
            .encode_prompt(&chat.tokenizer, &messages, &[], Some(&processor))
            .unwrap();
        assert_eq!(
            prompt.ids,
            g.ids(&format!("{case}.input_ids")),
            "{case}: prompt ids"
        );
        for (k, span) in prompt.images.iter().enumerate() {
            let (want, shape) = g.f32s(&format!("{case}.pixels_{k}"));
            assert_eq!(
                [3, span.image.height, span.image.width],
                [shape[0], shape[1], shape[2]],
                "{case} image {k}: size"
            );
            assert_close(
                &format!("{case} image {k} pixels"),
                &span.image.pixels,
                &want,
                1e-4,
                0.0,
            );
        }
    }
}

fn check_model(device: &Device, feature_tol: f32) {
    let g = Goldens::load();
    let chat = load(device);
    let vision = chat.model.vision.as_ref().unwrap();
    let processor = chat.image_processor().unwrap();
    for case in CASES {
        let messages = g.messages(case);
        let prompt = chat
            .template
            .encode_prompt(&chat.tokenizer, &messages, &[], Some(&processor))
            .unwrap();
        for (k, span) in prompt.images.iter().enumerate() {
            let image = &span.image;
            let pixels = kiln_runtime::Tensor::from_f32(
                device,
                &[3, image.height, image.width],
                DType::F32,
                &image.pixels,
            )
            .unwrap();
            let features = vision
                .encoder
                .forward(&pixels)
                .unwrap()
                .to_vec_f32()
                .unwrap();
            let (want, _) = g.f32s(&format!("{case}.features_{k}"));
            let err = rel_rms(&features, &want);
            assert!(
                err <= feature_tol,
                "{case} image {k}: vision features rel RMS {err}"
            );
            let projected = vision.encode(image).unwrap().to_vec_f32().unwrap();
            let (want, _) = g.f32s(&format!("{case}.projected_{k}"));
            let err = rel_rms(&projected, &want);
            assert!(
                err <= feature_tol,
                "{case} image {k}: projected rel RMS {err}"
            );
        }

        // Logits of the last rows: a whole-prompt forward with the images' rows inserted.
        let mut session = Session::new(&chat.model, 256, DType::F32).unwrap();
        let mut cache = chat.model.new_cache(256, DType::F32).unwrap();
        let inserts: Vec<_> = prompt
            .images
            .iter()
            .map(|span| {
                let rows = span.image_positions().iter().map(|&p| p as u32).collect();
                (rows, vision.encode(&span.image).unwrap())
            })
            .collect();
        let logits = chat
            .model
            .forward_embedded(&prompt.ids, &inserts, &mut cache, Logits::All)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let (want, shape) = g.f32s(&format!("{case}.logits"));
        let vocab = shape[1];
        let tail = &logits[logits.len() - want.len()..];
        assert_close(&format!("{case} logits"), tail, &want, 1e-4, 1e-4);
        assert_eq!(vocab, chat.model.config.vocab_size);

        // 16 greedy tokens through the session (prefill with images, then the KV cache).
        let options = GenerateOptions {
            sampling: SamplingParams::greedy(),
            max_tokens: Some(16),
            ..GenerateOptions::default()
        };
        let generation = generate_prompt(
            &chat.model,
            &chat.tokenizer,
            &mut session,
            &prompt,
            &options,
            |_| Flow::Continue,
        )
        .unwrap();
        assert_eq!(
            generation.tokens,
            g.ids(&format!("{case}.greedy")),
            "{case}: greedy tokens"
        );
    }
}

#[test]
fn vision_tower_logits_and_greedy_tokens_match_transformers_on_cpu() {
    check_model(&Device::Cpu, 1e-5);
}

#[test]
fn vision_tower_logits_and_greedy_tokens_match_transformers_on_gpu() {
    with_gpu(|gpu| check_model(gpu, 1e-4));
}

/// The same conversation with a different image at the same place: the `[IMG]` ids are equal,
/// so only the image hash tells them apart; the prefix before the image is reused and the
/// logits equal a fresh session's.
#[test]
fn a_different_image_at_a_cached_place_is_encoded_again() {
    let g = Goldens::load();
    let chat = load(&Device::Cpu);
    let processor = chat.image_processor().unwrap();
    let messages = g.messages("turns");
    let prompt = chat
        .template
        .encode_prompt(&chat.tokenizer, &messages, &[], Some(&processor))
        .unwrap();
    let mut session = Session::new(&chat.model, 256, DType::F32).unwrap();
    let (_, run) = session.prefill_prompt(&chat.model, &prompt).unwrap();
    assert_eq!(run, prompt.ids.len());
    // Same prompt again: all but the last token cached.
    let (_, run) = session.prefill_prompt(&chat.model, &prompt).unwrap();
    assert_eq!(run, 1);

    // Swap the second image for another of the same token grid (70x130 -> its mirror).
    let mut swapped = messages.clone();
    let original = swapped[2].images[0].clone();
    let mut mirrored = (*original).clone();
    let w = mirrored.width as usize;
    for row in mirrored.rgb.chunks_exact_mut(w * 3) {
        let pixels: Vec<[u8; 3]> = row
            .chunks_exact(3)
            .rev()
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        row.copy_from_slice(&pixels.concat());
    }
    mirrored.hash ^= 1;
    swapped[2].images[0] = Arc::new(mirrored);
    let other = chat
        .template
        .encode_prompt(&chat.tokenizer, &swapped, &[], Some(&processor))
        .unwrap();
    assert_eq!(other.ids, prompt.ids, "same ids, different pixels");
    let (logits, run) = session.prefill_prompt(&chat.model, &other).unwrap();
    let second = &other.images[1];
    assert_eq!(
        run,
        other.ids.len() - second.start,
        "rerun from the swapped image on"
    );
    let mut fresh = Session::new(&chat.model, 256, DType::F32).unwrap();
    let (want, _) = fresh.prefill_prompt(&chat.model, &other).unwrap();
    assert_close("swapped image logits", &logits, &want, 1e-5, 1e-5);
    let (before, _) = Session::new(&chat.model, 256, DType::F32)
        .unwrap()
        .prefill_prompt(&chat.model, &prompt)
        .unwrap();
    assert!(
        rel_rms(&before, &want) > 1e-3,
        "the image changes the logits"
    );
}

#[test]
fn images_for_a_text_model_are_refused() {
    let chat = ChatModel::load(&fixture(), &Device::Cpu, WeightType::F32, None).unwrap();
    let mut message = Message::user("hi");
    message.images.push(image("image_37x23.png"));
    let err = chat
        .template
        .encode_prompt(&chat.tokenizer, &[message], &[], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("without a vision encoder"), "{err}");
}

/// The same folder loaded text-only runs text prompts and refuses a prompt with images.
#[test]
fn a_text_only_load_of_a_mistral3_folder_refuses_images() {
    let text_only =
        kiln_llm::Mistral::load_with(&fixture(), &Device::Cpu, WeightType::F32, false).unwrap();
    assert!(text_only.vision.is_none());
    let chat = load(&Device::Cpu);
    let mut message = Message::user("hi");
    message.images.push(image("image_37x23.png"));
    let prompt = chat
        .template
        .encode_prompt(
            &chat.tokenizer,
            &[message],
            &[],
            chat.image_processor().as_ref(),
        )
        .unwrap();
    let mut session = Session::new(&text_only, 64, DType::F32).unwrap();
    let err = session
        .prefill_prompt(&text_only, &prompt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("without a vision encoder"), "{err}");
    let text = chat
        .template
        .encode(&chat.tokenizer, &[Message::user("hi")])
        .unwrap();
    session.prefill(&text_only, &text).unwrap();
}

/// The layout transformers uses inside a loaded Mistral3 (`model.vision_tower.*`,
/// `model.multi_modal_projector.*`, `model.language_model.*`, `lm_head`) loads to the same model.
#[test]
fn the_model_prefixed_layout_loads_the_same_vision_tower() {
    let dir = std::env::temp_dir().join(format!("kiln-mistral3-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "tekken.json"] {
        std::fs::copy(fixture().join(file), dir.join(file)).unwrap();
    }
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let name = if let Some(rest) = name.strip_prefix("language_model.model.") {
                format!("model.language_model.{rest}")
            } else if let Some(rest) = name.strip_prefix("language_model.") {
                rest.to_string()
            } else {
                format!("model.{name}")
            };
            (name, view)
        })
        .collect();
    safetensors::serialize_to_file(renamed, None, &dir.join("model.safetensors")).unwrap();
    let moved = ChatModel::load(&dir, &Device::Cpu, WeightType::F32, None).unwrap();
    let original = load(&Device::Cpu);
    let mut message = Message::user("hi");
    message.images.push(image("image_90x60.png"));
    let processor = original.image_processor().unwrap();
    let prompt = original
        .template
        .encode_prompt(&original.tokenizer, &[message], &[], Some(&processor))
        .unwrap();
    let encode = |chat: &ChatModel| {
        chat.model
            .vision
            .as_ref()
            .unwrap()
            .encode(&prompt.images[0].image)
            .unwrap()
            .to_vec_f32()
            .unwrap()
    };
    assert_eq!(encode(&moved), encode(&original));
    let prefill = |chat: &ChatModel| {
        Session::new(&chat.model, 64, DType::F32)
            .unwrap()
            .prefill_prompt(&chat.model, &prompt)
            .unwrap()
            .0
    };
    assert_eq!(prefill(&moved), prefill(&original));
    std::fs::remove_dir_all(dir).ok();
}

/// llama.cpp's conversion of the same model (text-f32.gguf + mmproj-f32.gguf, made by its own
/// convert_hf_to_gguf.py): the tower from the mmproj file (q/k rows read back from the
/// converter's per-head permutation) gives the folder's projected rows, and the GGUF text model
/// with it gives transformers' greedy tokens for the one-image chat.
#[test]
fn an_mmproj_file_gives_the_folders_vision_rows_and_greedy_tokens() {
    let g = Goldens::load();
    let folder = load(&Device::Cpu);
    let gguf = ChatModel::load_with_mmproj(
        &fixture().join("text-f32.gguf"),
        &Device::Cpu,
        WeightType::F32,
        None,
        &fixture().join("mmproj-f32.gguf"),
    )
    .unwrap();
    let processor = gguf.image_processor().expect("vision from the mmproj file");
    let messages = g.messages("one");
    let prompt = gguf
        .template
        .encode_prompt(&gguf.tokenizer, &messages, &[], Some(&processor))
        .unwrap();
    assert_eq!(
        prompt.ids,
        g.ids("one.input_ids"),
        "prompt ids from the GGUF tokenizer"
    );
    let rows = |chat: &ChatModel| {
        chat.model
            .vision
            .as_ref()
            .unwrap()
            .encode(&prompt.images[0].image)
            .unwrap()
            .to_vec_f32()
            .unwrap()
    };
    let err = rel_rms(&rows(&gguf), &rows(&folder));
    assert!(err <= 1e-6, "projected rows rel RMS {err}");
    let options = GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: Some(16),
        ..GenerateOptions::default()
    };
    let mut session = Session::new(&gguf.model, 256, DType::F32).unwrap();
    let generation = generate_prompt(
        &gguf.model,
        &gguf.tokenizer,
        &mut session,
        &prompt,
        &options,
        |_| Flow::Continue,
    )
    .unwrap();
    assert_eq!(generation.tokens, g.ids("one.greedy"));
}

#[test]
fn a_wrong_mmproj_file_is_refused_by_name() {
    // The text GGUF is not an mmproj file; the folder already has a tower.
    let not_mmproj = ChatModel::load_with_mmproj(
        &fixture().join("text-f32.gguf"),
        &Device::Cpu,
        WeightType::F32,
        None,
        &fixture().join("text-f32.gguf"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        not_mmproj.contains("not a Pixtral mmproj file"),
        "{not_mmproj}"
    );
    let twice = ChatModel::load_with_mmproj(
        &fixture(),
        &Device::Cpu,
        WeightType::F32,
        None,
        &fixture().join("mmproj-f32.gguf"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(twice.contains("already has a vision encoder"), "{twice}");
    // Another model's projector: its rows do not fit this text model.
    let other = std::env::temp_dir().join(format!("kiln-mmproj-{}.gguf", std::process::id()));
    let text = kiln_llm::MistralConfig::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/llm/mistral-gqa/config.json"),
    )
    .unwrap();
    std::fs::copy(fixture().join("mmproj-f32.gguf"), &other).unwrap();
    let mut wider = text.clone();
    wider.hidden_size = 96;
    let err = kiln_llm::vision::load_mmproj(&other, &wider, &Device::Cpu, WeightType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("another model"), "{err}");
    std::fs::remove_file(other).ok();
}
