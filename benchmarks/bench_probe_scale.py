"""Benchmark: how the `quirky probe` stage grows with the store (rows, hidden size, layers), one method at a time.

    python benchmarks/bench_probe_scale.py --sizes small,medium           # minutes
    python benchmarks/bench_probe_scale.py --sizes 7b --work /big/disk    # the 7B shape: about 4 GB of stores
    python benchmarks/bench_probe_scale.py --sizes 7b --together          # all methods in one process

For each size a synthetic pair of float16 stores (validation = probe training, test = evaluation, pairs
included) is written once into `--work` (kept and reused by later runs of the script: the data is a pure
function of the size and seed).  Then `quirky probe` runs as a fresh process per method, over the reference's
experiment grid for that method with `--n-boot` bootstrap resamples, and the script records that process's wall
time, CPU time and peak RSS (`os.wait4`: the child alone).  With `--together`, one `quirky probe` process runs
all the methods instead (what a user runs; its peak is the largest of the methods' with the stage's caches).  The stores' float32 size is printed beside the RSS,
since the target of issue 15 is a peak RSS within 2x the float32 size of the training store.

The data: a truth direction whose sign is the example's label on every layer, Bob's examples flipped on half of
them (a quirk), Gaussian noise of unit variance elsewhere; so the probes converge as on real stores rather than on
pure noise.  Sizes (n_val, n_test, layers, d): small 1000/500/8/1024, medium 2000/500/16/2048,
7b 4000/1000/32/4096 (the reference's Llama-2-7B-scale store: 4000 training and 1000 test examples).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench_probe_stage import measure_process  # this folder is on sys.path when the script runs

SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (400, 200, 2, 64),  # a smoke test of the script itself
    "small": (1000, 500, 8, 1024),
    "medium": (2000, 500, 16, 2048),
    "7b": (4000, 1000, 32, 4096),
}
METHODS = ("lr", "lr-on-pair", "mean-diff", "mean-diff-on-pair", "lda", "ccs", "crc", "random")


def write_synthetic_store(path: Path, n: int, layers: int, d: int, seed: int) -> None:
    """One float16 store of `n` rows, written layer block by layer block (never the whole store in memory)."""
    import numpy as np
    import pandas as pd
    import torch

    from quirky.extraction.store import write_store

    rng = np.random.default_rng(seed)
    bob = np.arange(n) % 2 == 1
    alice_label = rng.random(n) < 0.5
    bob_label = np.where(rng.random(n) < 0.5, alice_label, ~alice_label)
    label = np.where(bob, bob_label, alice_label)
    meta = pd.DataFrame(
        {
            "id": [f"s{seed}-{i}" for i in range(n)],
            "character": np.where(bob, "Bob", "Alice"),
            "label": label.astype(int),
            "alice_label": alice_label.astype(int),
            "bob_label": bob_label.astype(int),
            "difficulty_quantile": rng.random(n),
            "template": 0,
        }
    )
    gen = torch.Generator().manual_seed(seed)
    sign = torch.as_tensor(2.0 * label - 1.0, dtype=torch.float32)
    hiddens = torch.empty(layers, n, d, dtype=torch.float16)
    pairs = torch.empty(layers, n, 2, d, dtype=torch.float16)
    for layer in range(layers):
        flip = torch.as_tensor(np.where(bob & (layer >= layers // 2), -1.0, 1.0), dtype=torch.float32)
        h = torch.randn(n, d, generator=gen)
        h[:, 0] += 1.5 * sign * flip
        hiddens[layer] = h.to(torch.float16)
        p = torch.randn(n, 2, d, generator=gen)
        p[:, 1, 0] += 1.5 * sign * flip
        p[:, 0, 0] -= 1.5 * sign * flip
        pairs[layer] = p.to(torch.float16)
    write_store(
        path,
        hiddens=hiddens,
        pairs=pairs,
        lm_log_odds=sign * 0.5,
        meta=meta,
        config={"source": {"model": {"model": {"name": "synthetic"}}, "dataset": {"name": "synthetic"}}},
        storage_dtype=torch.float16,
    )


def stores_for(size: str, work: Path) -> Path:
    """The activation directory of `size` under `work`, written once."""
    from quirky.extraction.store import read_store_json

    n_val, n_test, layers, d = SIZES[size]
    act = work / f"stores-{size}"
    for split, n, seed in (("validation", n_val, 0), ("test", n_test, 1)):
        if read_store_json(act / split) is None:
            print(
                f"writing the {size} {split} store ({n} x {layers} layers x d {d}, float16) ...", flush=True
            )
            write_synthetic_store(act / split, n, layers, d, seed)
    return act


def run_probe(act: Path, out: Path, method: str, n_boot: int, threads: int) -> dict[str, Any]:
    """One `quirky probe` process for `method` (one, or several comma-separated): wall, CPU and peak RSS of
    that process alone."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "QUIRKY_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "quirky.cli", "probe", "--activations", str(act), "--out", str(out)]
    cmd += ["--methods", method, "--n-boot", str(n_boot), "--device", "cpu", "-q"]
    res = measure_process(cmd, env, f"quirky probe --methods {method}")
    return {
        "wall_s": round(res["wall_s"], 2),
        "cpu_s": round(res["cpu_user_s"] + res["cpu_sys_s"], 2),
        "peak_rss_mb": round(res["peak_rss_mb"]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="small,medium", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each `quirky probe`")
    ap.add_argument("--work", type=Path, default=Path("bench-probe-scale"), help="stores and outputs go here")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    ap.add_argument("--together", action="store_true", help="one process for all the methods")
    args = ap.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise SystemExit(f"unknown size(s) {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    methods = [m for m in args.methods.split(",") if m]
    if args.together:
        methods = [",".join(methods)]
    results: dict[str, Any] = {}
    for size in sizes:
        n_val, n_test, layers, d = SIZES[size]
        act = stores_for(size, args.work)
        train_f32_mb = n_val * layers * d * 3 * 4 / 2**20  # hiddens + both pair states
        print(
            f"\n{size}: n_val {n_val}, n_test {n_test}, {layers} layers, d {d}; training store in float32 "
            f"{train_f32_mb:.0f} MB (2x: {2 * train_f32_mb:.0f} MB)",
            flush=True,
        )
        rows = {}
        for method in methods:
            tag = "together" if args.together else method
            res = run_probe(act, args.work / f"out-{size}-{tag}", method, args.n_boot, args.threads)
            rows[method] = res
            print(
                f"  {method:<18} {res['wall_s']:8.1f} s wall {res['cpu_s']:8.1f} s CPU "
                f"peak RSS {res['peak_rss_mb']:6d} MB ({res['peak_rss_mb'] / train_f32_mb:.2f}x)",
                flush=True,
            )
        total = sum(r["wall_s"] for r in rows.values())
        print(f"  {'all methods':<18} {total:8.1f} s wall", flush=True)
        results[size] = {
            "shape": {"n_val": n_val, "n_test": n_test, "layers": layers, "d": d},
            "train_store_float32_mb": round(train_f32_mb),
            "methods": rows,
            "total_wall_s": round(total, 1),
        }
    out = {
        "n_boot": args.n_boot,
        "threads": args.threads,
        "together": args.together,
        "load_avg_1min": os.getloadavg()[0],
        "sizes": results,
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
