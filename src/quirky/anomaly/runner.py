"""`quirky anomaly`: every (probe method, detector) on one or more probe output directories, written atomically.

Output (docs/ARCHITECTURE.md, "Run directory"): `OUT/anomaly.json` with one result per (probe run, method,
detector) and `OUT/scores.parquet` with every example's anomaly score.  A finished output with the same
fingerprint is kept as is (rerunning is free).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

import quirky
from quirky.anomaly.defaults import DEFAULT_DETECTORS
from quirky.anomaly.detectors import DETECTOR_FEATURES
from quirky.anomaly.experiment import AnomalySplit, evaluate_detector, exclusion_reason
from quirky.anomaly.inputs import hidden_features, probe_score_features, skip_reason
from quirky.anomaly.output import RESULT_JSON, SCORES
from quirky.errors import QuirkyError
from quirky.experiments.probe_run import ProbeRun
from quirky.fileio import fingerprint, read_json, write_json
from quirky.outdir import check_output, replace_output

log = logging.getLogger(__name__)

HIDDENS_METHOD = "hiddens"  # the `method` of detectors on raw hidden states (they use no probe)


class _Job(NamedTuple):
    """One detector to fit and score on one probe run's features."""

    method: str  # the probe method whose scores are the features, or HIDDENS_METHOD
    detector: str
    split: AnomalySplit
    source: dict[str, Any]  # where the features came from (recorded with the result)
    layer: int | None  # the hidden-state layer, for hidden-state detectors


def run_anomaly(
    probes: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    detectors: Sequence[str] = DEFAULT_DETECTORS,
    methods: Sequence[str] = ("lr",),
    exclude: Sequence[str] = ("population",),
    layer: int | None = None,
    activations: str | os.PathLike[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit every detector on trusted data and score AH (normal) vs BH (anomalous), for each probe directory.

    Probe-score detectors run once per method; hidden-state detectors once per probe directory, on `layer`
    (default: the EIL of the first method's AE probe, else the middle layer).  Datasets in `exclude` are run
    and reported but flagged `excluded`, so averages can leave them out explicitly.
    """
    _check_arguments(probes, detectors, methods)
    out = Path(out)
    inputs = [*probes, activations]
    check_output(out, "anomaly", inputs=inputs)  # refuse before any work, never after
    runs = [ProbeRun.open(p) for p in probes]
    config = _config(runs, detectors, methods, exclude, layer, n_boot, seed)
    fp = fingerprint(config)
    if (out / RESULT_JSON).is_file() and read_json(out / RESULT_JSON).get("fingerprint") == fp:
        log.info("anomaly results at %s are up to date", out)
        return read_json(out / RESULT_JSON)

    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    score_rows: list[pd.DataFrame] = []
    for run in runs:
        store = run.test_store(activations)
        reason = exclusion_reason(run.dataset, exclude)
        jobs, not_run = _probe_score_jobs(run, store, detectors, methods)
        skipped += not_run
        jobs += _hidden_state_jobs(run, store, detectors, methods, layer)
        for job in jobs:
            result, scores = _evaluate(run, job, reason, n_boot=n_boot, seed=seed)
            results.append(result)
            score_rows += scores
    doc = {
        "config": config,
        "fingerprint": fp,
        "quirky_version": quirky.__version__,
        "results": results,
        # (model, dataset, method) with no probe on the trusted subset to score with, and why
        "skipped": skipped,
        "summary": summarize(results),
    }
    _write_output(out, inputs, doc, score_rows)
    return read_json(out / RESULT_JSON)


def _check_arguments(probes: Sequence[Any], detectors: Sequence[str], methods: Sequence[str]) -> None:
    """Refuse a request that cannot run before touching any file: a typo should not cost a model's stores."""
    if not probes:
        raise QuirkyError("give at least one --probes directory")
    for d in detectors:
        if d not in DETECTOR_FEATURES:
            raise QuirkyError(f"unknown detector {d!r}; choose from {', '.join(DETECTOR_FEATURES)}")
    if not methods and any(DETECTOR_FEATURES[d] == "probe-scores" for d in detectors):
        raise QuirkyError("give at least one --method for the probe-score detectors")


def _config(
    runs: list[ProbeRun],
    detectors: Sequence[str],
    methods: Sequence[str],
    exclude: Sequence[str],
    layer: int | None,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """What the results depend on, hashed into the fingerprint that lets a rerun reuse a finished output.  Each
    probe run enters by its stores and its finish marker, so re-probing a dataset invalidates its results."""
    return {
        "kind": "quirky-anomaly",
        "probes": [
            {
                "model": r.model,
                "dataset": r.dataset,
                "train_store": r.info.get("train_store"),
                "test_store": r.info.get("test_store"),
                "finished": r.finished,
            }
            for r in runs
        ],
        "detectors": list(detectors),
        "methods": list(methods),
        "exclude": list(exclude),
        "layer": layer,
        "n_boot": n_boot,
        "seed": seed,
    }


def _probe_score_jobs(
    run: ProbeRun, store: Any, detectors: Sequence[str], methods: Sequence[str]
) -> tuple[list[_Job], list[dict[str, Any]]]:
    """The probe-score detectors on each method's AE-trained per-layer scores, and the methods skipped with why.

    A method with no probe on the trusted subset (e.g. population, whose Alice-easy examples hold one class) is
    skipped and recorded rather than fatal, so the other datasets of a grid still get their results."""
    jobs: list[_Job] = []
    skipped: list[dict[str, Any]] = []
    score_detectors = [d for d in detectors if DETECTOR_FEATURES[d] == "probe-scores"]
    if not score_detectors:
        return jobs, skipped
    for method in methods:
        why = skip_reason(run, method)
        if why is not None:
            log.info("%s / %s: %s skipped (%s)", run.model, run.dataset, method, why)
            skipped.append({"model": run.model, "dataset": run.dataset, "method": method, "reason": why})
            continue
        split, source = probe_score_features(run, method, store)
        jobs += [_Job(method, d, split, source, None) for d in score_detectors]
    return jobs, skipped


def _hidden_state_jobs(
    run: ProbeRun, store: Any, detectors: Sequence[str], methods: Sequence[str], layer: int | None
) -> list[_Job]:
    """The hidden-state detectors, once per probe run (they use no probe), on `layer`; by default the EIL of the
    first method's AE probe (where the truth first becomes readable), else the middle layer."""
    hidden_dets = [d for d in detectors if DETECTOR_FEATURES[d] == "hiddens"]
    if not hidden_dets:
        return []
    chosen = layer
    if chosen is None:
        eil = run.eil_layer(methods[0]) if methods else None
        chosen = eil if eil is not None else store.num_layers // 2
    split = hidden_features(run, store, chosen)
    return [_Job(HIDDENS_METHOD, d, split, {}, chosen % store.num_layers) for d in hidden_dets]


def _evaluate(
    run: ProbeRun, job: _Job, exclusion: str | None, *, n_boot: int, seed: int
) -> tuple[dict[str, Any], list[pd.DataFrame]]:
    """Fit and score one detector: its result row (flagged when the dataset is excluded from averages) and every
    example's anomaly score per subset, for scores.parquet."""
    log.info("%s / %s: %s on %s", run.model, run.dataset, job.detector, job.method)
    result, by_subset = evaluate_detector(job.detector, job.split, n_boot=n_boot, seed=seed)
    row = {
        "model": run.model,
        "dataset": run.dataset,
        "excluded": exclusion is not None,
        "exclusion_reason": exclusion,
        "method": job.method,
        "layer": job.layer,
        **result,
        "source": job.source,
    }
    scores = [
        pd.DataFrame(
            {
                "model": run.model,
                "dataset": run.dataset,
                "method": job.method,
                "detector": job.detector,
                "subset": subset,
                "id": job.split.ids.get(subset, [""] * len(values)),
                "score": values,
            }
        )
        for subset, values in by_subset.items()
    ]
    return row, scores


def _write_output(out: Path, inputs: list[Any], doc: dict[str, Any], score_rows: list[pd.DataFrame]) -> None:
    """Write anomaly.json and scores.parquet together (an empty table keeps its columns), so `out` appears only
    when both are complete."""
    with replace_output(out, "anomaly", inputs=inputs) as tmp:
        columns = ["model", "dataset", "method", "detector", "subset", "id", "score"]
        scores = pd.concat(score_rows, ignore_index=True) if score_rows else pd.DataFrame(columns=columns)
        scores.to_parquet(tmp / SCORES, index=False)
        write_json(tmp / RESULT_JSON, doc)


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean AUROC per `detector/method` over the non-excluded (model, dataset) results, listing what was left out
    (`mean_auroc` is null when every result of that kind was excluded)."""
    kept: dict[str, list[float]] = {}
    left_out: dict[str, list[str]] = {}
    for r in results:
        key = f"{r['detector']}/{r['method']}"
        kept.setdefault(key, [])
        left_out.setdefault(key, [])
        if r["excluded"]:
            left_out[key].append(f"{r['model']}/{r['dataset']}")
        else:
            kept[key].append(r["auroc"])
    return {
        key: {
            "mean_auroc": float(np.mean(values)) if values else None,
            "n": len(values),
            "excluded": sorted(left_out[key]),
        }
        for key, values in sorted(kept.items())
    }
