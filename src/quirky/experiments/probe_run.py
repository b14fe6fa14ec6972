"""The reader of a probe output directory (`quirky probe --out`, docs/ARCHITECTURE.md "Probe output").

The probe stage owns this layout: `run_transfer` writes it through the path helpers below, and every later stage
(anomaly detection, interventions, the report, the results archive) reads it through `ProbeRun` instead of
building paths into the directory.  Why a training subset could not be fitted is recorded as data
(`summary.json` "skipped"); summaries written before that field existed are read from their notes, matched
against the very sentences the probe stage writes (`untrainable_note`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quirky.errors import QuirkyError
from quirky.fileio import read_json, read_parquet
from quirky.subsets import EASY, HARD

RUN_JSON = "run.json"
SUMMARY_JSON = "summary.json"
RESULTS = "results.parquet"
RANDOM = "random.parquet"  # the random baseline's quantiles over directions
EIL_CSV = "eil.csv"
PGR_CSV = "pgr.csv"
PROBES = "probes"
SCORES = "scores"
#: the small files that hold a probe run's numbers (the results archive keeps them, beside a trimmed RESULTS)
SMALL_FILES = (SUMMARY_JSON, PGR_CSV, EIL_CSV, RUN_JSON)

#: why a training unit (method, training subset) was not fitted: `summary.json` "skipped" records' "reason"
EMPTY, SINGLE_CLASS = "empty", "single-class"
_ROLES = {"train": ("train_split", "validation", "max_train"), "test": ("test_split", "test", "max_test")}


def probe_path(out: str | os.PathLike[str], tag: str, method: str) -> Path:
    """The fitted probe of `method` on the training tag `tag` (all layers; reload with `quirky.probes.load_probe`)."""
    return Path(out) / PROBES / tag / f"{method}.safetensors"


def scores_path(out: str | os.PathLike[str], tag: str, method: str) -> Path:
    """The test-split scores of that probe: per test subset T, "T" [L, n_T] and "T.index" [n_T]."""
    return Path(out) / SCORES / tag / f"{method}.safetensors"


def single_class_note(label_col: str, test: str, filt: str) -> str:
    """The `note` of a results row whose AUROC is undefined because the labels hold one class there."""
    return f"{label_col} has a single class on {test}/{filt}"


def empty_note(test: str, filt: str) -> str:
    """The `note` of a results row with no examples."""
    return f"no {filt} examples in {test}"


def untrainable_note(reason: str, train: str, train_label: str, split: str) -> str:
    """The probe stage's sentence for a training unit it could not fit (also its NaN rows' `note`)."""
    if reason == EMPTY:
        return f"training subset {train} of split {split} is empty"
    return f"training labels {train_label} on {train} hold a single class"


def skipped_record(method: str, experiment: Any, reason: str, split: str) -> dict[str, Any]:
    """One entry of `summary.json` "skipped": which unit, the reason code, and the sentence."""
    return {
        "method": method,
        "experiment": str(experiment),
        "train": experiment.train,
        "train_label": experiment.train_label,
        "reason": reason,
        "note": untrainable_note(reason, experiment.train, experiment.train_label, split),
    }


@dataclass
class ProbeRun:
    """One probe output directory: what it was run on (run.json), what it found (summary.json and the tables),
    its fitted probes and scores, and the activation stores it used.  `ProbeRun(path)` tolerates missing files
    (a report shows what exists); `ProbeRun.open(path)` insists on a probe output."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ProbeRun:
        run = cls(Path(path))
        if not (run.path / RUN_JSON).is_file():
            raise QuirkyError(
                f"{run.path} is not a probe output directory (no run.json); run `quirky probe --out {run.path}`"
            )
        run.info  # noqa: B018 - read (and check) run.json now
        return run

    # ---------------------------------------------------------------------------------------- records
    @cached_property
    def info(self) -> dict[str, Any]:
        """run.json: the inputs and settings ({} when absent)."""
        f = self.path / RUN_JSON
        return read_json(f) if f.is_file() else {}

    @cached_property
    def summary(self) -> dict[str, Any]:
        """summary.json: the headline numbers ({} while unfinished)."""
        f = self.path / SUMMARY_JSON
        return read_json(f) if f.is_file() else {}

    @property
    def finished(self) -> bool:
        """The probe stage wrote its summary (it does so last)."""
        return bool(self.summary)

    def _name(self, key: str, from_path: str) -> str:
        """The recorded name, else the run-directory position (RUN/probes/<model>/<dataset>)."""
        from quirky.rundir import probes_position

        value = self.summary.get(key) or self.info.get(key)
        if value and value != "unknown":
            return str(value)
        return from_path if probes_position(self.path) is not None else "unknown"

    @property
    def model(self) -> str:
        return self._name("model", self.path.parent.name)

    @property
    def dataset(self) -> str:
        return self._name("dataset", self.path.name)

    @property
    def easy(self) -> float:
        return float(self.info.get("easy", EASY))

    @property
    def hard(self) -> float:
        return float(self.info.get("hard", HARD))

    def eil_layer(self, method: str, train: str = "AE") -> int | None:
        """The earliest informative layer of the `method` probe trained on the tag `train` (None if not fitted)."""
        info = self.summary.get("eil", {}).get(method, {}).get(train)
        return int(info["layer"]) if info else None

    # ---------------------------------------------------------------------------------------- skipped units
    def skipped(self) -> list[dict[str, Any]]:
        """The training units the probe stage could not fit (`skipped_record` entries).  A summary written before
        the "skipped" field is read from its notes, matched against the sentences the probe stage writes."""
        if "skipped" in self.summary:
            return list(self.summary["skipped"])
        from quirky.experiments.grid import parse_experiment

        notes = set(self.summary.get("notes", []))
        split = str(self.info.get("train_split", "validation"))
        out = []
        for method, experiments in (self.info.get("experiments") or {}).items():
            for text in experiments:
                exp = parse_experiment(text)
                for reason in (EMPTY, SINGLE_CLASS):
                    if untrainable_note(reason, exp.train, exp.train_label, split) in notes:
                        out.append(skipped_record(method, exp, reason, split))
        return out

    def untrainable(self, tag: str, method: str) -> str | None:
        """Why no `method` probe was fitted on the training tag `tag` (the probe stage's sentence), else None.
        On population, easy vs hard is confounded with the label, so AE holds one class: the paper leaves it out
        of anomaly detection for this reason."""
        from quirky.experiments.grid import train_tag

        for s in self.skipped():
            if s["method"] == method and train_tag(s["train"], s["train_label"]) == tag:
                return str(s["note"])
        return None

    # ---------------------------------------------------------------------------------------- probes and scores
    def probe_path(self, tag: str, method: str) -> Path:
        return probe_path(self.path, tag, method)

    def scores_path(self, tag: str, method: str) -> Path:
        return scores_path(self.path, tag, method)

    def load_probe(self, tag: str, method: str, device: Any = None) -> Any:
        """The fitted `method` probe of the training tag `tag`; a clear error naming what exists when absent."""
        path = self.probe_path(tag, method)
        if not path.is_file():
            raise QuirkyError(
                f"no {method} probe trained on {tag} in {self.path} (expected {path}); available: "
                f"{', '.join(self.probe_names()) or 'none'}"
            )
        from quirky.probes import load_probe

        return load_probe(path, device=device)

    def probe_names(self) -> list[str]:
        """Every fitted probe as `<tag>/<method>`."""
        root = self.path / PROBES
        return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.glob("*/*.safetensors"))

    # ---------------------------------------------------------------------------------------- tables
    def table(self, name: str) -> pd.DataFrame | None:
        """One of the probe stage's tables (RESULTS, EIL_CSV, PGR_CSV, ...) as written, None when absent."""
        f = self.path / name
        if not f.is_file():
            return None
        return read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f)

    def results(self) -> pd.DataFrame | None:
        """results.parquet (in a results archive: its trimmed copy), None when absent."""
        return self.table(RESULTS)

    # ---------------------------------------------------------------------------------------- activation stores
    def activations_dir(self, override: str | os.PathLike[str] | None = None) -> Path:
        """Where the activation stores are: `override`, else the recorded path, else the run-directory sibling
        (RUN/probes/<model>/<dataset> -> RUN/activations/<model>/<dataset>)."""
        if override is not None:
            return Path(override)
        from quirky.rundir import activations_beside

        recorded = self.info.get("activations")
        candidates = [Path(recorded)] if recorded else []
        sibling = activations_beside(self.path)
        if sibling is not None:
            candidates.append(sibling)
        for c in candidates:
            if c.is_dir():
                return c
        raise QuirkyError(
            f"cannot find the activation stores of the probe run {self.path} (tried {', '.join(map(str, candidates))}); "
            "pass --activations DIR"
        )

    def store(self, role: str, override: str | os.PathLike[str] | None = None) -> Any:
        """The `train` or `test` store the probes were fitted / scored on, checked by fingerprint."""
        from quirky.extraction.store import open_store

        split_key, default, _ = _ROLES[role]
        store = open_store(self.activations_dir(override) / str(self.info.get(split_key, default)))
        expected = self.info.get(f"{role}_store")
        if expected and store.fingerprint != expected:
            verb = "fitted" if role == "train" else "scored"
            raise QuirkyError(
                f"the {role} store at {store.path} (fingerprint {store.fingerprint}) is not the one the probes "
                f"were {verb} on ({expected}); point --activations at the right stores"
            )
        return store

    def train_store(self, override: str | os.PathLike[str] | None = None) -> Any:
        return self.store("train", override)

    def test_store(self, override: str | os.PathLike[str] | None = None) -> Any:
        return self.store("test", override)

    def rows(self, store: Any, subset: str, role: str = "test") -> np.ndarray:
        """The row numbers of `subset` in the `role` store that the probe stage used (its easy/hard cutoffs, the
        first `max_train` / `max_test` of them)."""
        idx = np.flatnonzero(store.mask(subset, easy=self.easy, hard=self.hard))
        cap = self.info.get(_ROLES[role][2])
        return idx if cap is None else idx[: int(cap)]
