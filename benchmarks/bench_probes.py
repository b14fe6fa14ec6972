"""Benchmark: fit every probe method on every layer, the reference's way (a per-layer loop) and ours (batched).

    python benchmarks/bench_probes.py                          # n=4000, d=4096, 32 layers (needs ~12 GB RAM)
    python benchmarks/bench_probes.py --n 2000 --d 1024 --layers 8
    python benchmarks/bench_probes.py --baseline-layers 2      # time the slow loop on 2 layers, scale by L/2

The "reference loop" re-implements what the original system does per layer (`elk_generalization/elk/*.py`,
driven one layer at a time by `elk/transfer.py`): `lr` and
`lr-on-pair` with one `torch.optim.LBFGS` call (strong Wolfe, max_iter 10,000, zero init) per layer;
mean-diff with a sign flip; LDA with `pinv` of the d x d pooled covariance; CCS with `LeaceFitter.eraser` and 10
restarts x LBFGS(max_iter=1000, tolerances = float eps) per layer plus Platt scaling; CRC with
`LeaceEraser.fit`, `pca_lowrank(q=1, niter=10)` and Platt scaling; the random baseline with 1000 directions per
layer and the cumsum AUROC.  Ours is `quirky.probes` (all layers at once).  Data are synthetic, with the
statistics of a real residual stream (see `synthetic`) and a planted truth direction whose strength grows with
depth.  The script prints per-method times, the ratio, and the mean training AUROC of both
implementations on the last layer (they should agree).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable

import torch
from concept_erasure import LeaceEraser, LeaceFitter

from quirky.probes import METHODS, make_probe
from quirky.probes.metrics import auroc

# ---------------------------------------------------------------------------------------------------------------
# synthetic activations


def synthetic(
    n: int, d: int, num_layers: int, seed: int, rank: int = 512
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hiddens [L, n, d], pairs [L, n, 2, d], labels [n]) in float32, shaped like a real residual stream.

    Calibrated on SmolLM2-135M's residual stream (measured on an extracted store): the mean dominates each state
    (|mean| ~ 5x the centred norm), per-dimension scales spread ~5x, and the correlation spectrum is steep (the
    top direction carries ~30% of the variance, the 50th ~0.1%).  Here: a rank-`rank` power-law spectrum
    (k^-1.5) holding 90% of the variance plus isotropic noise, log-normal per-dimension scales, and a planted
    truth direction whose strength grows with depth.
    """
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 2).float()[torch.randperm(n, generator=g)]
    sign = (2 * y - 1)[:, None]
    r = min(rank, d)
    basis = torch.linalg.qr(torch.randn(d, r, generator=g)).Q.T  # [r, d] orthonormal rows
    lam = torch.arange(1, r + 1, dtype=torch.float32) ** -1.5
    lam = lam * (0.9 * d / lam.sum())
    scales = torch.exp(0.4 * torch.randn(d, generator=g))
    mean = torch.randn(d, generator=g) * 5.0 * scales
    truth = torch.randn(d, generator=g)
    truth /= truth.norm()
    side_dir = torch.randn(d, generator=g) * 0.5
    hid = torch.empty(num_layers, n, d)
    pairs = torch.empty(num_layers, n, 2, d)
    for layer in range(num_layers):
        strength = 0.3 + 2.7 * layer / max(1, num_layers - 1)
        z = torch.randn(n, r, generator=g) * lam.sqrt()
        x = (z @ basis + math.sqrt(0.1) * torch.randn(n, d, generator=g)) * scales + mean
        x += strength * sign * truth
        hid[layer] = x
        push = 0.5 * strength * sign * truth + side_dir  # [n, d]
        pairs[layer, :, 0] = x - push + 0.3 * torch.randn(n, d, generator=g)
        pairs[layer, :, 1] = x + push + 0.3 * torch.randn(n, d, generator=g)
    return hid, pairs, y


# ---------------------------------------------------------------------------------------------------------------
# the reference's per-layer loop (re-implemented for timing; one probe per layer)


def ref_lr(x: torch.Tensor, y: torch.Tensor, max_iter: int) -> torch.Tensor:
    lin = torch.nn.Linear(x.shape[1], 1)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), line_search_fn="strong_wolfe", max_iter=max_iter)

    def closure() -> float:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(lin(x).squeeze(-1), y)
        loss = loss + 1e-3 * lin.weight.square().sum()
        loss.backward()
        return float(loss.detach())

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        LR_OBJECTIVES.append(lr_objective(x, y, lin.weight[0], lin.bias[0]))
        return lin(x).squeeze(-1)


LR_OBJECTIVES: list[float] = []  # the reference loop's final lr objectives, in the order of the layers fitted


def lr_objective(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    """mean BCE + 1e-3 ||w||^2 in float64: the objective both implementations minimise."""
    s = x.double() @ w.double() + b.double()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(s, y.double())
    return float(bce + 1e-3 * w.double().square().sum())


def ref_sign_flip(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return s if float(auroc(s, y)) >= 0.5 else -s


def ref_mean_diff(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    diff = x[y == 1].mean(0) - x[y == 0].mean(0)
    w = diff / diff.norm()
    b = (torch.rand(()) * 2 - 1) / math.sqrt(x.shape[1])  # the reference's random bias
    return ref_sign_flip(x @ w + b, y)


def ref_lda(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x0, x1 = x[y == 0], x[y == 1]
    s = (len(x0) * torch.cov(x0.T) + len(x1) * torch.cov(x1.T)) / len(x)
    w = torch.linalg.pinv(s) @ (x1.mean(0) - x0.mean(0))
    return ref_sign_flip(x @ w, y)


def ref_platt(raw: Callable[[], torch.Tensor], params: list[torch.Tensor], y2: torch.Tensor) -> None:
    opt = torch.optim.LBFGS(
        params,
        line_search_fn="strong_wolfe",
        max_iter=100,
        tolerance_change=torch.finfo(torch.float32).eps,
        tolerance_grad=torch.finfo(torch.float32).eps,
    )

    def closure() -> float:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(raw(), y2)
        loss.backward()
        return float(loss)

    with torch.enable_grad():
        opt.step(closure)


def ref_ccs(pairs: torch.Tensor, y: torch.Tensor, restarts: int, max_iter: int) -> torch.Tensor:
    n, _, d = pairs.shape
    neg, pos = pairs[:, 0], pairs[:, 1]
    fitter = LeaceFitter(d, 2, dtype=pairs.dtype)
    fitter.update(neg, torch.tensor([0.0, 1.0]).expand(n, 2))
    fitter.update(pos, torch.tensor([1.0, 0.0]).expand(n, 2))
    eraser = fitter.eraser
    neg, pos = eraser(neg), eraser(pos)
    eps = torch.finfo(torch.float32).eps
    best, best_state = math.inf, None
    lin = torch.nn.Linear(d, 1)
    for _ in range(restarts):
        lin.reset_parameters()
        opt = torch.optim.LBFGS(
            lin.parameters(),
            line_search_fn="strong_wolfe",
            max_iter=max_iter,
            tolerance_change=eps,
            tolerance_grad=eps,
        )
        raw = math.inf

        def closure(opt: torch.optim.Optimizer = opt) -> float:
            nonlocal raw
            opt.zero_grad()
            p0, p1 = torch.sigmoid(lin(neg)), torch.sigmoid(lin(pos))
            loss = (p0 - (1 - p1)).pow(2).mean() + torch.minimum(p0, p1).pow(2).mean()
            raw = float(loss)
            reg = sum(0.01 * p.norm() ** 2 / 2 for p in lin.parameters())
            (loss + reg).backward()
            return float(loss + reg)

        with torch.enable_grad():
            opt.step(closure)
        if raw < best:
            best, best_state = raw, {k: v.clone() for k, v in lin.state_dict().items()}
    lin.load_state_dict(best_state)
    scale, bias = torch.ones((), requires_grad=True), torch.zeros((), requires_grad=True)
    y2 = torch.stack([1 - y, y], dim=1)
    with torch.no_grad():
        side = torch.stack([lin(neg), lin(pos)], dim=1).squeeze(-1)
    ref_platt(lambda: side * scale + bias, [scale, bias], y2)
    return (scale * (side[:, 1] - side[:, 0])).detach()


def ref_crc(pairs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    n = len(pairs)
    eraser = LeaceEraser.fit(
        pairs.flatten(0, 1), torch.stack([pairs.new_zeros(n), pairs.new_ones(n)], 1).flatten()
    )
    e = eraser(pairs)
    _, _, v = torch.pca_lowrank(e[:, 1] - e[:, 0], q=1, niter=10)
    side = (e @ v).squeeze(-1)  # [n, 2]
    scale, bias = torch.ones((), requires_grad=True), torch.zeros((), requires_grad=True)
    ref_platt(lambda: scale * (side + bias), [scale, bias], torch.stack([1 - y, y], dim=1))
    return (scale * (side[:, 1] - side[:, 0])).detach()


def ref_random(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    z = torch.randn(k, x.shape[1])
    s = z @ x.T
    z *= torch.sign(_cumsum_auroc(y.expand(k, -1), s) - 0.5)[:, None]
    return _cumsum_auroc(y.expand(k, -1), z @ x.T)


def _cumsum_auroc(y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    idx = s.argsort(descending=True, dim=-1)
    ys = y.gather(-1, idx)
    tpr = ys.cumsum(-1) / ys.sum(-1, keepdim=True)
    fpr = (1 - ys).cumsum(-1) / (1 - ys).sum(-1, keepdim=True)
    dfpr = torch.cat([fpr[..., 1:] - fpr[..., :-1], torch.zeros_like(fpr[..., :1])], -1)
    return (tpr * dfpr).sum(-1)


def reference_method(
    method: str, args: argparse.Namespace
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-layer fit-and-score-training-data function of the reference loop."""
    return {
        "lr": lambda x, y: ref_lr(x, y, args.lr_max_iter),
        "lr-on-pair": lambda x, y: ref_lr(x.flatten(1), y, args.lr_max_iter),
        "mean-diff": ref_mean_diff,
        "mean-diff-on-pair": lambda x, y: ref_mean_diff(x.flatten(1), y),
        "lda": ref_lda,
        "ccs": lambda x, y: ref_ccs(x, y, 10, args.ccs_max_iter),
        "crc": ref_crc,
        "random": lambda x, y: ref_random(x, y, args.random_directions),
    }[method]


# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument(
        "--store", default=None, help="benchmark on a real activation store instead of synthetic data"
    )
    ap.add_argument("--subset", default="all", help="rows of --store to fit on (all, A, B, AE, ...)")
    ap.add_argument(
        "--baseline-layers",
        type=int,
        default=None,
        help="time the reference loop on this many (evenly spaced) layers and scale to all layers",
    )
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--lr-max-iter", type=int, default=10_000)
    ap.add_argument("--ccs-max-iter", type=int, default=1000)
    ap.add_argument("--random-directions", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    if args.store:
        import numpy as np

        from quirky.extraction.store import open_store

        store = open_store(args.store)
        rows = torch.as_tensor(np.flatnonzero(store.mask(args.subset)))
        hid, pairs = store.hiddens()[:, rows], store.pairs()[:, rows]
        y = torch.as_tensor(store.meta["label"].to_numpy()[rows.numpy()]).float()
        args.layers, args.n, args.d = store.num_layers, len(rows), store.hidden_size
        source = f"store {args.store} (subset {args.subset})"
    else:
        hid, pairs, y = synthetic(args.n, args.d, args.layers, args.seed)
        source = "synthetic"
    print(
        f"data: {source}: n={args.n} d={args.d} layers={args.layers} (hiddens {hid.numel() * 4 / 2**30:.2f} GiB, "
        f"pairs {pairs.numel() * 4 / 2**30:.2f} GiB) ready in {time.perf_counter() - t0:.1f}s; "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    num_layers = args.layers
    b_layers = list(range(num_layers))
    if args.baseline_layers and args.baseline_layers < num_layers:
        k = args.baseline_layers
        b_layers = sorted({round(i * (num_layers - 1) / max(1, k - 1)) for i in range(k)})
    rows = []
    print(
        f"{'method':<18} {'ours s':>9} {'ref loop s':>11} {'ratio':>7}   train AUROC last layer (ours / ref)"
    )
    for method in methods:
        probe = make_probe(method, **({"n_directions": args.random_directions} if method == "random" else {}))
        data = pairs if probe.pair else hid
        t = time.perf_counter()
        probe.fit(data, y)
        ours = time.perf_counter() - t
        s = probe.score(data)
        ours_auc = float(auroc(s[-1], y).mean())
        ref_time = math.nan
        ref_auc = math.nan
        if not args.no_baseline:
            fn = reference_method(method, args)
            t = time.perf_counter()
            last = None
            for layer in b_layers:
                last = fn(data[layer], y)
            ref_time = (time.perf_counter() - t) * num_layers / len(b_layers)
            if b_layers[-1] == num_layers - 1 and last is not None:
                # the random baseline's reference returns per-direction test AUROCs, the others scores
                ref_auc = float(last.mean()) if method == "random" else float(auroc(last, y))
        ratio = ref_time / ours
        gap = math.nan
        if method in ("lr", "lr-on-pair") and LR_OBJECTIVES:
            feats = data.flatten(2) if probe.pair else data
            ours_obj = [lr_objective(feats[i], y, probe.direction[i], probe.bias[i]) for i in b_layers]
            gap = sum(r - o for r, o in zip(LR_OBJECTIVES, ours_obj, strict=True)) / len(ours_obj)
            LR_OBJECTIVES.clear()
        rows.append(
            {
                "method": method,
                "ours_s": ours,
                "reference_s": ref_time,
                "ratio": ratio,
                "ours_train_auroc": ours_auc,
                "reference_train_auroc": ref_auc,
                "lr_objective_reference_minus_ours": gap,
            }
        )
        extra = f"   objective ref - ours {gap:+.1e}" if math.isfinite(gap) else ""
        print(
            f"{method:<18} {ours:9.2f} {ref_time:11.2f} {ratio:7.1f}   {ours_auc:.4f} / {ref_auc:.4f}{extra}",
            flush=True,
        )
    tot_o = sum(r["ours_s"] for r in rows)
    tot_r = sum(r["reference_s"] for r in rows)
    print(f"{'total':<18} {tot_o:9.2f} {tot_r:11.2f} {tot_r / tot_o:7.1f}")
    if len(b_layers) < num_layers and not args.no_baseline:
        print(f"(reference loop timed on layers {b_layers} and scaled by {num_layers}/{len(b_layers)})")
    out = {
        "data": source,
        "n": args.n,
        "d": args.d,
        "layers": args.layers,
        "baseline_layers": b_layers,
        "threads": torch.get_num_threads(),
        "methods": rows,
        "total_ours_s": tot_o,
        "total_reference_s": tot_r,
        "ratio": tot_r / tot_o,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
