"""The PyTorch side of kiln's benchmarks: runs exactly the cases of a `kiln bench kernels|models --json`
report (same names, shapes, dtypes, warm-up and repeat counts, read from that file) and writes the same
JSON schema, for `kiln bench compare KILN.json TORCH.json`.

    python tools/torch_bench.py --cases kiln.json --out torch.json [--device cpu|cuda] [--threads N]

Timing: on CUDA, events around the timed loop (so launch gaps count, unlike kiln's summed GPU
timestamps); on the CPU, wall clock. Inputs are made once per case; each run allocates its output, as
kiln's do. The UNet and VAE are diffusers models built from the config in the case (random weights,
PyTorch's default initialisation), evaluated under torch.inference_mode with PyTorch's default
attention (scaled_dot_product_attention).
"""

import argparse
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

DTYPES = {"f32": torch.float32, "f16": torch.float16}


def randn(shape, dtype, device):
    return torch.randn(shape, dtype=torch.float32, device=device).to(dtype)


def matmul(p, dt, dev):
    a = randn((p["batch"], p["m"], p["k"]), dt, dev)
    if p["transpose_b"]:
        b = randn((p["batch"], p["n"], p["k"]), dt, dev)
        return lambda: torch.matmul(a, b.transpose(1, 2))
    b = randn((p["batch"], p["k"], p["n"]), dt, dev)
    return lambda: torch.matmul(a, b)


def attention(p, dt, dev):
    # kiln's layout is [B, L, H, D]; SDPA wants [B, H, L, D]. The transposes are views, as a model
    # would feed them; grouped-query heads use SDPA's own GQA support.
    q = randn((p["batch"], p["lq"], p["heads"], p["head_dim"]), dt, dev).transpose(1, 2)
    k = randn((p["batch"], p["lk"], p["kv_heads"], p["head_dim"]), dt, dev).transpose(1, 2)
    v = randn((p["batch"], p["lk"], p["kv_heads"], p["head_dim"]), dt, dev).transpose(1, 2)
    gqa = p["heads"] != p["kv_heads"]
    return lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)


def conv2d(p, dt, dev):
    x = randn((p["n"], p["cin"], p["hw"], p["hw"]), dt, dev)
    w = randn((p["cout"], p["cin"], p["kernel"], p["kernel"]), dt, dev)
    b = randn((p["cout"],), dt, dev)
    return lambda: F.conv2d(x, w, b, padding=p["padding"])


def group_norm(p, dt, dev):
    x = randn((p["n"], p["c"], p["hw"], p["hw"]), dt, dev)
    w, b = randn((p["c"],), dt, dev), randn((p["c"],), dt, dev)
    if p["silu"]:
        return lambda: F.silu(F.group_norm(x, p["groups"], w, b, p["eps"]))
    return lambda: F.group_norm(x, p["groups"], w, b, p["eps"])


def layer_norm(p, dt, dev):
    x = randn((p["rows"], p["width"]), dt, dev)
    return lambda: F.layer_norm(x, (p["width"],), eps=p["eps"])


def rms_norm(p, dt, dev):
    x = randn((p["rows"], p["width"]), dt, dev)
    w = randn((p["width"],), dt, dev)
    return lambda: F.rms_norm(x, (p["width"],), w, eps=p["eps"])


def softmax(p, dt, dev):
    x = randn((p["rows"], p["width"]), dt, dev)
    return lambda: torch.softmax(x, dim=-1)


def add(p, dt, dev):
    a, b = randn((p["elements"],), dt, dev), randn((p["elements"],), dt, dev)
    return lambda: a + b


def copy(p, dt, dev):
    a = randn((p["elements"],), dt, dev)
    return lambda: a.clone()


def geglu(p, dt, dev):
    x = randn((p["rows"], 2 * p["width"]), dt, dev)

    def run():
        h, gate = x.chunk(2, dim=-1)
        return h * F.gelu(gate)

    return run


def upsample(p, dt, dev):
    x = randn((p["n"], p["c"], p["hw"], p["hw"]), dt, dev)
    return lambda: F.interpolate(x, scale_factor=p["factor"], mode="nearest")


def permute(p, dt, dev):
    x = randn(tuple(p["shape"]), dt, dev)
    return lambda: x.permute(*p["order"]).contiguous()


def concat(p, dt, dev):
    shape = (p["n"], p["c"], p["hw"], p["hw"])
    a, b = randn(shape, dt, dev), randn(shape, dt, dev)
    return lambda: torch.cat([a, b], dim=p["dim"])


def embedding(p, dt, dev):
    table = randn((p["vocab"], p["width"]), dt, dev)
    ids = (torch.arange(p["tokens"], device=dev) * 7919) % p["vocab"]
    return lambda: F.embedding(ids, table)


def rope(p, dt, dev):
    # Half-split rotation (GPT-NeoX / Llama layout) in the input dtype, as transformers applies it.
    _, length, _, dim = p["shape"]
    x = randn(tuple(p["shape"]), dt, dev)
    inv_freq = 1.0 / (p["theta"] ** (torch.arange(0, dim, 2, device=dev, dtype=torch.float32) / dim))
    angles = torch.outer(torch.arange(length, device=dev, dtype=torch.float32), inv_freq)
    cos = torch.cat([angles.cos(), angles.cos()], -1)[None, :, None, :].to(dt)
    sin = torch.cat([angles.sin(), angles.sin()], -1)[None, :, None, :].to(dt)

    def run():
        x1, x2 = x[..., : dim // 2], x[..., dim // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    return run


def timestep_embedding(p, dt, dev):
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.full((p["n"],), 999.0, device=dev)
    return lambda: get_timestep_embedding(
        t, p["dim"], flip_sin_to_cos=p["flip_sin_to_cos"], downscale_freq_shift=p["freq_shift"]
    ).to(dt)


def unet(p, dt, dev):
    from diffusers import UNet2DConditionModel

    model = UNet2DConditionModel.from_config(p["config"]).to(dev, dt).eval()
    b, lat = p["batch"], p["latent"]
    sample = randn((b, model.config.in_channels, lat, lat), dt, dev)
    context = randn((b, p["context_tokens"], model.config.cross_attention_dim), dt, dev)
    t = torch.full((b,), p["timestep"], device=dev)
    if "time_ids" not in p:
        return lambda: model(sample, t, context).sample
    # SDXL: the added conditioning (pooled text embedding, the six size numbers).
    added = {
        "text_embeds": randn((b, p["pooled"]), dt, dev),
        "time_ids": torch.tensor([p["time_ids"]] * b, dtype=dt, device=dev),
    }
    return lambda: model(sample, t, context, added_cond_kwargs=added).sample


def controlnet(p, dt, dev):
    """ControlNetModel alone: what a ControlNet adds to each guided step (its residual additions
    inside the UNet are a handful of elementwise adds)."""
    from diffusers import ControlNetModel

    config = {k: v for k, v in p["config"].items() if k != "up_block_types"}
    model = ControlNetModel.from_config(config).to(dev, dt).eval()
    b, lat = p["batch"], p["latent"]
    sample = randn((b, model.config.in_channels, lat, lat), dt, dev)
    context = randn((b, p["context_tokens"], model.config.cross_attention_dim), dt, dev)
    cond = torch.rand((b, 3, lat * 8, lat * 8), dtype=dt, device=dev)
    t = torch.full((b,), p["timestep"], device=dev)
    return lambda: model(sample, t, context, controlnet_cond=cond, return_dict=False)[1]


def vae_decode(p, dt, dev):
    from diffusers import AutoencoderKL

    model = AutoencoderKL.from_config(p["config"]).to(dev, dt).eval()
    z = randn((p["batch"], model.config.latent_channels, p["latent"], p["latent"]), dt, dev)
    return lambda: model.decode(z).sample


def upscale_rrdbnet(p, dt, dev):
    # BasicSR's RRDBNet as written out in make_upscaler_fixtures.py (basicsr is not installed).
    from make_upscaler_fixtures import RRDBNet

    model = RRDBNet(**p["config"]).to(dev, dt).eval()
    x = torch.rand((1, 3, p["pixels"], p["pixels"]), device=dev).to(dt)
    return lambda: model(x)


OPS = {
    "matmul": matmul,
    "attention": attention,
    "conv2d": conv2d,
    "group_norm": group_norm,
    "layer_norm": layer_norm,
    "rms_norm": rms_norm,
    "softmax": softmax,
    "add": add,
    "copy": copy,
    "geglu": geglu,
    "upsample": upsample,
    "permute": permute,
    "concat": concat,
    "embedding": embedding,
    "rope": rope,
    "timestep_embedding": timestep_embedding,
    "unet": unet,
    "controlnet": controlnet,
    "vae_decode": vae_decode,
    "upscale_rrdbnet": upscale_rrdbnet,
}


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure(case, dev, warmup, iters):
    dt = DTYPES[case["dtype"]]
    run = OPS[case["op"]](case["params"], dt, dev)
    for _ in range(warmup):
        run()
    sync(dev)
    if dev.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            run()
        end.record()
        sync(dev)
        seconds = start.elapsed_time(end) * 1e-3 / iters
    else:
        t0 = time.perf_counter()
        for _ in range(iters):
            run()
        seconds = (time.perf_counter() - t0) / iters
    result = {k: case[k] for k in ("name", "op", "dtype", "shape", "params")}
    result.update(iters=iters, mean_ms=seconds * 1e3, gflops=None, gbps=None,
                  timing="cuda-events" if dev.type == "cuda" else "wall-clock")
    # The same work figures kiln reports, recomputed from its rate and time.
    if case.get("gflops"):
        result["gflops"] = case["gflops"] * case["mean_ms"] / result["mean_ms"]
    if case.get("gbps"):
        result["gbps"] = case["gbps"] * case["mean_ms"] / result["mean_ms"]
    if case.get("s_per_mpix"):
        result["s_per_mpix"] = case["s_per_mpix"] * result["mean_ms"] / case["mean_ms"]
    return result


def device_name(dev):
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", required=True, help="JSON written by `kiln bench ... --json`")
    ap.add_argument("--out", required=True, help="where to write PyTorch's JSON")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's choice)")
    ap.add_argument("--filter", help="only cases whose name contains this text")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    with open(args.cases) as f:
        kiln = json.load(f)
    warmup, iters = kiln["warmup"], kiln["iters"]
    results = []
    print(f"device: {device_name(dev)}")
    with torch.inference_mode():
        for case in kiln["results"]:
            if args.filter and args.filter not in case["name"]:
                continue
            if case["op"] not in OPS:
                print(f"{case['name']}: no PyTorch equivalent, skipped", file=sys.stderr)
                continue
            r = measure(case, dev, warmup, iters)
            results.append(r)
            print(f"{r['name']:<32} {r['shape']:<40} {r['mean_ms']:>10.3f} ms")
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    report = dict(tool="pytorch", version=torch.__version__, device=device_name(dev),
                  warmup=warmup, iters=iters, results=results)
    tmp = args.out + ".partial"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
