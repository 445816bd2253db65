//! `kiln bench llm`: prefill and decode throughput of a model (a folder, or random weights of a
//! real config built in memory), decode's effective bandwidth against the device's own copy
//! bandwidth measured in the same run, and the memory a run needs computed from the shapes
//! before anything loads (a zero-weight replay of a 24B prefill would cost hundreds of TFLOP).

use std::sync::Arc;
use std::time::Instant;

use kiln_kernels::layout::narrow;
use kiln_nn::weights::WeightType;
use kiln_runtime::{DType, Device, Result, Tensor};
use serde::Serialize;

use crate::config::MistralConfig;
use crate::kv_cache::kv_bytes_per_token;
use crate::model::{Logits, Mistral};
use crate::session::Session;
use crate::vision::{
    image_token_layout, ImageTokenIds, PreparedImage, Prompt, PromptImage, VisionConfig,
    VisionModel,
};

/// Device memory of a run, from the config alone.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub kv_cache: u64,
    pub kv_per_token: u64,
    /// The largest prefill chunk's activations (hidden states, q/k/v, the MLP's three
    /// intermediate rows, one row of logits).
    pub activations: u64,
    /// A mistral3 model's vision tower and projector: weights plus the encoder's activations
    /// for the largest image (images are encoded one at a time); 0 without one.
    pub vision: u64,
    pub total: u64,
}

/// Bytes of an `[n, k]` Linear weight at `weight_type`: packed when `k` is a whole number of
/// blocks (as `Weights::get_packable` packs), else in the float dtype.
pub(crate) fn matrix_bytes(n: usize, k: usize, weight_type: WeightType) -> u64 {
    match weight_type.quantization() {
        Some(q) if k.is_multiple_of(q.block_len()) => {
            (n * k / q.block_len() * q.block_bytes()) as u64
        }
        _ => (n * k * weight_type.float_dtype().size_in_bytes()) as u64,
    }
}

/// Device bytes of the vision tower and projector at `weight_type`, plus the peak activations
/// of encoding one image of the largest size (`image_size` squared): per patch the hidden state,
/// its norm, q, k, v and their rotated copies, the attention output, and the MLP's three rows.
pub fn vision_bytes(v: &VisionConfig, weight_type: WeightType) -> u64 {
    let e = &v.encoder;
    let float = weight_type.float_dtype().size_in_bytes() as u64;
    let (d, f) = (e.hidden_size, e.intermediate_size);
    let q = e.num_attention_heads * e.head_dim;
    let layer = 3 * matrix_bytes(q, d, weight_type)
        + matrix_bytes(d, q, weight_type)
        + 2 * matrix_bytes(f, d, weight_type)
        + matrix_bytes(d, f, weight_type)
        + 2 * d as u64 * float;
    let patch = (d * e.num_channels * e.patch_size * e.patch_size) as u64 * float;
    let m = v.spatial_merge_size;
    let t = v.text_hidden_size;
    let projector = d as u64 * float
        + matrix_bytes(d, d * m * m, weight_type)
        + matrix_bytes(t, d, weight_type)
        + matrix_bytes(t, t, weight_type);
    let weights = patch + d as u64 * float + layer * v.feature_layers as u64 + projector;
    let side = e.max_patches_per_side();
    let patches = (side * side) as u64;
    let pixels = 2 * (e.num_channels * e.image_size * e.image_size) as u64 * float;
    let per_patch = (6 * d + 2 * q + 3 * f) as u64 * float + e.head_dim as u64 * 4;
    weights + pixels + patches * per_patch
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

/// What a model's weights take once loaded, for memory estimates made before loading: the type
/// they load at and their bytes, from the config's shapes at one `--weight-type`
/// ([`WeightPlan::uniform`]) or from a GGUF file's tensor table, whose matrices keep their own
/// types (a Q4_K_M file mixes q4_K and q6_K).
#[derive(Clone, Copy, Debug)]
pub struct WeightPlan {
    /// The type most weight bytes load at (its float dtype is the activations').
    pub weight_type: WeightType,
    pub bytes: u64,
}

impl WeightPlan {
    pub fn uniform(c: &MistralConfig, weight_type: WeightType) -> WeightPlan {
        WeightPlan {
            weight_type,
            bytes: weight_bytes(c, weight_type),
        }
    }
}

pub fn estimate_memory(
    c: &MistralConfig,
    weights: &WeightPlan,
    context: usize,
    kv_dtype: DType,
    prefill_chunk: usize,
) -> MemoryEstimate {
    let weight_type = weights.weight_type;
    let act = weight_type.float_dtype().size_in_bytes() as u64;
    let kv_per_token = kv_bytes_per_token(c, kv_dtype);
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let row = 4 * c.hidden_size + q + 2 * kv + 3 * c.intermediate_size;
    let activations = prefill_chunk as u64 * row as u64 * act + c.vocab_size as u64 * 4;
    let weights = weights.bytes;
    let kv_cache = kv_per_token * context as u64;
    let vision = c
        .vision
        .as_ref()
        .map_or(0, |v| vision_bytes(v, weight_type));
    MemoryEstimate {
        weights,
        kv_cache,
        kv_per_token,
        activations,
        vision,
        total: weights + kv_cache + activations + vision,
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
    /// Image encoding (models with a vision tower).
    pub images: Vec<ImageResult>,
}

/// One square image through the vision tower, and a prompt holding it to its first token.
#[derive(Clone, Debug, Serialize)]
pub struct ImageResult {
    /// Pixels per side before preprocessing.
    pub side: usize,
    /// `[IMG]` tokens (rows x columns of merged patches).
    pub image_tokens: usize,
    /// Prompt tokens: the image's layout plus a few text tokens.
    pub prompt_tokens: usize,
    pub encode_seconds: f64,
    /// Prefill of the whole prompt, the encoding included: time to first token.
    pub first_token_seconds: f64,
    /// Of the time to first token.
    pub encode_share: f64,
}

pub struct BenchPlan {
    pub prefill: Vec<usize>,
    pub depths: Vec<usize>,
    pub decode_tokens: usize,
    pub kv_dtype: DType,
    /// Square image sides to encode (models with a vision tower; larger than the tower's
    /// `image_size` are scaled down by the preprocessing as any image is).
    pub image_sides: Vec<usize>,
}

/// Text tokens around an image in the benchmark's prompt.
const IMAGE_PROMPT_TEXT: usize = 12;

impl BenchPlan {
    /// The context the runs need.
    pub fn context(&self) -> usize {
        let prefill = self.prefill.iter().copied().max().unwrap_or(0);
        let decode = self.depths.iter().copied().max().unwrap_or(0) + self.decode_tokens + 1;
        prefill.max(decode).max(self.image_context()).max(1)
    }

    /// Positions the largest image's prompt needs, at most (before downscaling to the tower's
    /// longest side): a 28-pixel token grid, a break per row.
    fn image_context(&self) -> usize {
        self.image_sides
            .iter()
            .map(|&s| {
                let t = s.div_ceil(28);
                t * (t + 1) + IMAGE_PROMPT_TEXT
            })
            .max()
            .unwrap_or(0)
    }
}

/// Times the prefills and decodes of `plan` on a loaded model.
pub fn run(model: &Mistral, plan: &BenchPlan, report: &mut LlmBenchReport) -> Result<()> {
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
    let weights = report.memory.weights;
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
    if let Some(vision) = &model.vision {
        report.images = bench_images(model, vision, &plan.image_sides, &mut session)?;
    }
    Ok(())
}

/// Encodes a square image of each side alone, then runs a prompt holding it to its first token.
fn bench_images(
    model: &Mistral,
    vision: &VisionModel,
    sides: &[usize],
    session: &mut Session,
) -> Result<Vec<ImageResult>> {
    let processor = vision.processor();
    let img = vision.config.image_token_index;
    let vocab = model.config.vocab_size as u32;
    let tokens = ImageTokenIds {
        img,
        brk: (img + 2).min(vocab - 1),
        end: (img + 3).min(vocab - 1),
    };
    let image = |side: usize| -> Result<PreparedImage> {
        let (rows, cols) = processor.grid(side as u32, side as u32)?;
        let unit = processor.patch_size * processor.merge;
        let (height, width) = (rows * unit, cols * unit);
        // Pixel values do not change the work; a pattern keeps them in the normalised range.
        let pixels = (0..3 * height * width)
            .map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0)
            .collect();
        Ok(PreparedImage {
            rows,
            cols,
            height,
            width,
            pixels,
            hash: side as u64,
        })
    };
    let mut results = Vec::new();
    if let Some(&smallest) = sides.iter().min() {
        vision.encode(&image(smallest)?)?.to_vec_f32()?;
    }
    for &side in sides {
        let prepared = Arc::new(image(side)?);
        let start = Instant::now();
        vision.encode(&prepared)?.to_vec_f32()?;
        let encode_seconds = start.elapsed().as_secs_f64();
        let text: Vec<u32> = (0..IMAGE_PROMPT_TEXT as u32)
            .map(|i| (i * 7919 + 1013) % vocab)
            .collect();
        let layout = image_token_layout(prepared.rows, prepared.cols, tokens);
        let span = PromptImage {
            start: 1,
            len: layout.len(),
            image: prepared.clone(),
        };
        let ids: Vec<u32> = text[..1]
            .iter()
            .chain(&layout)
            .chain(&text[1..])
            .copied()
            .collect();
        let prompt = Prompt {
            ids,
            images: vec![span],
        };
        session.reset();
        let start = Instant::now();
        session.prefill_prompt(model, &prompt)?;
        let first_token_seconds = start.elapsed().as_secs_f64();
        results.push(ImageResult {
            side,
            image_tokens: prepared.rows * prepared.cols,
            prompt_tokens: prompt.ids.len(),
            encode_seconds,
            first_token_seconds,
            encode_share: encode_seconds / first_token_seconds,
        });
    }
    Ok(results)
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
