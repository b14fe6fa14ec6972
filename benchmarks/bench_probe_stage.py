"""Benchmark: the whole `quirky probe` stage, an earlier revision against the working tree, on the same store.

    python benchmarks/bench_probe_stage.py --activations ACT --before REV            # e.g. REV = 3e3f1d4
    python benchmarks/bench_probe_stage.py --activations ACT --before REV --repeats 2 --n-boot 1000

ACT is a directory with one activation store per split (validation/, test/), as `quirky probe` takes it.  The
script exports `src/` of REV with `git archive` into a temporary directory, then runs `quirky probe` as a fresh
process for each version, alternating (before, after, before, after, ...), so that both see the same machine
load; each process runs with OMP_NUM_THREADS (default 1, see docs/BENCHMARKS.md on thread contention).  For every
run it records the wall time, the CPU time and the peak RSS of that process alone (`os.wait4`).  Finally it
compares the two output directories file by file: tables (parquet) as data frames, tensors (safetensors) bit
for bit (NaN included), everything else byte for byte; a result file that differs is listed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def export_revision(rev: str, dest: Path) -> Path:
    """`src/` of git revision `rev`, extracted under `dest`; returns the directory to put on PYTHONPATH."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def run_stage(src: Path, activations: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One `quirky probe` process with `src` first on its path: wall and CPU seconds, peak RSS (this child)."""
    if out.exists():
        shutil.rmtree(out)
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, "-m", "quirky.cli", "probe", "--activations", str(activations), "--out", str(out)]
    cmd += ["--n-boot", str(args.n_boot), "--device", "cpu", "-q", *args.extra]
    return measure_process(cmd, env, f"quirky probe ({src})")


def measure_process(cmd: list[str], env: dict[str, str], what: str) -> dict[str, float]:
    """Run `cmd` to completion: its wall time, CPU time and peak RSS (`os.wait4`: that child alone).  stderr
    goes to a temporary file, not a pipe, so a chatty child cannot block on a full pipe before it is waited for."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"{what} failed:\n{err.read().decode(errors='replace')[-3000:]}")
    return {
        "wall_s": wall,
        "cpu_user_s": usage.ru_utime,
        "cpu_sys_s": usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def _same_tensors(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    if x.keys() != y.keys():
        return False
    for k in x:
        u, v = x[k].contiguous(), y[k].contiguous()
        if u.dtype != v.dtype or u.shape != v.shape:
            return False
        if u.is_floating_point():  # compare bit patterns: NaN equals NaN, -0.0 differs from 0.0
            u, v = u.view(torch.uint8), v.view(torch.uint8)
        if not torch.equal(u, v):
            return False
    return True


def compare_outputs(a: Path, b: Path) -> dict[str, list[str]]:
    """Files of two output directories: identical, differing, only in one of them."""
    import pandas as pd

    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    same, differ = [], []
    for rel in sorted(files_a & files_b):
        fa, fb = a / rel, b / rel
        if fa.suffix == ".parquet":
            ok = pd.read_parquet(fa).equals(pd.read_parquet(fb))
        elif fa.suffix == ".safetensors":
            ok = _same_tensors(fa, fb)
        else:
            ok = fa.read_bytes() == fb.read_bytes()
        (same if ok else differ).append(str(rel))
    return {
        "identical": same,
        "differing": differ,
        "only_before": sorted(map(str, files_a - files_b)),
        "only_after": sorted(map(str, files_b - files_a)),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--activations", required=True, type=Path)
    ap.add_argument("--before", required=True, help="git revision to compare against (its src/ is exported)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1, help="before/after pairs, alternating")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    ap.add_argument(
        "--work", type=Path, default=None, help="where outputs go (default: a temporary directory)"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    ap.add_argument("extra", nargs="*", help="further `quirky probe` options, after --")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-probe-stage-"))
    before_src = export_revision(args.before, work / "before")
    versions = {"before": before_src, "after": REPO / "src"}
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    load = [os.getloadavg()[0]]
    for i in range(args.repeats):
        for name, src in versions.items():
            res = run_stage(src, args.activations, work / f"out-{name}", args)
            runs[name].append(res)
            print(
                f"{name:<7} run {i + 1}: {res['wall_s']:7.1f} s wall, {res['cpu_user_s']:7.1f} s user, "
                f"{res['cpu_sys_s']:6.1f} s sys, peak RSS {res['peak_rss_mb']:7.0f} MB",
                flush=True,
            )
            load.append(os.getloadavg()[0])
    cmp = compare_outputs(work / "out-before", work / "out-after")
    best = {k: min(r["wall_s"] for r in v) for k, v in runs.items()}
    print(
        f"best wall: before {best['before']:.1f} s, after {best['after']:.1f} s, "
        f"ratio {best['before'] / best['after']:.1f}x; load average (1 min) {min(load):.1f}-{max(load):.1f}"
    )
    print(
        f"outputs: {len(cmp['identical'])} identical, {len(cmp['differing'])} differing, "
        f"{len(cmp['only_before'])} only before, {len(cmp['only_after'])} only after"
    )
    for key in ("differing", "only_before", "only_after"):
        for rel in cmp[key]:
            print(f"  {key}: {rel}")
    out = {
        "activations": str(args.activations),
        "before": args.before,
        "n_boot": args.n_boot,
        "threads": args.threads,
        "runs": runs,
        "load_avg_1min": load,
        "comparison": {k: v if k != "identical" else len(v) for k, v in cmp.items()},
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
