#!/usr/bin/env python3
"""Writes the golden fixtures for kiln's schedulers and noise generators.

Run with the project venv (torch, diffusers, numpy; no model downloads: every scheduler is built
from a config dict):

    /work/main/.venv/bin/python tools/make_scheduler_fixtures.py [out_dir]

Outputs (default tests/fixtures/schedulers/):
  rng.json        torch.randn streams on torch.Generator("cpu") for both of PyTorch's CPU kernels
                  (this machine's AVX2/AVX-512 one, and ATEN_CPU_CAPABILITY=default in a
                  subprocess), and the A1111 Philox stream from a port written here.
  runs.json       for SD1 / SD2-v / turbo-like v-prediction configs, every sampler at 4 and 20
                  steps: timesteps, sigmas, init_noise_sigma and the latents after a full loop
                  that drives the scheduler with a fake model (see fake_model) and draws the
                  initial and ancestral noise from one seeded CPU generator; plus one DDIM run
                  with eta = 1.
  img2img.json    the same loop started from an img2img strength (add_noise + begin index).
  sweep.json      timesteps/sigmas for many step counts, or the error diffusers raises.
"""

import inspect
import json
import math
import os
import subprocess
import sys

import numpy as np
import torch
import diffusers
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    UniPCMultistepScheduler,
)

LATENT_SHAPE = (1, 4, 8, 8)
RUN_SEED = 1234

# The SD 1.5 scheduler_config.json as published (PNDM), without timestep_spacing/prediction_type:
# each class then applies its own defaults, which the sweep checks.
SD15_RAW = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
CONFIGS = {
    "sd1": {**SD15_RAW, "prediction_type": "epsilon", "timestep_spacing": "leading"},
    "sd2v": {**SD15_RAW, "prediction_type": "v_prediction", "timestep_spacing": "leading"},
    "turbo_v": {**SD15_RAW, "prediction_type": "v_prediction", "timestep_spacing": "trailing"},
}

# kiln sampler name -> (diffusers class, constructor overrides)
SAMPLERS = {
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler Karras": (EulerDiscreteScheduler, {"use_karras_sigmas": True}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "DDIM": (DDIMScheduler, {}),
    "DDPM": (DDPMScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": (DPMSolverMultistepScheduler,
                            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "LCM": (LCMScheduler, {}),
    # Schedule types as diffusers' scheduler overview maps A1111's: "Exponential" is
    # use_exponential_sigmas with linspace spacing, "SGM Uniform" is trailing spacing.
    "Euler Exponential": (EulerDiscreteScheduler,
                          {"use_exponential_sigmas": True, "timestep_spacing": "linspace"}),
    "Euler SGM Uniform": (EulerDiscreteScheduler, {"timestep_spacing": "trailing"}),
    "Euler a SGM Uniform": (EulerAncestralDiscreteScheduler, {"timestep_spacing": "trailing"}),
    "DDIM SGM Uniform": (DDIMScheduler, {"timestep_spacing": "trailing"}),
    "DPM++ 2M Exponential": (DPMSolverMultistepScheduler,
                             {"use_exponential_sigmas": True, "timestep_spacing": "linspace"}),
    "DPM++ 2M SGM Uniform": (DPMSolverMultistepScheduler, {"timestep_spacing": "trailing"}),
    "DPM++ 2M SDE Exponential": (DPMSolverMultistepScheduler,
                                 {"algorithm_type": "sde-dpmsolver++",
                                  "use_exponential_sigmas": True, "timestep_spacing": "linspace"}),
    # Two model evaluations per step (scheduler.order = 2): 2N-1 timesteps.
    "Heun": (HeunDiscreteScheduler, {}),
    "Heun Karras": (HeunDiscreteScheduler, {"use_karras_sigmas": True}),
    "DPM2": (KDPM2DiscreteScheduler, {}),
    "DPM2 Karras": (KDPM2DiscreteScheduler, {"use_karras_sigmas": True}),
    "DPM2 Exponential": (KDPM2DiscreteScheduler,
                         {"use_exponential_sigmas": True, "timestep_spacing": "linspace"}),
    "UniPC": (UniPCMultistepScheduler, {}),
    "UniPC Karras": (UniPCMultistepScheduler, {"use_karras_sigmas": True}),
    "UniPC SGM Uniform": (UniPCMultistepScheduler, {"timestep_spacing": "trailing"}),
    # Brownian-tree noise (torchsde) seeded with the run's seed, as kiln seeds it per image.
    "DPM++ SDE": (DPMSolverSDEScheduler, {"noise_sampler_seed": RUN_SEED}),
    "DPM++ SDE Karras": (DPMSolverSDEScheduler,
                         {"noise_sampler_seed": RUN_SEED, "use_karras_sigmas": True}),
}


def f32s(values):
    """float32 values as the shortest decimals that round-trip through float32."""
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    return [float(str(v)) for v in arr]


def bits_hash(values):
    """sum over i of (i + 1) * bits(v_i) mod 2^64: equal hashes mean bit-identical streams."""
    b = np.asarray(values, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    w = np.arange(1, len(b) + 1, dtype=np.uint64)
    return int(np.sum(b * w, dtype=np.uint64))


def summarize(values):
    """Full values for small draws; for large ones a bit hash plus a strided sample."""
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    out = {"n": int(v.size), "bits_hash": bits_hash(v)}
    if v.size <= 600:
        out["values"] = f32s(v)
    else:
        idx = sorted(set(range(32)) | set(range(v.size - 32, v.size)) | set(range(0, v.size, 257)))
        out["sample_index"] = idx
        out["sample_values"] = f32s(v[idx])
    return out


# ---------------------------------------------------------------- noise streams

TORCH_CPU_CASES = [
    {"seed": 0, "shapes": [[1, 4, 64, 64]]},
    {"seed": 42, "shapes": [[4], [3], [1, 4, 3, 5], [2, 4, 8, 8], [5], [17], [16], [1]]},
    {"seed": 2**32 + 7, "shapes": [[2, 4, 8, 8]]},
    {"seed": 123456789, "shapes": [[1, 4, 64, 64], [1, 4, 64, 64], [15]]},
]


def torch_cpu_streams():
    cases = []
    for case in TORCH_CPU_CASES:
        g = torch.Generator("cpu").manual_seed(case["seed"])
        calls = [summarize(torch.randn(s, generator=g, dtype=torch.float32)) for s in case["shapes"]]
        cases.append({"seed": case["seed"], "shapes": case["shapes"], "calls": calls})
    return cases


# Philox4x32-10 and the Box-Muller of A1111's modules/rng_philox.py, re-implemented with numpy:
# one counter block (offset, 0, i, 0) per element, key = the seed's two 32-bit halves.
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)


def philox_block(c0, c1, c2, c3, k0, k1):
    mask = np.uint64(0xFFFFFFFF)
    for r in range(10):
        p0 = c0.astype(np.uint64) * np.uint64(PHILOX_M[0])
        p1 = c2.astype(np.uint64) * np.uint64(PHILOX_M[1])
        c0, c1, c2, c3 = (
            (p1 >> np.uint64(32)).astype(np.uint32) ^ c1 ^ k0,
            (p1 & mask).astype(np.uint32),
            (p0 >> np.uint64(32)).astype(np.uint32) ^ c3 ^ k1,
            (p0 & mask).astype(np.uint32),
        )
        if r < 9:
            k0 = np.uint32((int(k0) + PHILOX_W[0]) & 0xFFFFFFFF)
            k1 = np.uint32((int(k1) + PHILOX_W[1]) & 0xFFFFFFFF)
    return c0, c1


def philox_randn(seed, offset, n):
    c2 = np.arange(n, dtype=np.uint32)
    zero = np.zeros(n, dtype=np.uint32)
    c0 = np.full(n, offset, dtype=np.uint32)
    x, y = philox_block(c0, zero, c2, zero, np.uint32(seed & 0xFFFFFFFF), np.uint32(seed >> 32))
    # A1111 keeps its two constants as float32 arrays; numpy then computes in float64.
    inv = np.float64(np.float32(2.3283064e-10))
    inv_2pi = np.float64(np.float32(2.3283064e-10 * 6.2831855))
    u = x.astype(np.float64) * inv + np.float64(np.float32(inv) / np.float32(2))
    v = y.astype(np.float64) * inv_2pi + np.float64(np.float32(inv_2pi) / np.float32(2))
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


PHILOX_CASES = [
    {"seed": 0, "shapes": [[3, 4], [1, 4, 8, 8], [5]]},
    {"seed": 42, "shapes": [[1, 4, 64, 64], [2, 4, 8, 8]]},
    {"seed": 2**33 + 5, "shapes": [[17]]},
]


def philox_streams():
    cases = []
    for case in PHILOX_CASES:
        calls = []
        for offset, shape in enumerate(case["shapes"]):
            calls.append(summarize(philox_randn(case["seed"], offset, int(np.prod(shape)))))
        cases.append({"seed": case["seed"], "shapes": case["shapes"], "calls": calls})
    return cases


def rng_fixture():
    cap = torch.backends.cpu.get_cpu_capability()
    if cap not in ("AVX2", "AVX512"):
        sys.exit(f"the x86 AVX2 stream needs an AVX2 machine; this one reports {cap}")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    portable = subprocess.run(
        [sys.executable, __file__, "--portable-streams"], env=env, check=True,
        capture_output=True, text=True,
    )
    return {
        "torch_version": torch.__version__,
        "torch_cpu_x86_avx2": {"cpu_capability": cap, "cases": torch_cpu_streams()},
        "torch_cpu_portable": json.loads(portable.stdout),
        "philox": {"source": "numpy port in this script of A1111 modules/rng_philox.py",
                   "cases": philox_streams()},
    }


# ---------------------------------------------------------------- scheduler runs


def fake_model(x, t):
    """model_output = 0.1 * x + float32(cos(t / 100)), the cosine taken in double of the float32
    timestep (a UNet's timestep projection casts to float32; only DPMSolverSDE keeps float64
    timesteps, and for the others this cast changes nothing)."""
    c = float(np.float32(math.cos(float(np.float32(t)) / 100.0)))
    return x * 0.1 + c


def make(sampler, cfg):
    cls, overrides = SAMPLERS[sampler]
    return cls.from_config(cfg, **overrides)


def describe(s):
    out = {"timesteps": [float(t) for t in s.timesteps.tolist()],
           "init_noise_sigma": float(s.init_noise_sigma)}
    if isinstance(s, (EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
                      DPMSolverMultistepScheduler, HeunDiscreteScheduler, KDPM2DiscreteScheduler,
                      UniPCMultistepScheduler, DPMSolverSDEScheduler)):
        out["sigmas"] = f32s(s.sigmas)
    return out


def denoise(s, latents, timesteps, g, **step_kwargs):
    # As diffusers' pipelines do: the generator only goes to samplers whose step takes one.
    if "generator" in inspect.signature(s.step).parameters:
        step_kwargs["generator"] = g
    for t in timesteps:
        x = s.scale_model_input(latents, t)
        latents = s.step(fake_model(x, t), t, latents, **step_kwargs).prev_sample
    return latents


def txt2img_run(cfg, sampler, steps, **step_kwargs):
    s = make(sampler, cfg)
    s.set_timesteps(steps)
    out = describe(s)
    g = torch.Generator("cpu").manual_seed(RUN_SEED)
    latents = torch.randn(LATENT_SHAPE, generator=g, dtype=torch.float32) * s.init_noise_sigma
    out["final"] = f32s(denoise(s, latents, s.timesteps, g, **step_kwargs))
    return out


def init_image_latents():
    n = int(np.prod(LATENT_SHAPE))
    return torch.tensor([float(np.float32(math.sin(i * 0.37) * 0.8)) for i in range(n)],
                        dtype=torch.float32).reshape(LATENT_SHAPE)


def img2img_run(cfg, sampler, steps, strength):
    s = make(sampler, cfg)
    s.set_timesteps(steps)
    # StableDiffusionImg2ImgPipeline.get_timesteps
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = s.timesteps[t_start * s.order:]
    if hasattr(s, "set_begin_index"):
        s.set_begin_index(t_start * s.order)
    g = torch.Generator("cpu").manual_seed(RUN_SEED)
    noise = torch.randn(LATENT_SHAPE, generator=g, dtype=torch.float32)
    latents = s.add_noise(init_image_latents(), noise, timesteps[:1])
    out = {"t_start": t_start, "noised": f32s(latents)}
    out["final"] = f32s(denoise(s, latents, timesteps, g))
    return out


def runs_fixture():
    runs = []
    for cname, cfg in CONFIGS.items():
        for sampler in SAMPLERS:
            for steps in (4, 20):
                r = txt2img_run(cfg, sampler, steps)
                runs.append({"config": cname, "sampler": sampler, "steps": steps, **r})
    # DDIM with eta = 1 draws noise at every step.
    ddim_eta = {"config": "sd1", "sampler": "DDIM", "steps": 4, "eta": 1.0,
                **txt2img_run(CONFIGS["sd1"], "DDIM", 4, eta=1.0)}
    return {"configs": CONFIGS, "seed": RUN_SEED, "latent_shape": list(LATENT_SHAPE),
            "runs": runs, "ddim_eta": ddim_eta}


def img2img_fixture():
    steps, strength = 10, 0.75
    runs = [{"sampler": s, **img2img_run(CONFIGS["sd1"], s, steps, strength)} for s in SAMPLERS]
    return {"config": CONFIGS["sd1"], "seed": RUN_SEED, "latent_shape": list(LATENT_SHAPE),
            "steps": steps, "strength": strength, "runs": runs}


def sweep_fixture():
    configs = {"sd15_raw": SD15_RAW, "sd1": CONFIGS["sd1"], "turbo_v": CONFIGS["turbo_v"]}
    cases = []
    for cname, cfg in configs.items():
        for sampler in SAMPLERS:
            for steps in (1, 2, 3, 5, 7, 10, 15, 25, 30, 60):
                entry = {"config": cname, "sampler": sampler, "steps": steps}
                try:
                    s = make(sampler, cfg)
                    s.set_timesteps(steps)
                    entry.update(describe(s))
                except Exception as e:  # diffusers refuses the combination
                    entry["error"] = f"{type(e).__name__}: {e}"
                cases.append(entry)
    return {"configs": configs, "cases": cases}


def write(out_dir, name, obj):
    path = os.path.join(out_dir, name)
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")
    print(f"{path}: {os.path.getsize(path)} bytes")


def main():
    if sys.argv[1:] == ["--portable-streams"]:
        print(json.dumps({"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "cases": torch_cpu_streams()}))
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests/fixtures/schedulers")
    os.makedirs(out_dir, exist_ok=True)
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__}
    write(out_dir, "rng.json", {**meta, **rng_fixture()})
    write(out_dir, "runs.json", {**meta, **runs_fixture()})
    write(out_dir, "img2img.json", {**meta, **img2img_fixture()})
    write(out_dir, "sweep.json", {**meta, **sweep_fixture()})


if __name__ == "__main__":
    main()
