#!/usr/bin/env python3
"""Times numpy's f32 matmul at the shape `kiln bench kernels` calls "matmul square", with the same
warm-up and repeat counts, and prints the result in kiln's benchmark JSON schema.

Usage: numpy_matmul_bench.py [--size 1024] [--warmup 2] [--iters 10] [--json FILE]
"""
import argparse
import json
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    n = args.size
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    for _ in range(args.warmup):
        a @ b
    start = time.perf_counter()
    for _ in range(args.iters):
        a @ b
    seconds = (time.perf_counter() - start) / args.iters
    try:
        from threadpoolctl import threadpool_info
        blas = [(i.get("internal_api"), i.get("num_threads"), i.get("architecture")) for i in threadpool_info()]
    except ImportError:
        blas = []
    result = {
        "name": "matmul square f32",
        "op": "matmul",
        "dtype": "f32",
        "shape": f"1x[{n}x{n}]x[{n}x{n}]",
        "iters": args.iters,
        "mean_ms": seconds * 1e3,
        "gflops": 2.0 * n**3 / seconds * 1e-9,
        "gbps": None,
        "timing": "wall-clock",
    }
    report = {"tool": "numpy", "version": np.__version__, "device": f"cpu {blas}",
              "warmup": args.warmup, "iters": args.iters, "results": [result]}
    text = json.dumps(report, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
