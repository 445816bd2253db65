//! The Brownian noise of DPM++ SDE: torchsde's `BrownianInterval` (halfway tree, tolerance 1e-6,
//! pool size 24, no Lévy area), as diffusers' `BrownianTreeNoiseSampler` builds it from a seed,
//! reproduced operation for operation so a seed gives diffusers' increments.
//!
//! The interval [t0, t1] is a binary tree split at (rounded) halves. The root holds
//! W(t0, t1) = randn * sqrt(t1 - t0); a child's increment is a Brownian bridge sample from its
//! parent's, drawn with `torch.randn` on a generator seeded from numpy's `SeedSequence` of
//! (seed, node's spawn key, depth). A query W(ta, tb) splits the tree down to ta and tb and sums
//! the increments of the nodes that cover [ta, tb], so the tree's shape (and thus the float32
//! rounding of the sum) follows the order of queries, as in torchsde.

use super::error::SchedulerError;
use crate::rng::{NoiseSource, TorchCpuRng};

/// torchsde rounds every time to 6 decimals (tol = 1e-6).
fn round6(x: f64) -> f64 {
    format!("{x:.6}").parse().unwrap_or(x)
}

/// numpy's `SeedSequence(entropy, spawn_key, pool_size=24).generate_state(n)`.
pub(crate) fn seed_sequence(entropy: u64, spawn_key: &[u64], n: usize) -> Vec<u32> {
    const POOL: usize = 24;
    const INIT_A: u32 = 0x43b0_d7e5;
    const MULT_A: u32 = 0x931e_8875;
    const INIT_B: u32 = 0x8b51_f9dd;
    const MULT_B: u32 = 0x58f3_8ded;
    const MIX_L: u32 = 0xca01_f9dd;
    const MIX_R: u32 = 0x4973_f715;
    fn words(mut v: u64, out: &mut Vec<u32>) {
        if v == 0 {
            out.push(0);
        }
        while v > 0 {
            out.push(v as u32);
            v >>= 32;
        }
    }
    let mut entropy_words = Vec::new();
    words(entropy, &mut entropy_words);
    if !spawn_key.is_empty() && entropy_words.len() < POOL {
        entropy_words.resize(POOL, 0);
    }
    for &k in spawn_key {
        words(k, &mut entropy_words);
    }
    let mut hash_const = INIT_A;
    let mut hashmix = |v: u32| {
        let mut v = v ^ hash_const;
        hash_const = hash_const.wrapping_mul(MULT_A);
        v = v.wrapping_mul(hash_const);
        v ^ (v >> 16)
    };
    let mix = |x: u32, y: u32| {
        let r = MIX_L.wrapping_mul(x).wrapping_sub(MIX_R.wrapping_mul(y));
        r ^ (r >> 16)
    };
    let mut pool = [0u32; POOL];
    for (i, p) in pool.iter_mut().enumerate() {
        *p = hashmix(entropy_words.get(i).copied().unwrap_or(0));
    }
    for src in 0..POOL {
        for dst in 0..POOL {
            if src != dst {
                let h = hashmix(pool[src]);
                pool[dst] = mix(pool[dst], h);
            }
        }
    }
    for &w in entropy_words.iter().skip(POOL) {
        for p in pool.iter_mut() {
            let h = hashmix(w);
            *p = mix(*p, h);
        }
    }
    let mut hash_const = INIT_B;
    (0..n)
        .map(|i| {
            let mut v = pool[i % POOL] ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_B);
            v = v.wrapping_mul(hash_const);
            v ^ (v >> 16)
        })
        .collect()
}

/// Deeper than this the halves no longer move at 6 decimals; torchsde would recurse forever.
const MAX_DEPTH: u32 = 60;

#[derive(Clone, Debug)]
struct Node {
    start: f64,
    end: f64,
    parent: Option<usize>,
    is_left: bool,
    /// Set once split: the rounded half, the seed of the bridge noise, the two children.
    split: Option<(f64, u32, usize, usize)>,
    spawn_key: u64,
    depth: u32,
}

/// One seeded Brownian motion over [t0, t1] for samples of `len` values.
#[derive(Clone, Debug)]
pub(crate) struct BrownianInterval {
    nodes: Vec<Node>,
    entropy: u64,
    len: usize,
    root_w: Vec<f32>,
    /// The last node a query ended on, where the next search starts.
    last: usize,
    /// Recently computed increments by node.
    cache: Vec<(usize, Vec<f32>)>,
}

impl BrownianInterval {
    pub fn new(t0: f64, t1: f64, len: usize, entropy: u64) -> BrownianInterval {
        let seeds = seed_sequence(entropy, &[], 3);
        let scale = (t1 - t0).sqrt() as f32;
        let root_w = randn(seeds[0], len)
            .into_iter()
            .map(|v| v * scale)
            .collect();
        BrownianInterval {
            nodes: vec![Node {
                start: round6(t0),
                end: round6(t1),
                parent: None,
                is_left: false,
                split: None,
                spawn_key: 0,
                depth: 0,
            }],
            entropy,
            len,
            root_w,
            last: 0,
            cache: Vec::new(),
        }
    }

    /// W(tb) - W(ta) for ta <= tb, clamped to [t0, t1] as torchsde clamps (with a warning).
    pub fn query(&mut self, ta: f64, tb: f64) -> Result<Vec<f32>, SchedulerError> {
        let (start, end) = (self.nodes[0].start, self.nodes[0].end);
        let (ta, tb) = (ta.clamp(start, end), tb.clamp(start, end));
        if ta == tb {
            return Ok(vec![0.0; self.len]);
        }
        let mut out = Vec::new();
        self.locate(self.last, round6(ta), round6(tb), &mut out)?;
        self.last = *out.last().unwrap_or(&0);
        let mut w = self.increment(out[0]);
        for &node in &out[1..] {
            let wi = self.increment(node);
            w.iter_mut().zip(&wi).for_each(|(a, b)| *a += b);
        }
        Ok(w)
    }

    /// The nodes covering [ta, tb] in order, splitting where needed (torchsde's `_loc_inner`).
    fn locate(
        &mut self,
        node: usize,
        ta: f64,
        tb: f64,
        out: &mut Vec<usize>,
    ) -> Result<(), SchedulerError> {
        let n = &self.nodes[node];
        if ta < n.start || tb > n.end {
            return match n.parent {
                Some(p) => self.locate(p, ta, tb, out),
                None => Err(brownian_error(ta, tb)),
            };
        }
        if ta == n.start && tb == n.end {
            out.push(node);
            return Ok(());
        }
        let (mid, left, right) = match n.split {
            Some((mid, _, l, r)) => (mid, l, r),
            None => {
                let at_start = ta == n.start;
                self.split(node, if at_start { tb } else { ta })?;
                let (_, _, l, r) = self.nodes[node].split.expect("just split");
                return self.locate(if at_start { l } else { r }, ta, tb, out);
            }
        };
        if tb <= mid {
            return self.locate(left, ta, tb, out);
        }
        if ta >= mid {
            return self.locate(right, ta, tb, out);
        }
        self.locate(left, ta, mid, out)?;
        self.locate(right, mid, tb, out)
    }

    /// Halves `node` until a split lands on `at` (torchsde's halfway-tree `_split`).
    fn split(&mut self, node: usize, at: f64) -> Result<(), SchedulerError> {
        let mut node = node;
        loop {
            let n = &self.nodes[node];
            if n.depth > MAX_DEPTH {
                return Err(brownian_error(n.start, at));
            }
            let half = 0.5 * (n.end + n.start);
            let mid = round6(half);
            let seed = seed_sequence(self.entropy, &[n.spawn_key, n.depth as u64], 4)[0];
            let (start, end, key, depth) = (n.start, n.end, n.spawn_key, n.depth);
            let l = self.push(start, half, node, true, 2 * key, depth + 1);
            let r = self.push(half, end, node, false, 2 * key + 1, depth + 1);
            self.nodes[node].split = Some((mid, seed, l, r));
            node = match at.partial_cmp(&mid) {
                Some(std::cmp::Ordering::Greater) => r,
                Some(std::cmp::Ordering::Less) => l,
                _ => return Ok(()),
            };
        }
    }

    fn push(
        &mut self,
        start: f64,
        end: f64,
        parent: usize,
        is_left: bool,
        key: u64,
        depth: u32,
    ) -> usize {
        self.nodes.push(Node {
            start: round6(start),
            end: round6(end),
            parent: Some(parent),
            is_left,
            split: None,
            spawn_key: key,
            depth,
        });
        self.nodes.len() - 1
    }

    /// The node's increment: a Brownian bridge sample given its parent's, in torch's float32
    /// order (python floats become float32 scalars).
    fn increment(&mut self, node: usize) -> Vec<f32> {
        let Some(parent) = self.nodes[node].parent else {
            return self.root_w.clone();
        };
        if let Some((_, w)) = self.cache.iter().find(|(n, _)| *n == node) {
            return w.clone();
        }
        let w = self.increment(parent);
        let p = &self.nodes[parent];
        let (mid, seed, _, _) = p.split.expect("a parent is split");
        let h_reciprocal = 1.0 / (p.end - p.start);
        let left_diff = mid - p.start;
        let right_diff = p.end - mid;
        let std = (left_diff * right_diff * h_reciprocal).sqrt() as f32;
        let (ld, hr) = (left_diff as f32, h_reciprocal as f32);
        let is_left = self.nodes[node].is_left;
        let noise = randn(seed, self.len);
        let out: Vec<f32> = w
            .iter()
            .zip(&noise)
            .map(|(&w, &z)| {
                let left = ld * w * hr + std * z;
                if is_left {
                    left
                } else {
                    w - left
                }
            })
            .collect();
        // A small cache, like torchsde's, so a query's nodes share their ancestors' work.
        if self.cache.len() >= CACHE {
            self.cache.remove(0);
        }
        self.cache.push((node, out.clone()));
        out
    }
}

const CACHE: usize = 64;

fn randn(seed: u32, len: usize) -> Vec<f32> {
    TorchCpuRng::new(seed as u64).randn(len)
}

fn brownian_error(ta: f64, tb: f64) -> SchedulerError {
    SchedulerError::Argument {
        name: "Brownian interval query",
        value: format!("[{ta}, {tb}]"),
        reason: "cannot be located in the noise tree",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by numpy 2 (`np.random.SeedSequence(entropy, spawn_key=..., pool_size=24)
    /// .generate_state(n)`), the generator torchsde seeds every node from.
    #[test]
    fn seed_sequence_matches_numpy() {
        assert_eq!(
            seed_sequence(1234, &[], 3),
            [4280268349, 3829106894, 2675148735]
        );
        assert_eq!(
            seed_sequence(1234, &[5, 3], 4),
            [1860635963, 869273324, 1971674113, 2280051663]
        );
        assert_eq!(
            seed_sequence((1 << 40) + 7, &[(1 << 33) + 1, 40], 4),
            [3761892614, 1946914326, 465365058, 3300905416]
        );
    }

    #[test]
    fn increments_add_up_and_round_trip() {
        // W over [a, c] is W over [a, b] plus W over [b, c] (to float32 rounding), whatever the
        // order of the queries.
        let mut tree = BrownianInterval::new(0.03, 14.6, 16, 7);
        let ab = tree.query(1.0, 2.5).unwrap();
        let bc = tree.query(2.5, 6.0).unwrap();
        let ac = tree.query(1.0, 6.0).unwrap();
        for i in 0..16 {
            assert!((ab[i] + bc[i] - ac[i]).abs() < 1e-5, "{i}");
        }
        assert!(tree.query(3.0, 3.0).unwrap().iter().all(|&v| v == 0.0));
    }
}
