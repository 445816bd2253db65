//! `kiln quantize` on an LLM folder: the sharded tiny Mistral rewritten at q8_0 keeps its shards,
//! index, config and every other file, packs exactly the Linear weights, and loads back (no
//! quantising at load) to the same logits as quantising at load.

use std::path::{Path, PathBuf};

use kiln_llm::quantize::quantize_folder;
use kiln_llm::{Logits, Mistral};
use kiln_nn::weights::WeightType;
use kiln_runtime::{DType, Device, QuantFormat};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/llm")
        .join(name)
}

fn logits(dir: &Path, weight_type: WeightType) -> Vec<f32> {
    let model = Mistral::load(dir, &Device::Cpu, weight_type).unwrap();
    let mut cache = model.new_cache(16, DType::F32).unwrap();
    model
        .forward(&[1, 5, 9, 200, 37], &mut cache, Logits::All)
        .unwrap()
        .to_vec_f32()
        .unwrap()
}

#[test]
fn a_sharded_llm_folder_quantizes_and_loads_back_packed() {
    let tmp = std::env::temp_dir().join(format!("kiln-llm-quant-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let out = tmp.join("q8");
    let input = fixture("mistral-gqa");
    let report = quantize_folder(&input, &out, QuantFormat::Q8_0).unwrap();
    // 2 layers x 6 projections (down_proj's rows, K = 112, are not whole blocks) + the head.
    assert_eq!(report.packed, 13, "{report:?}");
    assert!(report.bytes_out < report.bytes_in, "{report:?}");
    let mut files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut want: Vec<_> = std::fs::read_dir(&input)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    want.sort();
    assert_eq!(files, want);
    let packed = logits(&out, WeightType::F32);
    let at_load = logits(&input, "q8_0".parse().unwrap());
    assert_eq!(packed, at_load);

    let err = quantize_folder(&input, &out, QuantFormat::Q8_0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    let err = quantize_folder(&fixture("nope"), &tmp.join("x"), QuantFormat::Q8_0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    assert!(!tmp.join("x").exists() && !tmp.join("x.partial").exists());
    std::fs::remove_dir_all(&tmp).unwrap();
}
