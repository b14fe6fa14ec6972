"""Reading anomaly-detection features from a probe output directory (`quirky probe --out`, see "Probe output"),
through its reader `quirky.experiments.probe_run.ProbeRun`.

What is read: the per-layer scores of the probe trained on AE (`scores/AE/<method>.safetensors`, one [L, n]
tensor per test subset plus its row index in the test store), or, when a custom grid did not score AE/AH/BH, the
saved AE probe applied to the test store; and, for detectors on raw hidden states, one layer of the test store.
The rows are checked: the trusted set must be Alice-easy and nothing of Bob's may reach a detector's `fit`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from quirky.anomaly.experiment import AnomalySplit
from quirky.errors import QuirkyError
from quirky.experiments.probe_run import ProbeRun
from quirky.fileio import safetensors_digest, safetensors_problem
from quirky.subsets import subset_mask, subset_parts

TRUSTED, NORMAL, ANOMALOUS = "AE", "AH", "BH"
SUBSET_ROLES = {TRUSTED: "trusted", NORMAL: "normal", ANOMALOUS: "anomalous"}


def _check_rows(meta: Any, index: np.ndarray, subset: str, run: ProbeRun) -> None:
    """The rows of `subset` must be what it says: the persona, and the difficulty side.  A Bob row among the
    trusted ones would let the detector see the anomaly class."""
    if not subset_mask(meta.iloc[index], subset, run.easy, run.hard).all():
        persona, side = subset_parts(subset)
        raise QuirkyError(
            f"the {subset} rows recorded in {run.path} are not all {persona}/{side}: "
            "the probe output does not match its test store"
        )


def skip_reason(run: ProbeRun, method: str) -> str | None:
    """Why the `method` probe-score features cannot exist for this run (no AE probe was fitted, and the probe
    stage said why), else None; a probe or scores file that is merely missing stays an error."""
    reason = run.untrainable(TRUSTED, method)
    if reason is None:
        return None
    present = (run.scores_path(TRUSTED, method), run.probe_path(TRUSTED, method))
    return None if any(p.is_file() for p in present) else reason


def probe_score_features(run: ProbeRun, method: str, store: Any) -> tuple[AnomalySplit, dict[str, Any]]:
    """Per-layer scores [n, L] of the `method` probe trained on AE, on the AE/AH/BH test subsets."""
    scores_file = run.scores_path(TRUSTED, method)
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, np.ndarray] = {}
    source: dict[str, Any] = {}
    problem = safetensors_problem(scores_file) if scores_file.is_file() else None
    if problem is not None:
        raise QuirkyError(f"{scores_file} is {problem}; rerun `quirky probe` into {run.path} to rewrite it")
    if scores_file.is_file():
        with safe_open(str(scores_file), framework="pt") as f:
            keys = set(f.keys())
            for subset in SUBSET_ROLES:
                if subset in keys and f"{subset}.index" in keys:
                    scores = f.get_tensor(subset)
                    if scores.ndim != 2:
                        raise QuirkyError(
                            f"{method} scores in {scores_file} are not [layers, n]; use a linear probe"
                        )
                    arrays[subset] = scores.to(torch.float64).T.numpy()
                    index[subset] = f.get_tensor(f"{subset}.index").numpy()
        source = {"scores_file": safetensors_digest(scores_file)}
    missing = [s for s in SUBSET_ROLES if s not in arrays]
    if missing:
        probe_file = run.probe_path(TRUSTED, method)
        if not probe_file.is_file():
            raise QuirkyError(
                f"{run.path} has no {method} probe trained on AE (expected {probe_file}); run `quirky probe` with "
                "an experiment 'AE->AE,AH,BH' for this method"
            )
        probe = run.load_probe(TRUSTED, method)
        if probe.name == "random":
            raise QuirkyError("the random baseline has no per-layer scores to detect anomalies with")
        x = store.pairs() if probe.pair else store.hiddens()
        for subset in missing:
            idx = run.rows(store, subset)
            index[subset] = idx
            arrays[subset] = probe.score(x[:, torch.as_tensor(idx)]).to(torch.float64).T.numpy()
        source["probe_file"] = safetensors_digest(probe_file)
    for subset in SUBSET_ROLES:
        _check_rows(store.meta, index[subset], subset, run)
    ids = {s: store.meta["id"].to_numpy()[index[s]].astype(str).tolist() for s in SUBSET_ROLES}
    split = AnomalySplit(trusted=arrays[TRUSTED], normal=arrays[NORMAL], anomalous=arrays[ANOMALOUS], ids=ids)
    return split, source


def hidden_features(run: ProbeRun, store: Any, layer: int) -> AnomalySplit:
    """Raw hidden states [n, d] of one layer of the test store on AE/AH/BH (the same rows the probes scored)."""
    if not -store.num_layers <= layer < store.num_layers:
        raise QuirkyError(f"--layer {layer} is out of range: the store has layers 0..{store.num_layers - 1}")
    h = store.hiddens(layer)[0].to(torch.float64).numpy()
    parts, ids = {}, {}
    for subset in SUBSET_ROLES:
        idx = run.rows(store, subset)
        _check_rows(store.meta, idx, subset, run)
        parts[subset] = h[idx]
        ids[subset] = store.meta["id"].to_numpy()[idx].astype(str).tolist()
    return AnomalySplit(trusted=parts[TRUSTED], normal=parts[NORMAL], anomalous=parts[ANOMALOUS], ids=ids)
