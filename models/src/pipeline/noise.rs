//! One seeded noise stream per image, as A1111 seeds a batch (seed, seed + 1, ...) and as diffusers
//! does when given one `torch.Generator` per image: every draw for the batch (VAE sampling, initial
//! latents, ancestral step noise) takes each image's share from that image's own stream, so an
//! image does not depend on its batch neighbours.

use crate::rng::{NoiseSource, RngKind};

pub struct BatchNoise {
    streams: Vec<Box<dyn NoiseSource + Send>>,
}

impl BatchNoise {
    /// One stream of `kind` per seed.
    pub fn new(kind: RngKind, seeds: &[u64]) -> BatchNoise {
        BatchNoise {
            streams: seeds.iter().map(|&s| kind.noise_source(s)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

impl NoiseSource for BatchNoise {
    /// `n` values for the whole batch: image i's `n / batch` values come from stream i, in image
    /// order. Every pipeline draw is a whole batch of latents, so `n` divides evenly; if it did
    /// not, the last image's share would be cut short to keep the length `n`.
    fn randn(&mut self, n: usize) -> Vec<f32> {
        let per = n.div_ceil(self.streams.len().max(1));
        let mut out = Vec::with_capacity(n);
        for stream in &mut self.streams {
            let take = per.min(n - out.len());
            out.extend(stream.randn(take));
        }
        out
    }
}
