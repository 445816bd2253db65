//! A layer with adapters gives what its merged weight `W + scale * up @ down` gives (the merge is
//! the definition PEFT and diffusers' `fuse_lora` use), on the CPU backend and the GPU under test.

use std::sync::Arc;

use kiln_kernels::conv::{conv2d_padded, Padding2d};
use kiln_kernels::matmul::linear;
use kiln_kernels::testing::{assert_close, with_gpu, Rng};
use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::weights::{RandomSource, Weights};
use crate::{Conv2d, LayerWeight, Linear};

fn devices() -> Vec<Device> {
    let mut devices = vec![Device::Cpu];
    with_gpu(|gpu| devices.push(gpu.clone()));
    devices
}

fn weights(device: &Device, registry: &Arc<LoraRegistry>) -> Weights {
    let w = Weights::from_source(Arc::new(RandomSource::new("lora", 7)), device, DType::F32);
    w.pp("model").with_lora(registry.clone())
}

fn delta(rng: &mut Rng, down: &[usize], up: &[usize], scale: f32) -> LoraDelta {
    let n = |s: &[usize]| s.iter().product::<usize>();
    LoraDelta {
        down: rng.normals(n(down)).iter().map(|v| v * 0.3).collect(),
        down_shape: down.to_vec(),
        up: rng.normals(n(up)).iter().map(|v| v * 0.3).collect(),
        up_shape: up.to_vec(),
        scale,
    }
}

/// `w + sum scale * up @ down` on the host, `w` as `[out, rest]`.
fn merged(w: &[f32], out: usize, deltas: &[&LoraDelta]) -> Vec<f32> {
    let rest = w.len() / out;
    let mut m = w.to_vec();
    for d in deltas {
        let r = d.down_shape[0];
        for o in 0..out {
            for j in 0..rest {
                let s: f32 = (0..r).map(|k| d.up[o * r + k] * d.down[k * rest + j]).sum();
                m[o * rest + j] += d.scale * s;
            }
        }
    }
    m
}

fn float(w: &LayerWeight) -> &Tensor {
    match w {
        LayerWeight::Float(t) => t,
        LayerWeight::Packed(_) => panic!("float weights expected"),
    }
}

/// Two adapters on a Linear (one stored as a 1x1 conv's 4-D shapes) match the merged weight within
/// f32 rounding (1e-4 on O(1) outputs); cleared, the layer gives its base output exactly.
#[test]
fn linear_with_adapters_matches_merged_weight() {
    for device in devices() {
        let registry = LoraRegistry::new();
        let layer = Linear::new(&weights(&device, &registry).pp("proj"), 12, 10, true).unwrap();
        assert_eq!(registry.names(), ["proj"]);
        let mut rng = Rng::new(3);
        let a = delta(&mut rng, &[4, 12], &[10, 4], 0.75);
        let b = delta(&mut rng, &[2, 12, 1, 1], &[10, 2, 1, 1], -1.5);
        let x = Tensor::from_f32(&device, &[2, 3, 12], DType::F32, &rng.normals(72)).unwrap();
        let base = layer.forward(&x).unwrap().to_vec_f32().unwrap();
        let slot = registry.slot("proj").unwrap();
        slot.push(&a).unwrap();
        slot.push(&b).unwrap();
        assert_eq!(registry.active_layers(), 1);
        let got = layer.forward(&x).unwrap().to_vec_f32().unwrap();
        let w = float(&layer.weight).to_vec_f32().unwrap();
        let m = Tensor::from_f32(&device, &[10, 12], DType::F32, &merged(&w, 10, &[&a, &b]));
        let want = linear(&x, &m.unwrap(), layer.bias.as_ref()).unwrap();
        let name = format!("{} linear lora", device.name());
        assert_close(&name, &got, &want.to_vec_f32().unwrap(), 1e-4, 1e-4);
        registry.clear();
        assert_eq!(layer.forward(&x).unwrap().to_vec_f32().unwrap(), base);
    }
}

/// A LoCon adapter (3x3 down, 1x1 up) on a stride-2 padded convolution matches the merged kernel.
#[test]
fn conv_with_locon_matches_merged_kernel() {
    for device in devices() {
        let registry = LoraRegistry::new();
        let conv = Conv2d::new(&weights(&device, &registry).pp("conv"), 3, 5, 3, 2, 1).unwrap();
        let mut rng = Rng::new(9);
        let d = delta(&mut rng, &[2, 3, 3, 3], &[5, 2, 1, 1], 0.5);
        registry.slot("conv").unwrap().push(&d).unwrap();
        let x = Tensor::from_f32(&device, &[1, 3, 7, 6], DType::F32, &rng.normals(126)).unwrap();
        let got = conv.forward(&x).unwrap();
        let w = float(&conv.weight).to_vec_f32().unwrap();
        let m = Tensor::from_f32(&device, &[5, 3, 3, 3], DType::F32, &merged(&w, 5, &[&d]));
        let pad = Padding2d::symmetric(1, 1);
        let want = conv2d_padded(&x, &m.unwrap(), conv.bias.as_ref(), [2, 2], pad).unwrap();
        assert_eq!(got.shape(), want.shape());
        let name = format!("{} conv locon", device.name());
        let (got, want) = (got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
        assert_close(&name, &got, &want, 1e-4, 1e-4);
    }
}

/// Shapes that do not fit the layer are refused naming the module and both shapes; nothing is
/// added to the slot.
#[test]
fn misfit_adapters_are_refused() {
    let registry = LoraRegistry::new();
    let _layer = Linear::new(&weights(&Device::Cpu, &registry).pp("q"), 8, 6, false).unwrap();
    let _conv = Conv2d::new(&weights(&Device::Cpu, &registry).pp("c"), 2, 4, 3, 1, 1).unwrap();
    let mut rng = Rng::new(1);
    let slot = registry.slot("q").unwrap();
    for (down, up) in [
        (vec![4, 9], vec![6, 4]),
        (vec![4, 8], vec![7, 4]),
        (vec![4, 8], vec![6, 3]),
        (vec![4, 8, 3, 3], vec![6, 4, 1, 1]),
    ] {
        let err = slot.push(&delta(&mut rng, &down, &up, 1.0)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`q`") && msg.contains(&format!("{down:?}")),
            "{msg}"
        );
    }
    assert!(slot.is_empty());
    let conv = registry.slot("c").unwrap();
    let err = conv.push(&delta(&mut rng, &[2, 2, 1, 1], &[4, 2, 1, 1], 1.0));
    assert!(err.unwrap_err().to_string().contains("kernel 3"));
    conv.push(&delta(&mut rng, &[2, 2, 3, 3], &[4, 2, 1, 1], 1.0))
        .unwrap();
}

/// A layer built twice (a streamed UNet block) keeps one slot, so adapters set once reach both.
#[test]
fn rebuilt_layer_shares_its_slot() {
    let registry = LoraRegistry::new();
    let w = weights(&Device::Cpu, &registry).pp("blk");
    let a = Linear::new(&w, 4, 4, false).unwrap();
    let b = Linear::new(&w, 4, 4, false).unwrap();
    assert!(Arc::ptr_eq(
        a.lora.as_ref().unwrap(),
        b.lora.as_ref().unwrap()
    ));
    assert_eq!(registry.names(), ["blk"]);
    let plain = Weights::from_source(
        Arc::new(RandomSource::new("x", 1)),
        &Device::Cpu,
        DType::F32,
    );
    assert!(Linear::new(&plain, 4, 4, false).unwrap().lora.is_none());
}

/// On a packed (q8_0) Linear the weight stays packed and the adapter adds exactly its own
/// product: (packed + adapter) - packed = x (scale up down)^T, computed apart in f32.
#[test]
fn packed_linear_keeps_its_blocks_and_adds_the_delta() {
    for device in devices() {
        let registry = LoraRegistry::new();
        let w = weights(&device, &registry).quantized(Some(kiln_runtime::QuantFormat::Q8_0));
        let layer = Linear::new(&w.pp("q"), 64, 6, true).unwrap();
        assert!(matches!(layer.weight, LayerWeight::Packed(_)));
        let mut rng = Rng::new(5);
        let d = delta(&mut rng, &[3, 64], &[6, 3], 0.8);
        let x = Tensor::from_f32(&device, &[4, 64], DType::F32, &rng.normals(256)).unwrap();
        let base = layer.forward(&x).unwrap().to_vec_f32().unwrap();
        registry.slot("q").unwrap().push(&d).unwrap();
        let got = layer.forward(&x).unwrap().to_vec_f32().unwrap();
        let zero = vec![0.0; 6 * 64];
        let m = Tensor::from_f32(&device, &[6, 64], DType::F32, &merged(&zero, 6, &[&d])).unwrap();
        let want = linear(&x, &m, None).unwrap().to_vec_f32().unwrap();
        let added: Vec<f32> = got.iter().zip(&base).map(|(g, b)| g - b).collect();
        let name = format!("{} packed linear lora", device.name());
        assert_close(&name, &added, &want, 1e-4, 1e-4);
    }
}
