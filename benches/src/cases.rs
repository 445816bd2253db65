//! The benchmark table. Each case makes its inputs once on the device and returns a closure running the
//! op; outputs are dropped each run, so the pool recycles them as a model's steps would.

use kiln_kernels::attention::{attention, AttentionOptions};
use kiln_kernels::conv::{conv2d, Conv2dOptions};
use kiln_kernels::elementwise::{self, Unary};
use kiln_kernels::embedding::embedding;
use kiln_kernels::layout::{concat, permute};
use kiln_kernels::matmul::{matmul, MatmulOptions};
use kiln_kernels::norm::{group_norm, layer_norm, rms_norm};
use kiln_kernels::quant::{qlinear, quantize_tensor};
use kiln_kernels::rope::{rope, RopeStyle};
use kiln_kernels::softmax::softmax;
use kiln_kernels::testing::Rng;
use kiln_kernels::timestep::{timestep_embedding, TimestepEmbedding};
use kiln_kernels::upsample::upsample_nearest2d;
use kiln_runtime::{DType, Device, QTensor, QuantFormat, Result, Tensor};
use serde_json::{json, Value};

/// Standard shapes, or tiny ones that finish quickly on a software adapter (for tests and CI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Standard,
    Quick,
}

#[derive(Clone, Copy, Debug)]
pub enum Work {
    Flops(f64),
    /// Bytes read plus bytes written.
    Bytes(f64),
    /// A whole model evaluation: reported as time only.
    Model,
    /// A whole image model making this many output pixels: reported as time per megapixel.
    Pixels(f64),
}

pub type Runner = Box<dyn Fn() -> Result<Tensor>>;
/// Makes a case's inputs on a device and returns its runner.
pub type Prepare = Box<dyn Fn(&Device) -> Result<Runner>>;

pub struct Case {
    pub name: String,
    pub op: &'static str,
    pub dtype: DType,
    pub shape: String,
    /// The op's arguments as numbers and flags (and a model's config), written into the JSON so that
    /// tools/torch_bench.py runs exactly this case.
    pub params: Value,
    pub work: Work,
    pub prepare: Prepare,
}

fn random(device: &Device, shape: &[usize], dtype: DType, seed: u64) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_f32(device, shape, dtype, &Rng::new(seed).normals(n))
}

/// Random K-quant blocks whose f16 scales (q4_K's d and dmin, q6_K's d) are small and finite.
fn random_kquant(
    device: &Device,
    format: QuantFormat,
    n: usize,
    k: usize,
    seed: u64,
) -> Result<QTensor> {
    let mut rng = Rng::new(seed);
    let len = format.packed_bytes("random weight", &[n, k])?;
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    let scales: &[usize] = if format == QuantFormat::Q6K {
        &[208]
    } else {
        &[0, 2]
    };
    for block in bytes.chunks_exact_mut(format.block_bytes()) {
        for &at in scales {
            // f16 0x1419: about 1e-3.
            block[at..at + 2].copy_from_slice(&0x1419u16.to_le_bytes());
        }
    }
    QTensor::from_packed(device, format, &[n, k], &bytes)
}

pub(crate) fn case(
    name: &str,
    op: &'static str,
    dtype: DType,
    (shape, params): (String, Value),
    work: Work,
    prepare: impl Fn(&Device) -> Result<Runner> + 'static,
) -> Case {
    Case {
        name: format!("{name} {dtype}"),
        op,
        dtype,
        shape,
        params,
        work,
        prepare: Box::new(prepare),
    }
}

fn matmul_case(
    name: &str,
    dtype: DType,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    transpose_b: bool,
) -> Case {
    let flops = 2.0 * (batch * m * n * k) as f64;
    case(
        name,
        "matmul",
        dtype,
        (
            format!("{batch}x[{m}x{k}]x[{k}x{n}]"),
            json!({"batch": batch, "m": m, "k": k, "n": n, "transpose_b": transpose_b}),
        ),
        Work::Flops(flops),
        move |d| {
            let a = random(d, &[batch, m, k], dtype, 1)?;
            let b_shape = if transpose_b {
                [batch, n, k]
            } else {
                [batch, k, n]
            };
            let b = random(d, &b_shape, dtype, 2)?;
            Ok(Box::new(move || {
                matmul(
                    &a,
                    &b,
                    MatmulOptions {
                        transpose_b,
                        bias: None,
                    },
                )
            }))
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn attention_case(
    name: &str,
    dtype: DType,
    b: usize,
    h: usize,
    lq: usize,
    lk: usize,
    d: usize,
    hkv: usize,
) -> Case {
    let flops = 4.0 * (b * h * lq * lk * d) as f64;
    let shape = format!("B{b} H{h}/{hkv} Lq{lq} Lk{lk} D{d}");
    let params =
        json!({"batch": b, "heads": h, "kv_heads": hkv, "lq": lq, "lk": lk, "head_dim": d});
    case(
        name,
        "attention",
        dtype,
        (shape, params),
        Work::Flops(flops),
        move |dev| {
            let q = random(dev, &[b, lq, h, d], dtype, 3)?;
            let k = random(dev, &[b, lk, hkv, d], dtype, 4)?;
            let v = random(dev, &[b, lk, hkv, d], dtype, 5)?;
            Ok(Box::new(move || {
                attention(&q, &k, &v, AttentionOptions::default())
            }))
        },
    )
}

fn conv_case(
    name: &str,
    dtype: DType,
    n: usize,
    cin: usize,
    cout: usize,
    hw: usize,
    k: usize,
) -> Case {
    let flops = 2.0 * (n * cout * hw * hw * cin * k * k) as f64;
    let shape = format!("[{n},{cin},{hw},{hw}] * [{cout},{cin},{k},{k}]");
    let params = json!({"n": n, "cin": cin, "cout": cout, "hw": hw, "kernel": k, "padding": k / 2});
    case(
        name,
        "conv2d",
        dtype,
        (shape, params),
        Work::Flops(flops),
        move |d| {
            let x = random(d, &[n, cin, hw, hw], dtype, 6)?;
            let w = random(d, &[cout, cin, k, k], dtype, 7)?;
            let bias = random(d, &[cout], dtype, 8)?;
            let padding = k / 2;
            Ok(Box::new(move || {
                conv2d(&x, &w, Some(&bias), Conv2dOptions { stride: 1, padding })
            }))
        },
    )
}

fn bytes(elements: usize, dtype: DType, passes: f64) -> Work {
    Work::Bytes(elements as f64 * dtype.size_in_bytes() as f64 * passes)
}

/// The cases for one dtype at one size.
pub fn kernel_cases(size: Size, dtype: DType) -> Vec<Case> {
    // (SD 1.5 at 512x512 where a model shape exists; quick shapes are tiny versions of the same.)
    let q = size == Size::Quick;
    let pick = |standard: usize, quick: usize| if q { quick } else { standard };
    let mut cases = vec![
        matmul_case(
            "matmul square",
            dtype,
            1,
            pick(1024, 64),
            pick(1024, 64),
            pick(1024, 64),
            false,
        ),
        matmul_case(
            "linear sd-attn-proj",
            dtype,
            1,
            pick(8192, 96),
            pick(320, 40),
            pick(320, 40),
            true,
        ),
        matmul_case(
            "batched matmul",
            dtype,
            pick(16, 2),
            pick(1024, 33),
            64,
            pick(1024, 33),
            false,
        ),
        attention_case(
            "attention sd-self",
            dtype,
            pick(2, 1),
            8,
            pick(4096, 64),
            pick(4096, 64),
            40,
            8,
        ),
        attention_case(
            "attention sd-cross",
            dtype,
            pick(2, 1),
            8,
            pick(4096, 64),
            77,
            40,
            8,
        ),
        attention_case(
            "attention llm-prefill",
            dtype,
            1,
            pick(32, 4),
            pick(1024, 32),
            pick(1024, 32),
            128,
            pick(8, 2),
        ),
        conv_case(
            "conv3x3 sd-resnet",
            dtype,
            pick(2, 1),
            pick(320, 8),
            pick(320, 8),
            pick(64, 12),
            3,
        ),
        conv_case(
            "conv1x1 sd-proj",
            dtype,
            pick(2, 1),
            pick(320, 8),
            pick(320, 8),
            pick(64, 12),
            1,
        ),
    ];
    let (n, c, hw) = (pick(2, 1), pick(320, 32), pick(64, 8));
    let elems = n * c * hw * hw;
    cases.push(case(
        "groupnorm+silu sd",
        "group_norm",
        dtype,
        (
            format!("[{n},{c},{hw},{hw}] g32"),
            json!({"n": n, "c": c, "hw": hw, "groups": 32, "eps": 1e-5, "silu": true}),
        ),
        bytes(elems, dtype, 3.0),
        move |d| {
            let x = random(d, &[n, c, hw, hw], dtype, 9)?;
            let w = random(d, &[c], dtype, 10)?;
            let b = random(d, &[c], dtype, 11)?;
            Ok(Box::new(move || {
                group_norm(&x, 32, Some(&w), Some(&b), 1e-5, true)
            }))
        },
    ));
    let (rows, width) = (pick(8192, 64), pick(320, 40));
    cases.push(case(
        "layernorm sd",
        "layer_norm",
        dtype,
        (
            format!("[{rows},{width}]"),
            json!({"rows": rows, "width": width, "eps": 1e-5}),
        ),
        bytes(rows * width, dtype, 3.0),
        move |d| {
            let x = random(d, &[rows, width], dtype, 12)?;
            Ok(Box::new(move || layer_norm(&x, None, None, 1e-5)))
        },
    ));
    let (rows, width) = (pick(512, 16), pick(4096, 256));
    cases.push(case(
        "rmsnorm llm",
        "rms_norm",
        dtype,
        (
            format!("[{rows},{width}]"),
            json!({"rows": rows, "width": width, "eps": 1e-5}),
        ),
        bytes(rows * width, dtype, 2.0),
        move |d| {
            let x = random(d, &[rows, width], dtype, 19)?;
            let w = random(d, &[width], dtype, 20)?;
            Ok(Box::new(move || rms_norm(&x, &w, 1e-5)))
        },
    ));
    // Mistral 7B's FFN up projection with 4-bit weights: one row (decode, bound by the weight
    // bytes) and a 64-token prefill chunk (bound by arithmetic).
    let (k, n) = (pick(4096, 128), pick(14336, 96));
    for (name, m) in [
        ("qlinear q4_0 llm-decode", 1),
        ("qlinear q4_0 llm-prefill", pick(64, 9)),
    ] {
        let weight_bytes = (n * k / 32 * 18) as f64;
        let work = if m == 1 {
            Work::Bytes(weight_bytes)
        } else {
            Work::Flops(2.0 * (m * n * k) as f64)
        };
        cases.push(case(
            name,
            "qlinear",
            dtype,
            (
                format!("[{m},{k}]x[{n},{k}] q4_0"),
                json!({"m": m, "k": k, "n": n, "format": "q4_0"}),
            ),
            work,
            move |d| {
                let x = random(d, &[m, k], dtype, 24)?;
                let w = random(&Device::Cpu, &[n, k], DType::F32, 25)?;
                let w = quantize_tensor(&w, QuantFormat::Q4_0, d)?;
                Ok(Box::new(move || qlinear(&x, &w, None)))
            },
        ));
    }
    // The same decode shape in the K-quants of a Q4_K_M GGUF file (random blocks: the time does
    // not depend on the values).
    for (format, m) in [
        (QuantFormat::Q4K, 1),
        (QuantFormat::Q6K, 1),
        (QuantFormat::Q4K, pick(64, 9)),
        (QuantFormat::Q6K, pick(64, 9)),
    ] {
        let (k, n) = (pick(4096, 256), pick(14336, 96));
        let phase = if m == 1 { "decode" } else { "prefill" };
        let name = format!("qlinear {format} llm-{phase}");
        let weight_bytes = (n * k / format.block_len() * format.block_bytes()) as f64;
        let work = if m == 1 {
            Work::Bytes(weight_bytes)
        } else {
            Work::Flops(2.0 * (m * n * k) as f64)
        };
        cases.push(case(
            &name,
            "qlinear",
            dtype,
            (
                format!("[{m},{k}]x[{n},{k}] {format}"),
                json!({"m": m, "k": k, "n": n, "format": format.name()}),
            ),
            work,
            move |d| {
                let x = random(d, &[m, k], dtype, 24)?;
                let w = random_kquant(d, format, n, k, 25)?;
                Ok(Box::new(move || qlinear(&x, &w, None)))
            },
        ));
    }
    let (rows, width) = (pick(65536, 64), pick(77, 77));
    cases.push(case(
        "softmax sd-cross-scores",
        "softmax",
        dtype,
        (
            format!("[{rows},{width}]"),
            json!({"rows": rows, "width": width}),
        ),
        bytes(rows * width, dtype, 2.0),
        move |d| {
            let x = random(d, &[rows, width], dtype, 13)?;
            Ok(Box::new(move || softmax(&x, 1.0)))
        },
    ));
    let elems = pick(2 * 320 * 64 * 64, 4096);
    cases.push(case(
        "add sd-residual",
        "add",
        dtype,
        (format!("[{elems}]"), json!({"elements": elems})),
        bytes(elems, dtype, 3.0),
        move |d| {
            let a = random(d, &[elems], dtype, 14)?;
            let b = random(d, &[elems], dtype, 15)?;
            Ok(Box::new(move || elementwise::add(&a, &b)))
        },
    ));
    cases.push(case(
        "copy (scale by 1)",
        "copy",
        dtype,
        (format!("[{elems}]"), json!({"elements": elems})),
        bytes(elems, dtype, 2.0),
        move |d| {
            let a = random(d, &[elems], dtype, 16)?;
            Ok(Box::new(move || {
                elementwise::unary(&a, Unary::Scale { mul: 1.0, add: 0.0 })
            }))
        },
    ));
    let (rows, width) = (pick(8192, 64), pick(2560, 64));
    cases.push(case(
        "geglu sd-ff",
        "geglu",
        dtype,
        (
            format!("[{rows},{}]", 2 * width),
            json!({"rows": rows, "width": width}),
        ),
        bytes(rows * width, dtype, 3.0),
        move |d| {
            let x = random(d, &[rows, 2 * width], dtype, 17)?;
            Ok(Box::new(move || elementwise::geglu(&x)))
        },
    ));
    let (n, c, hw) = (pick(2, 1), pick(1280, 16), pick(16, 8));
    cases.push(case(
        "upsample2x sd",
        "upsample",
        dtype,
        (
            format!("[{n},{c},{hw},{hw}]"),
            json!({"n": n, "c": c, "hw": hw, "factor": 2}),
        ),
        bytes(n * c * hw * hw, dtype, 5.0),
        move |d| {
            let x = random(d, &[n, c, hw, hw], dtype, 18)?;
            Ok(Box::new(move || upsample_nearest2d(&x, 2)))
        },
    ));
    let (b, l, h, d) = (pick(2, 1), pick(4096, 64), 8, 40);
    let elems = b * l * h * d;
    cases.push(case(
        "permute sd-heads",
        "permute",
        dtype,
        (
            format!("[{b},{l},{h},{d}]->[0,2,1,3]"),
            json!({"shape": [b, l, h, d], "order": [0, 2, 1, 3]}),
        ),
        bytes(elems, dtype, 2.0),
        move |dev| {
            let x = random(dev, &[b, l, h, d], dtype, 21)?;
            Ok(Box::new(move || permute(&x, &[0, 2, 1, 3])))
        },
    ));
    let (n, c, hw) = (pick(2, 1), pick(640, 16), pick(32, 8));
    let elems = n * 2 * c * hw * hw;
    cases.push(case(
        "concat sd-skip",
        "concat",
        dtype,
        (
            format!("2x[{n},{c},{hw},{hw}] dim 1"),
            json!({"n": n, "c": c, "hw": hw, "dim": 1}),
        ),
        bytes(elems, dtype, 2.0),
        move |d| {
            let a = random(d, &[n, c, hw, hw], dtype, 22)?;
            let b = random(d, &[n, c, hw, hw], dtype, 23)?;
            Ok(Box::new(move || concat(&[&a, &b], 1)))
        },
    ));
    let (tokens, vocab, width) = (pick(77, 16), pick(49408, 1000), pick(768, 64));
    cases.push(case(
        "embedding clip",
        "embedding",
        dtype,
        (
            format!("{tokens} of [{vocab},{width}]"),
            json!({"tokens": tokens, "vocab": vocab, "width": width}),
        ),
        bytes(tokens * width, dtype, 2.0),
        move |d| {
            let table = random(d, &[vocab, width], dtype, 24)?;
            let ids: Vec<u32> = (0..tokens as u32)
                .map(|i| (i * 7919) % vocab as u32)
                .collect();
            let ids = Tensor::from_u32(d, &[tokens], &ids)?;
            Ok(Box::new(move || embedding(&ids, &table)))
        },
    ));
    let (l, h, d) = (pick(1024, 32), pick(32, 4), 128);
    cases.push(case(
        "rope llm",
        "rope",
        dtype,
        (
            format!("[1,{l},{h},{d}]"),
            json!({"shape": [1, l, h, d], "theta": 10000.0, "style": "half-split"}),
        ),
        bytes(l * h * d, dtype, 2.0),
        move |dev| {
            let x = random(dev, &[1, l, h, d], dtype, 25)?;
            Ok(Box::new(move || rope(&x, 0, 10000.0, RopeStyle::HalfSplit)))
        },
    ));
    let n = pick(2, 2);
    cases.push(case(
        "timestep embedding sd",
        "timestep_embedding",
        dtype,
        (
            format!("[{n}] -> [{n},320]"),
            json!({"n": n, "dim": 320, "flip_sin_to_cos": true, "freq_shift": 0}),
        ),
        bytes(n * 320, dtype, 1.0),
        move |d| {
            let t = Tensor::from_f32(d, &[n], dtype, &vec![999.0; n])?;
            Ok(Box::new(move || {
                timestep_embedding(&t, &TimestepEmbedding::sd15())
            }))
        },
    ));
    cases
}
