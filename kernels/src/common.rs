//! Guards and helpers shared by the op launchers.

use kiln_runtime::gpu::GpuContext;
use kiln_runtime::{DType, Device, Error, Result, Tensor};
use std::sync::Arc;

/// All tensors must live on one device; returns it.
pub fn same_device<'a>(op: &str, tensors: &[(&str, &'a Tensor)]) -> Result<&'a Device> {
    let (first_name, first) = tensors[0];
    for (name, t) in &tensors[1..] {
        if t.device() != first.device() {
            return Err(Error::Device(format!(
                "{op}: `{first_name}` is on {} but `{name}` is on {}",
                first.device().name(),
                t.device().name()
            )));
        }
    }
    Ok(first.device())
}

/// All tensors must share one float dtype; returns it.
pub fn same_float_dtype(op: &str, tensors: &[(&str, &Tensor)]) -> Result<DType> {
    let dtype = tensors[0].1.dtype();
    if !dtype.is_float() {
        return Err(Error::dtype(
            op,
            format!("{dtype} for `{}` (f32 or f16 expected)", tensors[0].0),
        ));
    }
    for (name, t) in &tensors[1..] {
        if t.dtype() != dtype {
            return Err(Error::dtype(
                op,
                format!(
                    "mix of {dtype} (`{}`) and {} (`{name}`)",
                    tensors[0].0,
                    t.dtype()
                ),
            ));
        }
    }
    Ok(dtype)
}

/// Rejects tensors with a zero-size dimension, which no op here gives meaning to.
pub fn non_empty(op: &str, tensors: &[(&str, &Tensor)]) -> Result<()> {
    for (name, t) in tensors {
        if t.numel() == 0 {
            return Err(Error::shape(
                op,
                format!("`{name}` has zero-size shape {:?}", t.shape()),
            ));
        }
    }
    Ok(())
}

/// Requires a given rank.
pub fn rank(op: &str, name: &str, t: &Tensor, expected: usize) -> Result<()> {
    if t.rank() != expected {
        return Err(Error::shape(
            op,
            format!(
                "`{name}` must have rank {expected}, got shape {:?}",
                t.shape()
            ),
        ));
    }
    Ok(())
}

/// The GPU context of a device, for launchers that already matched on it.
pub fn gpu(device: &Device) -> Option<&Arc<GpuContext>> {
    match device {
        Device::Gpu(ctx) => Some(ctx),
        Device::Cpu => None,
    }
}

/// Builds a uniform parameter block: 4-byte scalars in declaration order, as the WGSL struct lays them
/// out when it contains only u32/f32 fields (and vec4s at 16-byte boundaries).
#[derive(Default)]
pub struct Params(Vec<u8>);

impl Params {
    pub fn new() -> Self {
        Params(Vec::with_capacity(64))
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn f32(mut self, v: f32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Pads to the next 16-byte boundary, where WGSL places a following vec4 or array.
    pub fn align16(mut self) -> Self {
        self.0.resize(self.0.len().next_multiple_of(16), 0);
        self
    }
    /// Converts a usize to the u32 kernels index with, failing if it does not fit.
    pub fn dim(self, op: &str, v: usize) -> Result<Self> {
        let v =
            u32::try_from(v).map_err(|_| Error::limit(op, format!("dimension {v} exceeds u32")))?;
        Ok(self.u32(v))
    }
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Converts f32 results to the output dtype for CPU-backend ops that compute in f32.
pub fn cpu_output(shape: &[usize], dtype: DType, values: Vec<f32>) -> Result<Tensor> {
    use half::f16;
    use kiln_runtime::CpuData;
    let data = match dtype {
        DType::F32 => CpuData::F32(values),
        DType::F16 => CpuData::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
        DType::U32 => return Err(Error::dtype("cpu op", "u32 output")),
    };
    Tensor::from_cpu_data(data, shape)
}

/// A CPU tensor's values widened to f32 (borrowed when already f32).
pub fn cpu_f32(t: &Tensor) -> Result<std::borrow::Cow<'_, [f32]>> {
    use kiln_runtime::CpuData;
    match t.cpu_data() {
        Some(CpuData::F32(v)) => Ok(std::borrow::Cow::Borrowed(v)),
        Some(CpuData::F16(v)) => Ok(std::borrow::Cow::Owned(
            v.iter().map(|h| h.to_f32()).collect(),
        )),
        Some(CpuData::U32(_)) => Err(Error::dtype(
            "cpu op",
            "u32 input where floats are expected",
        )),
        None => Err(Error::Device("cpu op given a GPU tensor".into())),
    }
}

/// Total workgroups for `n` items at `per_group` items each.
pub fn groups_for(n: usize, per_group: usize) -> u64 {
    n.div_ceil(per_group) as u64
}

/// Sum of `f(x)` over `values` in f64, in eight independent lanes so the loop vectorises (the CPU
/// backend's norm statistics and softmax denominators).
pub fn lane_sum(values: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += f(v as f64);
        }
    }
    lanes.iter().sum::<f64>() + chunks.remainder().iter().map(|&v| f(v as f64)).sum::<f64>()
}

/// exp(x) within 2 ulp of `f32::exp`, branch-free so that loops over it vectorise (the CPU backend's
/// softmax, SiLU and GELU): x = n ln2 + r with |r| <= ln2 / 2, exp(r) by a degree-6 polynomial and
/// 2^n built in the exponent bits. Below -87 the result is 0, above 88.7 infinity.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a rounding instruction.
    const ROUND: f32 = 12_582_912.0;
    let clamped = if x > -87.0 { x } else { -87.0 };
    let clamped = if clamped < 88.0 { clamped } else { 88.0 };
    let shifted = clamped * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    // n as an integer is in the low mantissa bits of `shifted`: integer ops only, which vectorise
    // (a float-to-int `as` saturates and does not).
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    if x < -87.0 {
        0.0
    } else if x > 88.7 {
        f32::INFINITY
    } else {
        // Between 88 and 88.7 the clamp lost accuracy: take the library's value (rare).
        let y = p * scale;
        if x > 88.0 {
            x.exp()
        } else {
            y
        }
    }
}

#[cfg(test)]
mod fast_exp_tests {
    use super::fast_exp;

    #[test]
    fn fast_exp_matches_the_standard_library() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x <= 88.7 {
            let (got, want) = (fast_exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.003_7;
        }
        assert!(worst <= 3e-7, "worst relative error {worst}");
        assert_eq!(fast_exp(0.0), 1.0);
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp(-1000.0), 0.0);
        assert_eq!(fast_exp(100.0), f32::INFINITY);
    }
}
