//! `kiln bench llm`: prefill and decode throughput of a model (a folder, or random weights of a
//! real config built in memory), decode's effective bandwidth against the device's own copy
//! bandwidth measured in the same run, and the memory a run needs computed from the shapes
//! before anything loads (a zero-weight replay of a 24B prefill would cost hundreds of TFLOP).

use std::time::Instant;

use kiln_kernels::layout::narrow;
use kiln_nn::weights::WeightType;
use kiln_runtime::{DType, Device, Result, Tensor};
use serde::Serialize;

use crate::config::MistralConfig;
use crate::kv_cache::kv_bytes_per_token;
use crate::model::{Logits, Mistral};
use crate::session::Session;

/// Device memory of a run, from the config alone.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub kv_cache: u64,
    pub kv_per_token: u64,
    /// The largest prefill chunk's activations (hidden states, q/k/v, the MLP's three
    /// intermediate rows, one row of logits).
    pub activations: u64,
    pub total: u64,
}

/// Weight bytes at `weight_type`: every Linear packed (all of Mistral's have K a whole number of
/// blocks), norms and the token embedding in the float dtype, as `Mistral::load` stores them.
pub fn weight_bytes(c: &MistralConfig, weight_type: WeightType) -> u64 {
    let float = weight_type.float_dtype().size_in_bytes() as u64;
    let matrix = |n: usize, k: usize| -> u64 {
        match weight_type.quantization() {
            Some(q) => (n * k / q.block_len() * q.block_bytes()) as u64,
            None => (n * k) as u64 * float,
        }
    };
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let layer =
        matrix(q, h) + 2 * matrix(kv, h) + matrix(h, q) + 3 * matrix(f, h) + 2 * h as u64 * float;
    let embed = (c.vocab_size * h) as u64 * float;
    let head = if c.tie_word_embeddings {
        0
    } else {
        matrix(c.vocab_size, h)
    };
    layer * c.num_hidden_layers as u64 + embed + head + h as u64 * float
}

pub fn estimate_memory(
    c: &MistralConfig,
    weight_type: WeightType,
    context: usize,
    kv_dtype: DType,
    prefill_chunk: usize,
) -> MemoryEstimate {
    let act = weight_type.float_dtype().size_in_bytes() as u64;
    let kv_per_token = kv_bytes_per_token(c, kv_dtype);
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let row = 4 * c.hidden_size + q + 2 * kv + 3 * c.intermediate_size;
    let activations = prefill_chunk as u64 * row as u64 * act + c.vocab_size as u64 * 4;
    let weights = weight_bytes(c, weight_type);
    let kv_cache = kv_per_token * context as u64;
    MemoryEstimate {
        weights,
        kv_cache,
        kv_per_token,
        activations,
        total: weights + kv_cache + activations,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PrefillResult {
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DecodeResult {
    /// Positions already in the cache when decoding starts.
    pub depth: usize,
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
    /// Weight bytes plus the KV cache read per token (at the mean depth).
    pub bytes_per_token: u64,
    pub effective_gb_per_s: f64,
    /// Of the copy bandwidth measured in the same run.
    pub fraction_of_copy: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LlmBenchReport {
    pub model: String,
    pub device: String,
    pub weight_type: String,
    pub kv_type: String,
    pub parameters: u64,
    pub memory: MemoryEstimate,
    pub load_seconds: f64,
    /// Device copy bandwidth, bytes read plus bytes written per second.
    pub copy_gb_per_s: f64,
    pub prefill: Vec<PrefillResult>,
    pub decode: Vec<DecodeResult>,
}

pub struct BenchPlan {
    pub prefill: Vec<usize>,
    pub depths: Vec<usize>,
    pub decode_tokens: usize,
    pub kv_dtype: DType,
}

impl BenchPlan {
    /// The context the runs need.
    pub fn context(&self) -> usize {
        let prefill = self.prefill.iter().copied().max().unwrap_or(0);
        let decode = self.depths.iter().copied().max().unwrap_or(0) + self.decode_tokens + 1;
        prefill.max(decode).max(1)
    }
}

/// Times the prefills and decodes of `plan` on a loaded model.
pub fn run(
    model: &Mistral,
    weight_type: WeightType,
    plan: &BenchPlan,
    report: &mut LlmBenchReport,
) -> Result<()> {
    let device = model.device().clone();
    report.copy_gb_per_s = copy_bandwidth(&device)?;
    let mut session = Session::new(model, plan.context(), plan.kv_dtype)?;
    let vocab = model.config.vocab_size as u32;
    // Ids spread over the vocabulary; their values do not change the work.
    let ids = |n: usize| -> Vec<u32> { (0..n).map(|i| (i as u32 * 7919 + 13) % vocab).collect() };

    // Warm-up: pipelines compiled, buffers pooled.
    session.prefill(model, &ids(2))?;
    for &n in &plan.prefill {
        session.reset();
        let start = Instant::now();
        let logits = model.forward(&ids(n), session.cache_mut(), Logits::Last)?;
        logits.to_vec_f32()?;
        let seconds = start.elapsed().as_secs_f64();
        report.prefill.push(PrefillResult {
            tokens: n,
            seconds,
            tokens_per_second: n as f64 / seconds,
        });
    }
    let weights = weight_bytes(&model.config, weight_type);
    for &depth in &plan.depths {
        session.reset();
        session.assume_filled(depth)?;
        let mut id = 1;
        session.decode(model, id)?;
        let start = Instant::now();
        for _ in 0..plan.decode_tokens {
            id = (id * 31 + 7) % vocab;
            session.decode(model, id)?;
        }
        let seconds = start.elapsed().as_secs_f64();
        let mean_depth = depth + 1 + plan.decode_tokens / 2;
        let bytes = weights + report.memory.kv_per_token * mean_depth as u64;
        let tps = plan.decode_tokens as f64 / seconds;
        let gbps = bytes as f64 * tps / 1e9;
        report.decode.push(DecodeResult {
            depth,
            tokens: plan.decode_tokens,
            seconds,
            tokens_per_second: tps,
            bytes_per_token: bytes,
            effective_gb_per_s: gbps,
            fraction_of_copy: gbps / report.copy_gb_per_s,
        });
    }
    Ok(())
}

/// Bytes read plus written per second by a copy of 256 MiB: on a GPU kiln's own row copy; on the
/// CPU a copy between two buffers already in memory, split over every core (kiln's op allocates
/// its output each time, so page faults, not the memory bus, would set its speed).
fn copy_bandwidth(device: &Device) -> Result<f64> {
    if let Device::Cpu = device {
        return Ok(host_copy_bandwidth());
    }
    let rows = 64 * 1024;
    let cols = 1024;
    let x = Tensor::zeros(device, &[rows, cols], DType::F32)?;
    // All rows but one: narrowing to the whole tensor would return it without a copy.
    let copied = rows - 1;
    narrow(&x, 0, 0, copied)?;
    device.synchronize()?;
    let iters = 4;
    let start = Instant::now();
    for _ in 0..iters {
        drop(narrow(&x, 0, 0, copied)?);
    }
    device.synchronize()?;
    let bytes = 2.0 * (copied * cols * 4) as f64 * iters as f64;
    Ok(bytes / start.elapsed().as_secs_f64() / 1e9)
}

/// The best of 4 parallel copies of 256 MiB between warm buffers, in GB/s read plus written.
fn host_copy_bandwidth() -> f64 {
    let len = 256 << 20;
    let src = vec![1u8; len];
    let mut dst = vec![0u8; len];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = len.div_ceil(threads);
    let mut best = f64::MAX;
    for _ in 0..4 {
        let start = Instant::now();
        std::thread::scope(|s| {
            for (d, c) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(c));
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    2.0 * len as f64 / best / 1e9
}
