//! Shared pieces of the kernel test suites and benchmarks: the GPU under test, deterministic random
//! data, and comparison with stated tolerances.
//!
//! The GPU is chosen with `KILN_TEST_DEVICE=gpu:N`; by default the best hardware adapter, else the first
//! adapter (on a CPU-only machine, Mesa's llvmpipe). With `CI=true` a missing adapter fails the test.

use std::sync::OnceLock;

use kiln_runtime::adapters;
use kiln_runtime::{DType, Device, DeviceChoice, Tensor};

/// The adapter under test, opened once per process and shared by every test thread.
pub fn gpu() -> Option<Device> {
    static DEVICE: OnceLock<Option<Device>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let index = match std::env::var("KILN_TEST_DEVICE") {
                Ok(v) => match v.parse::<DeviceChoice>() {
                    Ok(DeviceChoice::Gpu(i)) => Some(i),
                    _ => panic!("KILN_TEST_DEVICE must be gpu:N, got `{v}`"),
                },
                Err(_) => adapters::best_hardware_adapter()
                    .or_else(|| (!adapters::adapters().is_empty()).then_some(0)),
            };
            let opened = index.map(|i| {
                Device::open_gpu(i, Default::default())
                    .unwrap_or_else(|e| panic!("cannot open the GPU under test gpu:{i}: {e}"))
            });
            if opened.is_none() {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("CI=true but no GPU adapter was found: install mesa-vulkan-drivers");
                }
                eprintln!(
                    "no GPU adapter: GPU kernel tests are skipped (set CI=true to fail instead)"
                );
            }
            opened
        })
        .clone()
}

/// Runs `body` on the GPU under test, if there is one (see `gpu`).
pub fn with_gpu(body: impl FnOnce(&Device)) {
    if let Some(device) = gpu() {
        body(&device);
    }
}

/// A small deterministic generator (SplitMix64) so tests need no RNG crate and repeat exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }

    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

/// A random normal tensor on the CPU and the same values on `device`. For f16 the values are rounded
/// first, so both sides see identical inputs.
pub fn random_pair(device: &Device, shape: &[usize], dtype: DType, seed: u64) -> (Tensor, Tensor) {
    let n: usize = shape.iter().product();
    let values = Rng::new(seed).normals(n);
    let cpu = Tensor::from_f32(&Device::Cpu, shape, dtype, &values).expect("cpu tensor");
    let dev = cpu.to_device(device).expect("upload");
    (cpu, dev)
}

/// Default tolerance for a dtype: (absolute, relative). f16 keeps 11 significant bits.
pub fn tolerance(dtype: DType) -> (f32, f32) {
    match dtype {
        DType::F16 => (2e-2, 1e-2),
        _ => (1e-4, 1e-4),
    }
}

/// `||got - want|| / ||want||` over all elements: the error of a lossy path (quantised weights or
/// activations) as one number.
pub fn rel_rms(got: &[f32], want: &[f32]) -> f32 {
    let err: f32 = got.iter().zip(want).map(|(g, w)| (g - w).powi(2)).sum();
    let norm: f32 = want.iter().map(|w| w * w).sum();
    (err / norm).sqrt()
}

/// Asserts |got - want| <= atol + rtol * |want| everywhere, naming the first offending index.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let bound = atol + rtol * w.abs();
        // NaN compares false either way, so test for it explicitly.
        if err.is_nan() || err > bound {
            panic!("{what}: element {i}: got {g}, want {w} (|err| {err} > {bound}; atol {atol}, rtol {rtol})");
        }
    }
}

/// Compares a device result with the CPU reference at the dtype's default tolerance.
pub fn assert_tensors_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtypes differ");
    let (atol, rtol) = tolerance(want.dtype());
    assert_close(
        what,
        &got.to_vec_f32().unwrap(),
        &want.to_vec_f32().unwrap(),
        atol,
        rtol,
    );
}
