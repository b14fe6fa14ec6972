"""Reading anomaly-detection features from a probe output directory (`quirky probe --out`, see "Probe output").

What is read: the per-layer scores of the probe trained on AE (`scores/AE/<method>.safetensors`, one [L, n]
tensor per test subset plus its row index in the test store), or, when a custom grid did not score AE/AH/BH, the
saved AE probe applied to the test store; and, for detectors on raw hidden states, one layer of the test store.
The rows are checked: the trusted set must be Alice-easy and nothing of Bob's may reach a detector's `fit`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from quirky.anomaly.experiment import AnomalySplit
from quirky.errors import QuirkyError
from quirky.fileio import read_json, safetensors_digest, safetensors_problem

TRUSTED, NORMAL, ANOMALOUS = "AE", "AH", "BH"
SUBSET_ROLES = {TRUSTED: "trusted", NORMAL: "normal", ANOMALOUS: "anomalous"}
# the probe stage's note for a training subset it could not fit on (quirky.experiments.transfer)
_UNTRAINABLE = re.compile(
    rf"^training (labels \w+ on {TRUSTED} hold a single class|subset {TRUSTED} of split \S+ is empty)"
)


@dataclass
class ProbeRun:
    """One probe output directory and what it says about its inputs."""

    path: Path
    info: dict[str, Any]  # run.json
    summary: dict[str, Any]  # summary.json ({} while unfinished)

    def _name(self, key: str, from_path: str) -> str:
        """The recorded name, else the run-directory position (RUN/probes/<model>/<dataset>)."""
        value = self.summary.get(key) or self.info.get(key)
        if value and value != "unknown":
            return str(value)
        return from_path if self.path.parent.parent.name == "probes" else "unknown"

    @property
    def model(self) -> str:
        return self._name("model", self.path.parent.name)

    @property
    def dataset(self) -> str:
        return self._name("dataset", self.path.name)

    @property
    def easy(self) -> float:
        return float(self.info.get("easy", 0.25))

    @property
    def hard(self) -> float:
        return float(self.info.get("hard", 0.75))

    def untrainable(self) -> str | None:
        """Why the probe stage fitted no probe on the trusted subset (its labels hold one class, or it is
        empty), as the probe stage noted it; None when it could.  On population, easy vs hard is confounded with
        the label, so AE holds one class: the paper leaves it out of anomaly detection for this reason."""
        for note in self.summary.get("notes", []):
            if _UNTRAINABLE.match(str(note)):
                return str(note)
        return None

    def eil_layer(self, method: str, train: str = TRUSTED) -> int | None:
        info = self.summary.get("eil", {}).get(method, {}).get(train)
        return int(info["layer"]) if info else None

    def activations_dir(self, override: str | os.PathLike[str] | None = None) -> Path:
        """Where the activation stores are: `override`, else the recorded path, else the run-directory sibling
        (RUN/probes/<model>/<dataset> -> RUN/activations/<model>/<dataset>)."""
        if override is not None:
            return Path(override)
        recorded = self.info.get("activations")
        candidates = [Path(recorded)] if recorded else []
        if len(self.path.parts) >= 3:
            candidates.append(
                self.path.parent.parent.parent / "activations" / self.path.parent.name / self.path.name
            )
        for c in candidates:
            if c.is_dir():
                return c
        raise QuirkyError(
            f"cannot find the activation stores of the probe run {self.path} (tried {', '.join(map(str, candidates))}); "
            "pass --activations DIR"
        )

    def test_store(self, override: str | os.PathLike[str] | None = None) -> Any:
        from quirky.extraction.store import open_store

        store = open_store(self.activations_dir(override) / str(self.info.get("test_split", "test")))
        expected = self.info.get("test_store")
        if expected and store.fingerprint != expected:
            raise QuirkyError(
                f"the test store at {store.path} (fingerprint {store.fingerprint}) is not the one the probes were "
                f"scored on ({expected}); point --activations at the right stores"
            )
        return store


def open_probe_run(path: str | os.PathLike[str]) -> ProbeRun:
    path = Path(path)
    if not (path / "run.json").is_file():
        raise QuirkyError(
            f"{path} is not a probe output directory (no run.json); run `quirky probe --out {path}`"
        )
    info = read_json(path / "run.json")
    summary = read_json(path / "summary.json") if (path / "summary.json").is_file() else {}
    return ProbeRun(path=path, info=info, summary=summary)


def _check_rows(meta: Any, index: np.ndarray, subset: str, run: ProbeRun) -> None:
    """The rows of `subset` must be what it says: the persona, and the difficulty side.  A Bob row among the
    trusted ones would let the detector see the anomaly class."""
    rows = meta.iloc[index]
    persona = {"A": "Alice", "B": "Bob"}[subset[0]]
    q = rows["difficulty_quantile"].to_numpy()
    ok = (rows["character"] == persona).all() and (
        (q <= run.easy).all() if subset.endswith("E") else (q >= run.hard).all()
    )
    if not ok:
        raise QuirkyError(
            f"the {subset} rows recorded in {run.path} are not all {persona}/{'easy' if subset.endswith('E') else 'hard'}: "
            "the probe output does not match its test store"
        )


def _subset_index(store: Any, subset: str, run: ProbeRun) -> np.ndarray:
    idx = np.flatnonzero(store.mask(subset, easy=run.easy, hard=run.hard))
    cap = run.info.get("max_test")
    return idx if cap is None else idx[: int(cap)]


def skip_reason(run: ProbeRun, method: str) -> str | None:
    """Why the `method` probe-score features cannot exist for this run (no AE probe was fitted, and the probe
    stage said why), else None; a probe or scores file that is merely missing stays an error."""
    reason = run.untrainable()
    if reason is None:
        return None
    present = (run.path / sub / TRUSTED / f"{method}.safetensors" for sub in ("scores", "probes"))
    return None if any(p.is_file() for p in present) else reason


def probe_score_features(run: ProbeRun, method: str, store: Any) -> tuple[AnomalySplit, dict[str, Any]]:
    """Per-layer scores [n, L] of the `method` probe trained on AE, on the AE/AH/BH test subsets."""
    scores_file = run.path / "scores" / TRUSTED / f"{method}.safetensors"
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
        probe_file = run.path / "probes" / TRUSTED / f"{method}.safetensors"
        if not probe_file.is_file():
            raise QuirkyError(
                f"{run.path} has no {method} probe trained on AE (expected {probe_file}); run `quirky probe` with "
                "an experiment 'AE->AE,AH,BH' for this method"
            )
        from quirky.probes import load_probe

        probe = load_probe(probe_file)
        if probe.name == "random":
            raise QuirkyError("the random baseline has no per-layer scores to detect anomalies with")
        x = store.pairs() if probe.pair else store.hiddens()
        for subset in missing:
            idx = _subset_index(store, subset, run)
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
        idx = _subset_index(store, subset, run)
        _check_rows(store.meta, idx, subset, run)
        parts[subset] = h[idx]
        ids[subset] = store.meta["id"].to_numpy()[idx].astype(str).tolist()
    return AnomalySplit(trusted=parts[TRUSTED], normal=parts[NORMAL], anomalous=parts[ANOMALOUS], ids=ids)
