//! `torch.randn` on PyTorch's CPU generator, reproduced call for call.
//!
//! PyTorch (aten/src/ATen/native/cpu/DistributionTemplates.h, `normal_kernel`) fills a float32
//! tensor in one of two ways, chosen by its element count:
//! - fewer than 16 elements: one double-precision Box-Muller sample per element from two 53-bit
//!   uniforms (four 32-bit draws), keeping the pair's second value in the generator for the next
//!   scalar-path sample, even across calls;
//! - 16 or more: first one 24-bit uniform per element, then Box-Muller in float32 over blocks of 16
//!   (element j pairs with j + 8). When the count is not a multiple of 16 the last 16 elements are
//!   redrawn with 16 fresh uniforms and transformed again, overwriting the tail.
//!
//! The float32 Box-Muller uses different math functions per build: x86-64 wheels run an AVX2
//! kernel with polynomial log/sin/cos (also on AVX-512 machines), other builds call the C
//! library's `logf`/`sinf`/`cosf`. Both are offered; see [`TorchCpuFlavor`].

use super::avx_mathfun;
use super::mt19937::Mt19937;
use super::NoiseSource;

/// Which of PyTorch's float32 Box-Muller kernels to reproduce for tensors of 16+ elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TorchCpuFlavor {
    /// The AVX2 kernel every x86-64 PyTorch build uses when the CPU has AVX2 (AVX-512 machines
    /// too). Built from plain float operations, so it is bit-exact on any platform.
    #[default]
    X86Avx2,
    /// The portable kernel (aarch64 and Apple silicon builds, or `ATEN_CPU_CAPABILITY=default`).
    /// It calls the platform's `logf`/`cosf`/`sinf`, so it matches bit for bit only where this
    /// program links the same C math library as the PyTorch it is compared with.
    Portable,
}

/// `torch.Generator("cpu").manual_seed(seed)` followed by `torch.randn` calls.
#[derive(Clone)]
pub struct TorchCpuRng {
    engine: Mt19937,
    flavor: TorchCpuFlavor,
    /// The second value of the last scalar-path Box-Muller pair (torch's `next_double_normal_sample`).
    cached_normal: Option<f64>,
}

/// Tensors with at least this many elements take the vectorised float32 path.
const VECTOR_PATH_MIN: usize = 16;

impl TorchCpuRng {
    /// The generator as an x86-64 PyTorch produces it (the common case).
    pub fn new(seed: u64) -> Self {
        Self::with_flavor(seed, TorchCpuFlavor::default())
    }

    pub fn with_flavor(seed: u64, flavor: TorchCpuFlavor) -> Self {
        TorchCpuRng {
            engine: Mt19937::new(seed),
            flavor,
            cached_normal: None,
        }
    }

    /// A uniform in [0, 1) from the low 24 bits of one draw (torch's float uniform).
    fn uniform_f32(&mut self) -> f32 {
        (self.engine.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// A uniform in [0, 1) from the low 53 bits of a 64-bit draw (torch's double uniform).
    fn uniform_f64(&mut self) -> f64 {
        (self.engine.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// One sample of torch's scalar `normal_distribution<double>`.
    fn scalar_normal(&mut self) -> f64 {
        if let Some(cached) = self.cached_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let radius = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.cached_normal = Some(radius * theta.sin());
        radius * theta.cos()
    }

    /// Box-Muller over one block of 16 uniforms, in place.
    fn transform_block(&self, block: &mut [f32]) {
        for j in 0..8 {
            let u1 = 1.0 - block[j];
            let u2 = block[j + 8];
            let (cos, sin) = match self.flavor {
                TorchCpuFlavor::X86Avx2 => {
                    let radius = (-2.0 * avx_mathfun::log(u1)).sqrt();
                    let theta = TWO_PI_F32 * u2;
                    let (s, c) = avx_mathfun::sincos(theta);
                    (radius * c, radius * s)
                }
                TorchCpuFlavor::Portable => {
                    let radius = (-2.0 * u1.ln()).sqrt();
                    // The portable kernel forms the angle in double and rounds it once.
                    let theta = (2.0 * std::f64::consts::PI * u2 as f64) as f32;
                    (radius * theta.cos(), radius * theta.sin())
                }
            };
            block[j] = cos;
            block[j + 8] = sin;
        }
    }

    fn vector_path(&mut self, n: usize) -> Vec<f32> {
        let mut out: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in out.chunks_exact_mut(16) {
            self.transform_block(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut out[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            self.transform_block(tail);
        }
        out
    }
}

/// 2π rounded to float32, the constant the AVX2 kernel broadcasts.
const TWO_PI_F32: f32 = (2.0 * std::f64::consts::PI) as f32;

impl NoiseSource for TorchCpuRng {
    fn randn(&mut self, n: usize) -> Vec<f32> {
        if n >= VECTOR_PATH_MIN {
            self.vector_path(n)
        } else {
            (0..n).map(|_| self.scalar_normal() as f32).collect()
        }
    }
}
