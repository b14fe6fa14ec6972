"""Benchmark: batched matrix-vector products on the CPU, `torch.bmm` against a loop of `torch.mm` over layers.

    python benchmarks/bench_matvec.py --threads 1
    python benchmarks/bench_matvec.py --threads 2

Why: logistic regression's two passes per L-BFGS iteration are matrix-vector products over [L, n, f] (the
logits x w, and the gradient r x).  `optim.bmm_layers` uses one `bmm` while every layer runs, and a loop of `mm`
once some have stopped.  This prints both for the shapes of the demo store and of the 7B benchmark, and whether
they give the same bits (they do not: different BLAS kernels), which is why the faster loop is not used for
every pass (see docs/BENCHMARKS.md, "Not done").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

SHAPES = ((2, 4000, 8192), (30, 1000, 576), (30, 1000, 1152), (8, 2000, 2048))


def best_ms(f: Callable[[], object], reps: int = 20) -> float:
    """Mean milliseconds per call after one warm-up call."""
    f()
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t0) / reps * 1e3


def measure(num_layers: int, n: int, f: int, gen: torch.Generator) -> str:
    """One shape: both products both ways, and whether bmm and the loop agree bit for bit."""
    x = torch.randn(num_layers, n, f, generator=gen)
    w = torch.randn(num_layers, f, 1, generator=gen)
    r = torch.randn(num_layers, 1, n, generator=gen)
    logits, grad = torch.empty(num_layers, n, 1), torch.empty(num_layers, 1, f)

    def loop_logits() -> None:
        for layer in range(num_layers):
            torch.mm(x[layer], w[layer], out=logits[layer])

    def loop_grad() -> None:
        for layer in range(num_layers):
            torch.mm(r[layer], x[layer], out=grad[layer])

    loop_logits()
    same = torch.equal(torch.bmm(x, w), logits)
    return (
        f"L {num_layers:2d} n {n:5d} f {f:5d}: logits bmm {best_ms(lambda: torch.bmm(x, w)):7.2f}"
        f" mm loop {best_ms(loop_logits):7.2f} (same bits: {same}); gradient bmm"
        f" {best_ms(lambda: torch.bmm(r, x)):7.2f} mm loop {best_ms(loop_grad):7.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"torch threads {args.threads}; milliseconds per product")
    for shape in SHAPES:
        print(measure(*shape, gen), flush=True)


if __name__ == "__main__":
    main()
