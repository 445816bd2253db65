//! CLIP text encoders against transformers' CLIPTextModel (fixtures from tools/make_clip_fixtures.py):
//! tiny-sd1 (quick_gelu, hub layout with the `text_model.` prefix, legacy eos_token_id 2 so the
//! pooled token is argmax(ids)) and tiny-sd2 (gelu, transformers 5 layout without the prefix, pooled
//! at the first EOS). Goldens were computed in float64 from the f32 weights.
//!
//! Tolerances (outputs are LayerNorm outputs of magnitude ~1-4):
//! - f32, CPU and GPU: |err| <= 1e-4 + 1e-4 |want|.
//! - f16 weights and activations on the GPU: |err| <= 2e-2 + 1e-2 |want| (f16 keeps 11 bits; three
//!   layers of rounding, LayerNorm and softmax; llvmpipe measured <= 8.6e-3, f32 <= 3e-6).

use std::path::{Path, PathBuf};

use kiln_kernels::testing::{assert_close, with_gpu};
use kiln_models::clip::{ClipTextConfig, ClipTextModel};
use kiln_nn::weights::Weights;
use kiln_runtime::loader::{write_safetensors, WeightFile};
use kiln_runtime::{DType, Device, Tensor};
use kiln_tests::golden::{f32s, max_err};
use kiln_tests::{fixtures, temp, with_f16_gpu};
use safetensors::{Dtype, SafeTensors};

const F32_TOL: (f32, f32) = (1e-4, 1e-4);
const F16_TOL: (f32, f32) = (2e-2, 1e-2);

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name).join("text_encoder")
}

struct Golden {
    ids: Vec<u32>,
    shape: [usize; 2],
    last: Vec<f32>,
    penultimate: Vec<f32>,
    pooled: Vec<f32>,
}

fn golden(dir: &Path) -> Golden {
    let bytes = std::fs::read(dir.join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: &str| -> Vec<f32> {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        f32s(t.data())
    };
    let ids = st.tensor("input_ids").unwrap();
    assert_eq!(ids.dtype(), Dtype::I64);
    let shape = [ids.shape()[0], ids.shape()[1]];
    let ids = ids
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    Golden {
        ids,
        shape,
        last: f32s("last_hidden_state"),
        penultimate: f32s("penultimate"),
        pooled: f32s("pooled"),
    }
}

fn load(
    dir: &Path,
    weights_file: &Path,
    device: &Device,
    dtype: DType,
) -> kiln_runtime::Result<ClipTextModel> {
    let cfg = ClipTextConfig::from_file(dir.join("config.json"))?;
    let weights = Weights::new(vec![WeightFile::open(weights_file)?], device, dtype);
    ClipTextModel::new(&cfg, &weights)
}

/// Runs clip skip 1 and 2 and the pooled output on `device` and compares all three with the golden.
fn check(name: &str, device: &Device, dtype: DType, (atol, rtol): (f32, f32)) {
    let dir = fixture(name);
    let g = golden(&dir);
    let model = load(&dir, &dir.join("model.safetensors"), device, dtype).unwrap();
    assert_eq!(model.dtype(), device.float_dtype(dtype));
    let ids = Tensor::from_u32(&Device::Cpu, &g.shape, &g.ids).unwrap();
    let hidden = model.config().hidden_size;

    let last = model.forward(&ids, &[], 1).unwrap();
    assert_eq!(last.shape(), [g.shape[0], g.shape[1], hidden]);
    let penultimate = model.forward(&ids, &[], 2).unwrap();
    let out = model.forward_with_pooled(&ids, &[], 2).unwrap();
    assert_eq!(out.pooled.shape(), [g.shape[0], hidden]);
    let pooled_last = model.forward_with_pooled(&ids, &[], 1).unwrap();

    let what = |o: &str| format!("{name} {} {dtype:?} {o}", device.name());
    for (o, got, want) in [
        ("last_hidden_state", &last, &g.last),
        ("penultimate", &penultimate, &g.penultimate),
        (
            "forward_with_pooled(2).hidden_states",
            &out.hidden_states,
            &g.penultimate,
        ),
        ("pooled (clip skip 2)", &out.pooled, &g.pooled),
        (
            "forward_with_pooled(1).hidden_states",
            &pooled_last.hidden_states,
            &g.last,
        ),
        ("pooled (clip skip 1)", &pooled_last.pooled, &g.pooled),
    ] {
        let got = got.to_vec_f32().unwrap();
        eprintln!("{}: max |err| {:e}", what(o), max_err(&got, want));
        assert_close(&what(o), &got, want, atol, rtol);
    }
}

#[test]
fn sd1_quick_gelu_matches_transformers_on_cpu() {
    check("tiny-sd1", &Device::Cpu, DType::F32, F32_TOL);
}

#[test]
fn sd2_gelu_matches_transformers_on_cpu() {
    check("tiny-sd2", &Device::Cpu, DType::F32, F32_TOL);
}

#[test]
fn matches_transformers_on_gpu_f32() {
    with_gpu(|gpu| {
        check("tiny-sd1", gpu, DType::F32, F32_TOL);
        check("tiny-sd2", gpu, DType::F32, F32_TOL);
    });
}

#[test]
fn matches_transformers_on_gpu_f16() {
    with_f16_gpu(|gpu| {
        check("tiny-sd1", gpu, DType::F16, F16_TOL);
        check("tiny-sd2", gpu, DType::F16, F16_TOL);
    });
}

#[test]
fn ids_on_the_gpu_give_the_same_result() {
    with_gpu(|gpu| {
        let dir = fixture("tiny-sd2");
        let g = golden(&dir);
        let model = load(&dir, &dir.join("model.safetensors"), gpu, DType::F32).unwrap();
        let ids = Tensor::from_u32(gpu, &g.shape, &g.ids).unwrap();
        let out = model.forward_with_pooled(&ids, &[], 1).unwrap();
        let (atol, rtol) = F32_TOL;
        assert_close(
            "pooled, gpu ids",
            &out.pooled.to_vec_f32().unwrap(),
            &g.pooled,
            atol,
            rtol,
        );
    });
}

fn temp_dir() -> PathBuf {
    temp::dir("clip")
}

/// A copy of `src` with tensor `name` replaced by zeros of `shape`.
fn with_reshaped(src: &Path, dst: &Path, name: &str, shape: &[usize]) {
    let bytes = std::fs::read(src).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            if n == name {
                let len = shape.iter().product::<usize>() * 4;
                (n, Dtype::F32, shape.to_vec(), vec![0; len])
            } else {
                (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())
            }
        })
        .collect();
    let tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    write_safetensors(dst, &tensors).unwrap();
}

#[test]
fn wrong_shaped_weight_is_named_with_both_shapes() {
    // The load error of `variant`'s text encoder with tensor `name` stored as `shape`.
    let reshaped = |variant: &str, file: &str, name: &str, shape: &[usize]| {
        let dir = fixture(variant);
        let bad = temp_dir().join(file);
        with_reshaped(&dir.join("model.safetensors"), &bad, name, shape);
        load(&dir, &bad, &Device::Cpu, DType::F32)
            .err()
            .unwrap()
            .to_string()
    };
    let name = "encoder.layers.1.mlp.fc1.weight";
    let err = reshaped("tiny-sd2", "wrong_fc1.safetensors", name, &[32, 37]);
    assert!(err.contains(name), "{err}");
    assert!(
        err.contains("[32, 37]") && err.contains("expected [37, 32]"),
        "{err}"
    );

    // The same in the prefixed (hub) layout names the full tensor.
    let name = "text_model.embeddings.position_embedding.weight";
    let err = reshaped("tiny-sd1", "wrong_pos.safetensors", name, &[76, 32]);
    assert!(err.contains(name), "{err}");
    assert!(
        err.contains("[76, 32]") && err.contains("expected [77, 32]"),
        "{err}"
    );
}

#[test]
fn missing_layer_is_named() {
    let dir = fixture("tiny-sd2");
    let mut cfg = ClipTextConfig::from_file(dir.join("config.json")).unwrap();
    cfg.num_hidden_layers += 1;
    let file = WeightFile::open(dir.join("model.safetensors")).unwrap();
    let weights = Weights::new(vec![file], &Device::Cpu, DType::F32);
    let err = ClipTextModel::new(&cfg, &weights)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("encoder.layers.3."), "{err}");
}

#[test]
fn bad_ids_and_clip_skip_are_errors() {
    let dir = fixture("tiny-sd1");
    let model = load(
        &dir,
        &dir.join("model.safetensors"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let cpu = Device::Cpu;
    let ids = |shape: &[usize]| {
        let n = shape.iter().product::<usize>();
        Tensor::from_u32(&cpu, shape, &vec![5; n]).unwrap()
    };
    for shape in [&[77][..], &[1, 78], &[2, 1, 77], &[0, 77]] {
        let err = model
            .forward(&ids(shape), &[], 1)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("{shape:?}")) && err.contains("[B, L]"),
            "{err}"
        );
    }
    // Shorter than 77 is fine (transformers allows any length up to max_position_embeddings).
    assert_eq!(
        model.forward(&ids(&[1, 10]), &[], 1).unwrap().shape(),
        [1, 10, 32]
    );

    let floats = Tensor::from_f32(&cpu, &[1, 77], DType::F32, &[0.0; 77]).unwrap();
    let err = model.forward(&floats, &[], 1).err().unwrap().to_string();
    assert!(err.contains("u32"), "{err}");

    let mut out_of_vocab = vec![5u32; 77];
    out_of_vocab[3] = 1000;
    let t = Tensor::from_u32(&cpu, &[1, 77], &out_of_vocab).unwrap();
    let err = model.forward(&t, &[], 1).err().unwrap().to_string();
    assert!(
        err.contains("ids[0][3] = 1000") && err.contains("vocab_size"),
        "{err}"
    );

    for skip in [0, 4] {
        let err = model
            .forward(&ids(&[1, 77]), &[], skip)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(&format!("clip_skip {skip}")), "{err}");
    }
}

#[test]
fn config_errors_name_the_field() {
    let base = std::fs::read_to_string(fixture("tiny-sd1").join("config.json")).unwrap();
    let relu = base.replace("\"quick_gelu\"", "\"relu\"");
    let err = ClipTextConfig::from_json(&relu, "config.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("relu") && err.contains("quick_gelu"), "{err}");
    let heads = base.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5");
    let err = ClipTextConfig::from_json(&heads, "config.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("num_attention_heads"), "{err}");
    // Absent fields take CLIPTextConfig's defaults.
    let cfg = ClipTextConfig::from_json("{\"hidden_act\": \"gelu\"}", "config.json").unwrap();
    assert_eq!(
        (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers),
        (49408, 512, 12)
    );
}
