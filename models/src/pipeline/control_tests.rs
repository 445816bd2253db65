//! Control modes on the tiny SD1 ControlNet of tests/fixtures/controlnet: which half of guidance
//! gets the residuals and with what factors, against the balanced run and the extension's
//! formula written out here.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::controlnet::ControlNetLoad;

fn net() -> Arc<ControlNetModel> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/controlnet/sd1-a");
    Arc::new(ControlNetModel::load(&dir, &Device::Cpu, &ControlNetLoad::dtype(DType::F32)).unwrap())
}

/// Values in [-1, 1) from a fixed integer hash (no RNG needed).
fn values(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + salt * 104_729) % 1000) as f32) / 500.0 - 1.0)
        .collect()
}

/// Each residual (down ones, then mid) as `[rows][values]`.
fn rows(r: &ControlResiduals) -> Vec<Vec<Vec<f32>>> {
    r.down
        .iter()
        .chain(std::iter::once(&r.mid))
        .map(|t| {
            let v = t.to_vec_f32().unwrap();
            v.chunks(v.len() / t.dim(0)).map(<[f32]>::to_vec).collect()
        })
        .collect()
}

fn residuals(net: &Arc<ControlNetModel>, mode: ControlMode, hires: bool) -> ControlResiduals {
    let image = RgbImage::new(
        32,
        32,
        values(32 * 32 * 3, 1)
            .iter()
            .map(|v| (v.abs() * 255.0) as u8)
            .collect(),
    )
    .unwrap();
    let unit = ControlUnit {
        model: net.clone(),
        name: "sd1-a".into(),
        hash: None,
        module: "canny".into(),
        settings: crate::preprocess::PreprocessorSettings::defaults("canny").unwrap(),
        image,
        resize: ResizeMode::JustResize,
        scale: 0.9,
        guidance_start: 0.0,
        guidance_end: 1.0,
        mode,
    };
    let dev = Device::Cpu;
    let controls = Controls::prepare(&[unit], &dev, (32, 32), 1, true, hires).unwrap();
    let x = values(4 * 16 * 16, 2);
    let timestep = Tensor::from_f32(&dev, &[1], DType::F32, &[500.0]).unwrap();
    // Unconditional row first, then the conditional one.
    let context = Tensor::from_f32(&dev, &[2, 3, 32], DType::F32, &values(2 * 3 * 32, 3)).unwrap();
    controls
        .residuals(&StepInputs {
            x: &x,
            // The tiny VAE halves the size.
            shape: [1, 4, 16, 16],
            timestep: &timestep,
            context: &context,
            added: None,
            index: 0,
            count: 1,
        })
        .unwrap()
        .unwrap()
}

fn assert_scaled(got: &[f32], base: &[f32], factor: f64, what: &str) {
    assert_eq!(got.len(), base.len(), "{what}");
    for (g, b) in got.iter().zip(base) {
        let want = (f64::from(*b) * factor) as f32;
        assert!(
            (g - want).abs() <= 1e-5 + 1e-4 * want.abs(),
            "{what}: {g} vs {want}"
        );
    }
}

#[test]
fn control_modes_scale_and_mask_the_residuals_as_the_extension_does() {
    let net = net();
    let balanced = rows(&residuals(&net, ControlMode::Balanced, false));
    let prompt = rows(&residuals(&net, ControlMode::Prompt, false));
    let control = rows(&residuals(&net, ControlMode::ControlNet, false));
    let n = balanced.len();
    assert_eq!(n, 5, "4 skip connections and the mid block");
    // The halves differ after cross-attention (the mid block), so a swapped half would show.
    assert_ne!(balanced[n - 1][0], balanced[n - 1][1]);
    for i in 0..n {
        // `0.825 ** (12 - i)`, the extension's list for SD1 cut to this net's residual count.
        let soft = 0.825f64.powi(12 - i as i32);
        for half in 0..2 {
            assert_scaled(
                &prompt[i][half],
                &balanced[i][half],
                soft,
                &format!("prompt {i}.{half}"),
            );
        }
        // cfg injection: nothing for the unconditional half, the soft residual for the other.
        assert!(
            control[i][0].iter().all(|v| *v == 0.0),
            "residual {i}: unconditional half"
        );
        assert_scaled(
            &control[i][1],
            &balanced[i][1],
            soft,
            &format!("controlnet {i}"),
        );
    }
    // In a hires pass a canny map gets the soft curve even when balanced.
    let hires = rows(&residuals(&net, ControlMode::Balanced, true));
    assert_eq!(hires, prompt);
}
