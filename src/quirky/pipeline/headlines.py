"""The handful of numbers the demo ends with, read from the stages' own summaries (nothing recomputed here)."""

from __future__ import annotations

from typing import Any


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def headlines(job: dict[str, Any]) -> dict[str, Any]:
    """LM AUROC on Alice (vs Alice's labels) and Bob (vs Bob's labels) on the test split; the probe with the best
    Alice-easy -> Bob-hard AUROC against the truth at its earliest informative layer, and its PGR; the anomaly
    detector's AUROC (the reference's Gaussian on the `lr` probe's per-layer scores)."""
    summary = job.get("probe_summary") or {}
    lm = summary.get("lm", {})
    out: dict[str, Any] = {
        "lm_auroc_alice": _get(lm, "A", "all", "alice_label"),
        "lm_auroc_bob": _get(lm, "B", "all", "bob_label"),
        "lm_auroc_bob_vs_truth": _get(lm, "B", "all", "alice_label"),
        "best_method": None,
        "best_auroc": None,
        "best_pgr": None,
        "anomaly_auroc": None,
    }
    methods = _get(summary, "pgr", "AE->BH", "methods") or {}
    ranked = [(v["auroc"], name, v) for name, v in methods.items() if v.get("auroc") is not None]
    if ranked:
        auc, name, v = max(ranked, key=lambda t: t[0])
        out.update(best_method=name, best_auroc=auc, best_pgr=v.get("pgr"))
    anomaly = job.get("anomaly_summary") or {}
    for key in ("gaussian/lr", *sorted(anomaly)):
        value = _get(anomaly, key, "mean_auroc")
        if value is not None:
            out["anomaly_auroc"] = value
            out["anomaly_detector"] = key
            break
    return out
