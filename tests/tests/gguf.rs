//! GGUF models in stable-diffusion.cpp's layout: the original checkpoint's tensor names, Q8_0 (or
//! Q4_0) for 2-D weights whose rows are whole blocks, floats for the rest. The tiny single-file
//! checkpoints are converted to GGUF here (no real sd.cpp file is in the fixtures); the GGUF then
//! builds the same UNet and text encoders as the safetensors file with the same packing at load,
//! bit-identical outputs (ggml's Q8_0 / Q4_0 bytes are kiln's). An unsupported tensor type fails
//! naming the tensor and the type.

use std::path::{Path, PathBuf};

use kiln_kernels::quant::quantize;
use kiln_models::clip::ClipTextConfig;
use kiln_models::pipeline::StableDiffusion;
use kiln_models::single_file::SingleFile;
use kiln_models::unet::UnetConfig;
use kiln_nn::weights::GgufSource;
use kiln_runtime::gguf::write_gguf;
use kiln_runtime::loader::WeightFile;
use kiln_runtime::{DType, Device, QuantFormat, Tensor};
use kiln_tests::{fixtures, temp};
use safetensors::SafeTensors;
use std::sync::Arc;

fn temp_dir(name: &str) -> PathBuf {
    temp::empty_dir(&format!("gguf-{name}"))
}

/// Converts a single-file safetensors checkpoint to GGUF the way stable-diffusion.cpp's q8_0 / q4_0
/// conversion does; returns the path and how many tensors were packed.
fn to_gguf(variant: &str, format: QuantFormat, dir: &Path) -> (PathBuf, usize) {
    let ggml_type = match format {
        QuantFormat::Q8_0 => 8,
        _ => 2,
    };
    let file =
        WeightFile::open(fixtures().join(format!("single-file/{variant}.safetensors"))).unwrap();
    let mut tensors = Vec::new();
    let mut packed = 0;
    for name in file.names() {
        // Integer buffers (CLIP's position_ids) are kept as I64, which the reader lists but
        // never loads as a weight.
        if file.entry(name).unwrap().stored == "I64" {
            let shape = file.entry(name).unwrap().shape.clone();
            tensors.push((name, shape, 27, file.bytes(name).unwrap().to_vec()));
            continue;
        }
        let shape = file.entry(name).unwrap().shape.clone();
        let values = file
            .load(name, &Device::Cpu, Some(DType::F32))
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let pack = shape.len() == 2
            && name.ends_with("weight")
            && shape[1].is_multiple_of(32)
            && !name.contains("embedding");
        if pack {
            packed += 1;
            let bytes = quantize(format, &shape, &values).unwrap();
            tensors.push((name, shape.clone(), ggml_type, bytes));
        } else {
            tensors.push((name, shape, 0, bytemuck_f32(&values)));
        }
    }
    let path = dir.join(format!("{variant}-{format}.gguf"));
    write_gguf(&path, &tensors).unwrap();
    (path, packed)
}

fn bytemuck_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn golden(path: &Path, name: &str) -> Tensor {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    Tensor::from_bytes(&Device::Cpu, t.shape(), DType::F32, t.data()).unwrap()
}

#[test]
fn sd_cpp_style_gguf_builds_the_same_models_as_packing_at_load() {
    let dir = temp_dir("models");
    let cpu = Device::Cpu;
    for (variant, format) in [
        ("tiny-sd1", QuantFormat::Q8_0),
        ("tiny-sd2", QuantFormat::Q8_0),
        ("tiny-sd1", QuantFormat::Q4_0),
    ] {
        let q = Some(format);
        let (path, packed) = to_gguf(variant, format, &dir);
        assert!(packed > 0, "{variant}: nothing packed");
        let gguf = SingleFile::from_source(Arc::new(GgufSource::open(&path).unwrap()))
            .unwrap()
            .quantized(q);
        let st = SingleFile::open(fixtures().join(format!("single-file/{variant}.safetensors")))
            .unwrap()
            .quantized(q);
        assert_eq!(gguf.kind(), st.kind(), "{variant}");

        let te_cfg =
            ClipTextConfig::from_file(fixtures().join(variant).join("text_encoder/config.json"))
                .unwrap();
        let ids: Vec<u32> = (0..77).map(|i| (i * 13 % 1000) as u32).collect();
        let ids = Tensor::from_u32(&cpu, &[1, 77], &ids).unwrap();
        let a = gguf
            .load_text_encoder(Some(&te_cfg), &cpu, DType::F32)
            .unwrap();
        let b = st
            .load_text_encoder(Some(&te_cfg), &cpu, DType::F32)
            .unwrap();
        let (a, b) = (
            a.forward(&ids, &[], 1).unwrap(),
            b.forward(&ids, &[], 1).unwrap(),
        );
        assert!(
            a.to_vec_f32().unwrap() == b.to_vec_f32().unwrap(),
            "{variant} {format} text encoder"
        );

        let unet_dir = fixtures().join(variant).join("unet");
        let cfg = UnetConfig::from_file(unet_dir.join("config.json")).unwrap();
        let g = unet_dir.join("golden.safetensors");
        let (x, t, ctx) = (
            golden(&g, "sample"),
            golden(&g, "timesteps"),
            golden(&g, "encoder_hidden_states"),
        );
        let a = gguf.load_unet(Some(&cfg), &cpu, DType::F32).unwrap();
        let b = st.load_unet(Some(&cfg), &cpu, DType::F32).unwrap();
        let (a, b) = (
            a.forward(&x, &t, &ctx).unwrap(),
            b.forward(&x, &t, &ctx).unwrap(),
        );
        assert!(
            a.to_vec_f32().unwrap() == b.to_vec_f32().unwrap(),
            "{variant} {format} unet"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_gguf_with_an_unsupported_tensor_type_names_it() {
    let dir = temp_dir("unsupported");
    let path = dir.join("model.gguf");
    write_gguf(
        &path,
        &[
            (
                "model.diffusion_model.time_embed.0.weight",
                vec![32, 32],
                0,
                vec![0; 4096],
            ),
            (
                "model.diffusion_model.time_embed.2.weight",
                vec![1, 256],
                16,
                vec![0; 66],
            ),
        ],
    )
    .unwrap();
    let err = match StableDiffusion::load(&path, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("`model.diffusion_model.time_embed.2.weight`") && err.contains("IQ2_XXS"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}
