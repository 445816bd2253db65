//! Gaussian noise streams that reproduce the initial latents and per-step noise of the reference
//! implementations bit for bit, so a seed gives the same image as in diffusers or A1111.
//!
//! - [`TorchCpuRng`]: PyTorch's CPU generator (`torch.Generator("cpu").manual_seed(seed)` followed by
//!   `torch.randn`), the stream diffusers and A1111 use by default.
//! - [`PhiloxRng`]: the Philox4x32-10 stream of `torch.randn(..., device="cuda")` as A1111
//!   re-implements it on the CPU (its "NV" random number source).

mod avx_mathfun;
mod mt19937;
mod philox;
mod torch_cpu;

use std::fmt;
use std::str::FromStr;

pub use mt19937::Mt19937;
pub use philox::PhiloxRng;
pub use torch_cpu::{TorchCpuFlavor, TorchCpuRng};

/// A source of standard normal samples. Each call continues the stream, as consecutive
/// `torch.randn(shape, generator=g)` calls on one generator do: samplers draw their per-step noise
/// from the same source after the initial latents.
pub trait NoiseSource {
    /// The next `n` samples, as one `torch.randn` call of a tensor with `n` elements would give.
    fn randn(&mut self, n: usize) -> Vec<f32>;
}

/// Which noise stream a seed feeds (the `--rng` choice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RngKind {
    /// PyTorch's CPU mt19937 stream, as vectorised on x86-64 (AVX2/AVX-512) machines.
    TorchCpu,
    /// PyTorch's CPU stream as its portable (non-AVX2) kernel computes it: aarch64, Apple silicon.
    TorchCpuPortable,
    /// The CUDA Philox4x32-10 stream (A1111's "NV" source).
    Philox,
}

impl RngKind {
    /// The names [`FromStr`] accepts, for help texts and error messages.
    pub const NAMES: &'static [&'static str] = &["cpu", "cpu-portable", "philox"];

    /// A fresh noise stream of this kind, seeded like `manual_seed(seed)`.
    pub fn noise_source(self, seed: u64) -> Box<dyn NoiseSource + Send> {
        match self {
            RngKind::TorchCpu => Box::new(TorchCpuRng::new(seed)),
            RngKind::TorchCpuPortable => {
                Box::new(TorchCpuRng::with_flavor(seed, TorchCpuFlavor::Portable))
            }
            RngKind::Philox => Box::new(PhiloxRng::new(seed)),
        }
    }
}

/// An `--rng` value that names no known stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown random number source '{given}'; valid: {}", RngKind::NAMES.join(", "))]
pub struct UnknownRng {
    pub given: String,
}

impl FromStr for RngKind {
    type Err = UnknownRng;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Accept the spellings other front ends use for the same streams: A1111 calls the
        // Philox source "NV", sd.cpp calls it "cuda"; A1111's "CPU" is torch's CPU generator.
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" | "torch" | "torch-cpu" | "std_default" => Ok(RngKind::TorchCpu),
            "cpu-portable" | "torch-cpu-portable" => Ok(RngKind::TorchCpuPortable),
            "philox" | "nv" | "cuda" | "gpu" => Ok(RngKind::Philox),
            _ => Err(UnknownRng {
                given: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for RngKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RngKind::TorchCpu => "cpu",
            RngKind::TorchCpuPortable => "cpu-portable",
            RngKind::Philox => "philox",
        })
    }
}
