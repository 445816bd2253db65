//! The VAE mid block's self-attention (diffusers' `Attention` with `group_norm`, one head over all
//! channels, `residual_connection`): every pixel attends to every pixel of its image.

use kiln_kernels::attention::{attention, AttentionOptions, MAX_HEAD_DIM};
use kiln_kernels::elementwise::{add, scale};
use kiln_kernels::layout::{concat, narrow, transpose};
use kiln_kernels::matmul::{matmul, MatmulOptions};
use kiln_kernels::softmax::softmax;
use kiln_runtime::{Device, Error, Result, Tensor};

use super::resnet::VAE_NORM_EPS;
use kiln_nn::weights::Weights;
use kiln_nn::{GroupNorm, Linear};

/// diffusers' current projection names, then the ones checkpoints saved before diffusers 0.14 still
/// carry (diffusers renames them on load; so do we).
const PROJECTIONS: [(&str, &str); 4] = [
    ("to_q", "query"),
    ("to_k", "key"),
    ("to_v", "value"),
    ("to_out.0", "proj_attn"),
];

pub struct MidAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl MidAttention {
    pub fn new(w: &Weights, channels: usize, groups: usize) -> Result<MidAttention> {
        let [q, k, v, out] =
            PROJECTIONS.map(|(name, legacy)| projection(w, name, legacy, channels));
        Ok(MidAttention {
            norm: GroupNorm::new(&w.pp("group_norm"), groups, channels, VAE_NORM_EPS)?,
            q: q?,
            k: k?,
            v: v?,
            out: out?,
        })
    }

    /// `x + to_out(attention(to_q(n), to_k(n), to_v(n)))` with `n = group_norm(x)` as [N, HW, C].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let shape = x.shape().to_vec();
        let (n, c) = (shape[0], shape[1]);
        let normed = self.norm.forward(x, false)?.reshape(&[n, c, usize::MAX])?;
        let tokens = transpose(&normed, 1, 2)?; // [N, HW, C]
        let q = self.q.forward(&tokens)?;
        let k = self.k.forward(&tokens)?;
        let v = self.v.forward(&tokens)?;
        let attended = single_head_attention(&q, &k, &v)?;
        let projected = self.out.forward(&attended)?;
        let back = transpose(&projected, 1, 2)?.reshape(&shape)?;
        add(&back, x)
    }
}

/// A `Linear(channels, channels)` under `name`, or under its pre-0.14 `legacy` name when only that is
/// present. A missing tensor is reported under the current name.
fn projection(w: &Weights, name: &str, legacy: &str, channels: usize) -> Result<Linear> {
    let name = if !w.contains(&format!("{name}.weight")) && w.contains(&format!("{legacy}.weight"))
    {
        legacy
    } else {
        name
    };
    Linear::new(&w.pp(name), channels, channels, true)
}

/// `softmax(q kᵀ / sqrt(C)) v` for [N, L, C] tensors, one head of width C. The flash attention kernel
/// takes it as [N, L, 1, C] whenever it can; the GPU kernel stops at `MAX_HEAD_DIM` (256) channels and
/// SD's VAE has 512, so wider heads on a GPU go through `attention_by_matmul`, a block of queries at
/// a time.
pub fn single_head_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (d, gpu) = (q.dim(-1), matches!(q.device(), Device::Gpu(_)));
    if gpu && d > MAX_HEAD_DIM {
        return attention_by_matmul(q, k, v);
    }
    let as_heads = |t: &Tensor| -> Result<Tensor> {
        let s = t.shape();
        t.reshape(&[s[0], s[1], 1, s[2]])
    };
    let out = attention(
        &as_heads(q)?,
        &as_heads(k)?,
        &as_heads(v)?,
        AttentionOptions::default(),
    )?;
    out.reshape(q.shape())
}

/// Score-matrix elements one block of queries may hold (16 MiB in f32): `attention_by_matmul`'s
/// memory stays this, not L², at any image size (a whole 1024x1024 decode would need 1 GiB).
const SCORE_BLOCK: usize = 1 << 22;

/// The same attention as three plain kernels per block of queries: scores = (q / sqrt(C)) kᵀ
/// [N, rows, Lk], softmax over keys, then scores v; the blocks' outputs are concatenated. Each block
/// holds at most `SCORE_BLOCK` scores per image; q is scaled before the product so f16 scores stay
/// far from overflow.
pub fn attention_by_matmul(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    attention_in_blocks(q, k, v, (SCORE_BLOCK / k.dim(1).max(1)).max(1))
}

/// `attention_by_matmul` with blocks of `rows` queries (tests use small blocks).
fn attention_in_blocks(q: &Tensor, k: &Tensor, v: &Tensor, rows: usize) -> Result<Tensor> {
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        if t.rank() != 3 {
            return Err(Error::shape(
                "vae attention",
                format!("`{name}` {:?} must be [N, L, C]", t.shape()),
            ));
        }
    }
    let q = scale(q, 1.0 / (q.dim(-1) as f32).sqrt())?;
    let lq = q.dim(1);
    let mut blocks = Vec::with_capacity(lq.div_ceil(rows));
    for start in (0..lq).step_by(rows) {
        let q_block = narrow(&q, 1, start, rows.min(lq - start))?;
        let scores = matmul(
            &q_block,
            k,
            MatmulOptions {
                transpose_b: true,
                bias: None,
            },
        )?;
        let probs = softmax(&scores, 1.0)?;
        drop(scores);
        blocks.push(matmul(&probs, v, MatmulOptions::default())?);
    }
    let refs: Vec<&Tensor> = blocks.iter().collect();
    concat(&refs, 1)
}

#[cfg(test)]
mod tests {
    use kiln_kernels::testing::{assert_close, random_pair, with_gpu};
    use kiln_runtime::DType;

    use super::*;

    /// The matmul path against the attention kernel on the CPU, with a head wider than the GPU
    /// kernel's limit (and an odd L), then on the GPU against the CPU. Tolerance: f32 atol 1e-4 (both
    /// are exact softmax in f32 over O(1) values); f16 atol 2e-2 (f16 scores and probabilities).
    #[test]
    fn matmul_fallback_matches_the_kernel() {
        let shape = [2, 37, MAX_HEAD_DIM + 64];
        let (q, _) = random_pair(&Device::Cpu, &shape, DType::F32, 1);
        let (k, _) = random_pair(&Device::Cpu, &shape, DType::F32, 2);
        let (v, _) = random_pair(&Device::Cpu, &shape, DType::F32, 3);
        let want = single_head_attention(&q, &k, &v).unwrap();
        let got = attention_by_matmul(&q, &k, &v).unwrap();
        assert_eq!(got.shape(), shape);
        let want = want.to_vec_f32().unwrap();
        assert_close("cpu", &got.to_vec_f32().unwrap(), &want, 1e-4, 1e-4);
        // Query blocks of 8 (the last one 5 rows) give the same result as one block.
        let blocked = attention_in_blocks(&q, &k, &v, 8).unwrap();
        assert_close(
            "cpu blocks",
            &blocked.to_vec_f32().unwrap(),
            &want,
            1e-4,
            1e-4,
        );
        with_gpu(|gpu| {
            for (dtype, atol) in [(DType::F32, 1e-4), (DType::F16, 2e-2)] {
                let up = |t: &Tensor| {
                    let v = t.to_vec_f32().unwrap();
                    Tensor::from_f32(gpu, t.shape(), dtype, &v).unwrap()
                };
                let got = single_head_attention(&up(&q), &up(&k), &up(&v)).unwrap();
                assert_eq!((got.shape(), got.dtype()), (&shape[..], dtype));
                assert_close(
                    &format!("gpu {dtype}"),
                    &got.to_vec_f32().unwrap(),
                    &want,
                    atol,
                    1e-2,
                );
                let blocked = attention_in_blocks(&up(&q), &up(&k), &up(&v), 8).unwrap();
                assert_close(
                    &format!("gpu {dtype} blocks"),
                    &blocked.to_vec_f32().unwrap(),
                    &want,
                    atol,
                    1e-2,
                );
            }
        });
    }
}
