//! The Philox4x32-10 stream of `torch.randn(..., device="cuda")`, computed on the CPU the way
//! A1111 does it (modules/rng_philox.py, its "NV" random number source), so images seeded on an
//! NVIDIA GPU in A1111 can be reproduced on any device.
//!
//! Each call `randn(n)` evaluates Philox once per element i with counter (offset, 0, i, 0) and key
//! (seed low 32 bits, seed high 32 bits), keeps the first two output words and turns them into one
//! normal sample with the sine branch of Box-Muller; the offset then grows by one per call.

use super::NoiseSource;

const MUL: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
/// Weyl sequence increments applied to the key between rounds.
const WEYL: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];
const ROUNDS: usize = 10;

/// A1111's `rng_philox.Generator(seed)`.
#[derive(Clone, Debug)]
pub struct PhiloxRng {
    seed: u64,
    offset: u32,
}

impl PhiloxRng {
    pub fn new(seed: u64) -> Self {
        PhiloxRng { seed, offset: 0 }
    }
}

/// Ten Philox rounds on one counter block.
fn philox4x32_10(mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    for round in 0..ROUNDS {
        let p0 = (ctr[0] as u64) * (MUL[0] as u64);
        let p1 = (ctr[2] as u64) * (MUL[1] as u64);
        ctr = [
            ((p1 >> 32) as u32) ^ ctr[1] ^ key[0],
            p1 as u32,
            ((p0 >> 32) as u32) ^ ctr[3] ^ key[1],
            p0 as u32,
        ];
        if round + 1 < ROUNDS {
            key[0] = key[0].wrapping_add(WEYL[0]);
            key[1] = key[1].wrapping_add(WEYL[1]);
        }
    }
    ctr
}

/// 2^-32 and 2^-32 * 2π as A1111 rounds them to float32 before use.
const TWO_POW32_INV: f32 = 2.328_306_4e-10;
const TWO_POW32_INV_2PI: f32 = (2.328_306_4e-10_f64 * 6.283_185_5) as f32;

/// A1111's `box_muller`: numpy promotes the uint32 words against the float32 constants to float64,
/// so the transform runs in double and only the result is rounded to float32.
fn box_muller(x: u32, y: u32) -> f32 {
    let scale = TWO_POW32_INV as f64;
    let scale_2pi = TWO_POW32_INV_2PI as f64;
    // Half a step is added so u is never 0 (the halving is exact in float32).
    let u = x as f64 * scale + (TWO_POW32_INV / 2.0) as f64;
    let v = y as f64 * scale_2pi + (TWO_POW32_INV_2PI / 2.0) as f64;
    let s = (-2.0 * u.ln()).sqrt();
    (s * v.sin()) as f32
}

impl NoiseSource for PhiloxRng {
    fn randn(&mut self, n: usize) -> Vec<f32> {
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        let offset = self.offset;
        self.offset = self.offset.wrapping_add(1);
        (0..n)
            .map(|i| {
                // The element index fills the third counter word (A1111 supports 2^32 elements).
                let out = philox4x32_10([offset, 0, i as u32, 0], key);
                box_muller(out[0], out[1])
            })
            .collect()
    }
}
