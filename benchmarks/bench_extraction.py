"""Extraction throughput: the original method vs quirky's, same model, same prompts, one run.

The original (EleutherAI/elk-generalization `extract_hiddens.py`) runs at batch size 1 with three forward passes
per example: the prompt (output_hidden_states, use_cache, full logits), then one token for each answer's first
token on top of the prompt's KV cache.  It is reimplemented here faithfully but *correctly*: the cache is cropped
back to the prompt after choice 0, so choice 1 does not see choice 0 (the original's shared-mutable-cache bug).

Ours is `quirky.extraction.extract_frame` end to end (tokenization, packed batches, writing the store).

The prompts are split into blocks and the two methods alternate block by block (which one goes first alternates
too), so a change in machine load during the run hits both about equally.  The outputs are compared as well.

    python benchmarks/bench_extraction.py [--model smollm2] [--n 512] [--batch-size 32] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch


def original_method(model, tokenizer, statements, choice0, choice1):
    """Batch size 1, prompt forward with cache + one cached forward per answer's first token."""
    hs, ps, los = [], [], []
    with torch.inference_mode():
        for text, a, b in zip(statements, choice0, choice1, strict=True):
            enc = tokenizer(text, return_tensors="pt")
            out = model(**enc, output_hidden_states=True, use_cache=True)
            hs.append(torch.stack([h[0, -1] for h in out.hidden_states[1:]]).cpu())
            los.append((out.logits[0, -1, b] - out.logits[0, -1, a]).cpu())
            cache = getattr(out, "cache", None) or out.past_key_values
            pair = []
            for tok in (a, b):
                o = model(
                    input_ids=torch.tensor([[tok]]), cache=cache, output_hidden_states=True, use_cache=True
                )
                pair.append(torch.stack([h[0, -1] for h in o.hidden_states[1:]]).cpu())
                cache.crop(-1)  # drop the answer token again: choice 1 must not see choice 0
            ps.append(torch.stack(pair, dim=1))
    return torch.stack(hs, 1), torch.stack(ps, 1), torch.stack(los)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=512, help="number of prompts")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=4, help="alternate the two methods over this many blocks")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--dataset", type=Path, default=None, help="an addition dataset dir (default: build one)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from quirky.datasets import build_dataset, load_templated
    from quirky.extraction.extract import ExtractSettings, extract_frame
    from quirky.models import load_model
    from quirky.models.choices import encode_with_choices

    work = Path(tempfile.mkdtemp(prefix="quirky-bench-"))
    try:
        dataset = args.dataset
        if dataset is None:
            dataset = work / "addition"
            build_dataset("addition", dataset, seed=0, n_train=16, n_val=args.n, n_test=16)
        df = load_templated(dataset, "validation", max_examples=args.n)
        model, tokenizer = load_model(args.model)
        prompts, c0, c1 = encode_with_choices(tokenizer, df["statement"].tolist(), df["choices"].tolist())
        first0 = [c[0] for c in c0]
        first1 = [c[0] for c in c1]
        n = len(df)
        lens = [len(p) for p in prompts]
        print(
            f"model {args.model}: {model.config.num_hidden_layers} layers, d={model.config.hidden_size}; "
            f"{n} addition prompts, {min(lens)}-{max(lens)} tokens (mean {sum(lens) / n:.1f}); "
            f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}"
        )
        # warm-up both paths (lazy imports, allocator) on a few prompts, untimed
        original_method(model, tokenizer, df["statement"].tolist()[:2], first0[:2], first1[:2])
        extract_frame(model, tokenizer, df.iloc[:4], work / "warm", source={}, progress=False)

        bounds = [(k * n // args.blocks, (k + 1) * n // args.blocks) for k in range(args.blocks)]
        t_orig = t_ours = 0.0
        ref_h, ref_p, ref_lo, our_h, our_p, our_lo = [], [], [], [], [], []
        settings = ExtractSettings(batch_size=args.batch_size, chunk_size=n, storage_dtype="float32")
        for k, (a, b) in enumerate(bounds):
            for method in ("orig", "ours") if k % 2 == 0 else ("ours", "orig"):
                t = time.perf_counter()
                if method == "orig":
                    h, p, lo = original_method(
                        model, tokenizer, df["statement"].tolist()[a:b], first0[a:b], first1[a:b]
                    )
                    t_orig += time.perf_counter() - t
                    ref_h.append(h), ref_p.append(p), ref_lo.append(lo)
                else:
                    store = extract_frame(
                        model,
                        tokenizer,
                        df.iloc[a:b],
                        work / f"store{k}",
                        source={},
                        settings=settings,
                        progress=False,
                    )
                    t_ours += time.perf_counter() - t
                    (
                        our_h.append(store.hiddens()),
                        our_p.append(store.pairs()),
                        our_lo.append(store.lm_log_odds()),
                    )
            print(
                f"  block {k + 1}/{args.blocks}: original {t_orig:.1f} s, ours {t_ours:.1f} s so far",
                flush=True,
            )

        h_ref, h_our = torch.cat(ref_h, 1), torch.cat(our_h, 1)
        p_ref, p_our = torch.cat(ref_p, 1), torch.cat(our_p, 1)
        lo_ref, lo_our = torch.cat(ref_lo), torch.cat(our_lo)
        rel = max(
            ((h_ref - h_our).abs().max() / h_ref.abs().max()).item(),
            ((p_ref - p_our).abs().max() / p_ref.abs().max()).item(),
        )
        print(
            f"agreement: max |diff| / max |x| of states {rel:.2e}, log-odds max |diff| {(lo_ref - lo_our).abs().max():.2e}"
        )
        print(f"original method: {n / t_orig:.2f} prompts/s ({t_orig:.1f} s)")
        print(f"quirky:          {n / t_ours:.2f} prompts/s ({t_ours:.1f} s)")
        print(f"speed-up:        {t_orig / t_ours:.1f}x   (load average at end {os.getloadavg()[0]:.1f})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
