//! A source that answers every lookup with random values of the shape the builder expects: a model of
//! a real architecture (SD 1.5's config) with no checkpoint, for benchmarks and memory plans.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_runtime::{DType, Device, Error, Result, Tensor};

use super::source::TensorSource;

/// Random weights in the range PyTorch's default initialisation uses (uniform in +-1/sqrt(fan_in)),
/// so activations stay finite through a deep network in f16 as they do in a real checkpoint.
pub struct RandomSource {
    origin: PathBuf,
    seed: AtomicU64,
}

impl RandomSource {
    /// `origin` names the source in errors (e.g. "random SD 1.5 UNet").
    pub fn new(origin: impl Into<PathBuf>, seed: u64) -> RandomSource {
        RandomSource {
            origin: origin.into(),
            seed: AtomicU64::new(seed),
        }
    }

    fn values(&self, name: &str, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        // Norm scales near 1; everything else around 0, scaled by the fan-in of a matrix or kernel.
        let (centre, bound) = match shape {
            [_] if name.contains("norm") && name.ends_with("weight") => (1.0, 0.1),
            [_] => (0.0, 0.05),
            [_, rest @ ..] => (0.0, 1.0 / (rest.iter().product::<usize>() as f32).sqrt()),
            [] => (0.0, 0.05),
        };
        let mut state = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            | 1;
        (0..n)
            .map(|_| {
                // xorshift64*: fast and plenty for weights nobody reads.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let bits = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
                let unit = bits as f32 / (1u64 << 24) as f32;
                centre + bound * (2.0 * unit - 1.0)
            })
            .collect()
    }
}

impl TensorSource for RandomSource {
    fn origin(&self) -> PathBuf {
        self.origin.clone()
    }

    /// Unknown: the source has no names of its own, so optional and legacy-named tensors read as
    /// absent and builders take their current-diffusers path.
    fn shape_of(&self, _name: &str) -> Option<Vec<usize>> {
        None
    }

    fn load(
        &self,
        name: &str,
        expected: Option<&[usize]>,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let shape = expected.ok_or_else(|| {
            Error::load(
                self.origin(),
                format!("tensor `{name}` was asked for without a shape; random weights need one"),
            )
        })?;
        let dtype = if device.supports(dtype) {
            dtype
        } else {
            DType::F32
        };
        Tensor::from_f32(device, shape, dtype, &self.values(name, shape))
    }

    fn load_part(
        &self,
        name: &str,
        _offset: usize,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        self.load(name, Some(shape), device, dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_expected_shape_and_range() {
        let source = RandomSource::new("random", 7);
        let t = source
            .load("a.weight", Some(&[8, 4, 3, 3]), &Device::Cpu, DType::F32)
            .unwrap();
        assert_eq!(t.shape(), [8, 4, 3, 3]);
        let v = t.to_vec_f32().unwrap();
        let bound = 1.0 / 6.0;
        assert!(v.iter().all(|x| x.abs() <= bound), "fan-in bound");
        assert!(v.iter().any(|&x| x > bound / 2.0) && v.iter().any(|&x| x < -bound / 2.0));
        let norm = source
            .load("norm1.weight", Some(&[16]), &Device::Cpu, DType::F16)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        assert!(norm.iter().all(|x| (0.89..=1.11).contains(x)), "{norm:?}");
        // Two lookups give different values.
        let again = source
            .load("a.weight", Some(&[8, 4, 3, 3]), &Device::Cpu, DType::F32)
            .unwrap();
        assert_ne!(again.to_vec_f32().unwrap(), v);
        assert!(source.load("x", None, &Device::Cpu, DType::F32).is_err());
    }
}
