"""Run the transfer grid over two activation stores (train split, test split) in one process.

Why one process and one load: the reference started a subprocess per (reporter, experiment), each re-reading
every layer from disk.  Here each split's hidden states (and contrast pairs, if a pair method is asked for) are
read once; subsets are row masks (`store.mask`); a probe is fitted once per (method, training subset) on all
layers at once and scores the whole test split in one product, from which every test subset is a slice.

Resumability: each (method, training subset) is one unit of work whose outputs (probe, scores, result rows) are
written atomically, the rows last, together with a fingerprint of everything that determines them.  A rerun
skips every unit whose fingerprint matches, and the final tables are assembled from the units.  See
docs/ARCHITECTURE.md, "Probe output", for the layout.
"""

from __future__ import annotations

import ctypes
import io
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from quirky.errors import QuirkyError
from quirky.experiments.evaluate import (
    METRIC_COLUMNS,
    EvalSettings,
    Resamples,
    evaluate_random,
    evaluate_scores,
)
from quirky.experiments.grid import Experiment, default_grid, parse_experiments
from quirky.experiments.pgr import DEFAULT_PGR_SPECS, PgrSpec
from quirky.experiments.probe_run import (
    EIL_CSV,
    EMPTY,
    PGR_CSV,
    RANDOM,
    RESULTS,
    RUN_JSON,
    SINGLE_CLASS,
    SUMMARY_JSON,
    probe_path,
    scores_path,
    skipped_record,
)
from quirky.experiments.summary import build_summary, eil_table, pgr_table
from quirky.extraction.store import ActivationStore, open_store, parse_storage_dtype
from quirky.fileio import (
    BadFileError,
    atomic_path,
    file_digest,
    fingerprint,
    read_json,
    read_parquet,
    write_bytes,
    write_json,
    write_safetensors,
)
from quirky.outdir import MARKER, PROBE_TABLES, claim_output, release_output, write_marker
from quirky.probes import METHODS, make_probe, probe_class
from quirky.probes.base import Probe
from quirky.progress import Bar, around_bars
from quirky.subsets import EASY, HARD

RESULT_COLUMNS = (
    "model",
    "dataset",
    "method",
    "train",
    "train_label",
    "test",
    "layer",
    "label_col",
    "filter",
    *METRIC_COLUMNS,
    "fpr",
    "note",
)
QUANTILE_COLUMNS = (
    "model",
    "dataset",
    "method",
    "train",
    "train_label",
    "test",
    "layer",
    "label_col",
    "filter",
    "quantile",
    "auroc",
    "n_directions",
)
OUTPUT_VERSION = 1


@dataclass
class TransferConfig:
    """Everything that determines a `quirky probe` run (all of it goes into the fingerprints)."""

    methods: tuple[str, ...] = METHODS
    experiments: tuple[str, ...] | None = (
        None  # None: each method's default grid; else applied to every method
    )
    train_split: str = "validation"
    test_split: str = "test"
    probe_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval: EvalSettings = field(default_factory=EvalSettings)
    easy: float = EASY
    hard: float = HARD
    max_train: int | None = None
    max_test: int | None = None
    device: str | None = None
    model_name: str | None = None
    dataset_name: str | None = None
    pgr_specs: tuple[PgrSpec, ...] = DEFAULT_PGR_SPECS


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise QuirkyError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise QuirkyError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def store_names(store: ActivationStore) -> tuple[str, str]:
    """(model, dataset) names recorded in a store's config (extraction writes them under `source`)."""
    cfg = store.config or {}
    src = cfg.get("source", cfg)
    model: Any = src.get("model")
    if isinstance(model, dict):
        inner = model.get("model")
        name = inner.get("name") if isinstance(inner, dict) else inner
        adapter = model.get("adapter")
        if isinstance(adapter, dict) and adapter.get("name"):
            name = f"{name}+{adapter['name']}"
        model = name
    dataset: Any = src.get("dataset")
    if isinstance(dataset, dict):
        dataset = dataset.get("name")
    return str(model or "unknown"), str(dataset or "unknown")


class _Splits:
    """The two stores and their tensors, each read at most once (on first use) and kept on `device` in the
    store's own dtype (float16 for extracted stores: half the memory of float32).  Only the rows a probe is
    fitted on are converted to float32 (exactly), and scoring converts inside the probe."""

    def __init__(self, train: ActivationStore, test: ActivationStore, device: torch.device) -> None:
        self.stores = {"train": train, "test": test}
        self.device = device
        self._cache: dict[tuple[str, str], torch.Tensor] = {}

    def features(self, split: str, pair: bool) -> torch.Tensor:
        key = (split, "pairs" if pair else "hiddens")
        if key not in self._cache:
            store = self.stores[split]
            dtype = parse_storage_dtype(store.storage_dtype)
            x = store.pairs(dtype=dtype) if pair else store.hiddens(dtype=dtype)
            self._cache[key] = x.to(self.device)
        return self._cache[key]

    def keep(self, pair: bool | None) -> None:
        """Drop the cached features of the other kind (hidden states when `pair`, pairs when not; both when
        None): the grid runs one kind's methods after the other, so both never need to be held at once."""
        drop = {"hiddens", "pairs"} if pair is None else {"hiddens" if pair else "pairs"}
        for key in [k for k in self._cache if k[1] in drop]:
            del self._cache[key]

    def lm_log_odds(self) -> torch.Tensor:
        key = ("test", "lm")
        if key not in self._cache:
            values = self.stores["test"].lm_log_odds()
            bad = int((~torch.isfinite(values)).sum())
            if bad:  # NaN/Inf would silently move the LM's AUROC (Inf sorts as an extreme score)
                raise QuirkyError(
                    f"the test store {self.stores['test'].path} holds {bad} non-finite LM log-odds (NaN/Inf) of "
                    f"{values.numel()}; re-extract it (a float16 overflow: extract with --dtype float32)"
                )
            self._cache[key] = values.to(self.device)
        return self._cache[key]


def _subset_index(store: ActivationStore, subset: str, cfg: TransferConfig, cap: int | None) -> np.ndarray:
    idx = np.flatnonzero(store.mask(subset, easy=cfg.easy, hard=cfg.hard))
    return idx if cap is None else idx[:cap]


def _check_stores(train: ActivationStore, test: ActivationStore) -> None:
    if train.num_layers != test.num_layers or train.hidden_size != test.hidden_size:
        raise QuirkyError(
            f"train store {train.path} has {train.num_layers} layers x d={train.hidden_size} but test store "
            f"{test.path} has {test.num_layers} layers x d={test.hidden_size}; they must come from the same model"
        )
    for name, store in (("train", train), ("test", test)):
        for col in ("label", "alice_label", "bob_label"):
            vals = set(np.unique(store.meta[col].to_numpy()).tolist())
            if not vals <= {0, 1}:
                raise QuirkyError(
                    f"{name} store {store.path}: column {col} must be 0/1, found {sorted(vals)[:5]}"
                )


def _open(act: Path, split: str, option: str) -> ActivationStore:
    path = act / split
    if not path.exists():
        raise QuirkyError(
            f"{act} has no {split!r} store (expected the directory {path}); extract that split or pass "
            f"{option} with the name of an existing split directory"
        )
    return open_store(path)


def _with_ids(df: pd.DataFrame, **cols: Any) -> pd.DataFrame:
    for k, v in cols.items():
        df[k] = v
    return df


def _nan_rows(
    tests: list[tuple[str, pd.DataFrame]], settings: EvalSettings, num_layers: int, note: str
) -> pd.DataFrame:
    frames = []
    for test, meta in tests:
        for filt in settings.filters:
            for col in settings.label_columns:
                frames.append(
                    pd.DataFrame(
                        {
                            "test": test,
                            "layer": np.arange(num_layers),
                            "label_col": col,
                            "filter": filt,
                            "n": len(meta),
                            "n_pos": int(meta[col].sum()),
                            **{k: math.nan for k in METRIC_COLUMNS[2:]},
                            "note": note,
                        }
                    )
                )
    return pd.concat(frames, ignore_index=True)


def _finish(df: pd.DataFrame, ids: dict[str, Any], fpr: float) -> pd.DataFrame:
    df = _with_ids(df, **ids)
    df["fpr"] = fpr
    for col in ("n", "n_pos", "layer"):
        df[col] = df[col].astype("int64")
    return df[list(RESULT_COLUMNS)]


class _Parts:
    """Per-unit result files under OUT/parts with their fingerprints (the resumability markers)."""

    def __init__(self, out: Path) -> None:
        self.root = out / "parts"

    def paths(self, method: str, tag: str) -> tuple[Path, Path, Path]:
        base = self.root / method / tag
        return (
            base.with_suffix(".parquet"),
            base.with_suffix(".json"),
            base.with_name(f"{tag}.quantiles.parquet"),
        )

    def done(self, method: str, tag: str, fp: str) -> bool:
        """Finished with these settings, and its files are still the ones written (else it is recomputed: a
        damaged or truncated part is never trusted)."""
        rows, marker, qpath = self.paths(method, tag)
        if not (rows.is_file() and marker.is_file()):
            return False
        try:
            info = read_json(marker)
        except BadFileError:
            return False
        if not isinstance(info, dict) or info.get("fingerprint") != fp:
            return False
        digests = {"rows_digest": rows, "quantiles_digest": qpath}
        return all(
            info[key] == (file_digest(path) if path.is_file() else None)
            for key, path in digests.items()
            if key in info  # parts written before digests were recorded are trusted as before
        )

    def write(
        self, method: str, tag: str, fp: str, rows: pd.DataFrame, quantiles: pd.DataFrame | None
    ) -> None:
        rows_path, marker, qpath = self.paths(method, tag)
        if quantiles is not None and len(quantiles):
            with atomic_path(qpath) as tmp:
                quantiles.to_parquet(tmp, index=False)
        with atomic_path(rows_path) as tmp:
            rows.to_parquet(tmp, index=False)
        qdigest = file_digest(qpath) if quantiles is not None and len(quantiles) else None
        if qdigest is None:
            qpath.unlink(missing_ok=True)  # a stale one from other settings would be read back as this part's
        info = {"fingerprint": fp, "method": method, "train": tag, "rows": len(rows)}
        info.update(rows_digest=file_digest(rows_path), quantiles_digest=qdigest)
        write_json(marker, info)

    def read(self, method: str, tag: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        rows_path, _, qpath = self.paths(method, tag)
        return read_parquet(rows_path), (read_parquet(qpath) if qpath.is_file() else None)


def experiments_for(cfg: TransferConfig) -> dict[str, list[Experiment]]:
    for m in cfg.methods:
        probe_class(m)  # validates the name
    if len(set(cfg.methods)) != len(cfg.methods):
        raise QuirkyError(f"--methods repeats a method: {', '.join(cfg.methods)}")
    if cfg.experiments is None:
        grid = default_grid(list(cfg.methods))
    else:
        exps = parse_experiments(list(cfg.experiments))
        if not exps:
            raise QuirkyError("--experiments is empty; give e.g. 'A->A,B,AH,BH'")
        grid = {m: exps for m in cfg.methods}
    return {m: [e.with_source() for e in exps] for m, exps in grid.items()}


def run_transfer(
    activations: str | Path,
    out: str | Path,
    cfg: TransferConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fit and score every (method, experiment) of the grid; write the tables and summary; return the summary."""
    cfg = cfg or TransferConfig()
    act, out = Path(activations), Path(out)
    if not act.is_dir():
        raise QuirkyError(f"--activations {act} is not a directory (it should hold one store per split)")
    claim_output(out, "probe", inputs=[act])  # released when the summary is written
    grid = experiments_for(cfg)
    run = _Run.open(act, out, cfg, log)
    info = run.info(act, grid)
    _invalidate_if_changed(out, info)
    write_json(out / RUN_JSON, info)
    run.score_lm(grid)
    skipped = run.fit_grid(grid)
    summary = run.assemble(grid, skipped)
    write_json(out / SUMMARY_JSON, summary)
    release_output(out)
    return summary


@dataclass
class _Run:
    """One `quirky probe` run: the two stores, the settings and the per-unit outputs (`_Parts`) it writes."""

    cfg: TransferConfig
    out: Path
    train: ActivationStore
    test: ActivationStore
    device: torch.device
    model: str
    dataset: str
    say: Callable[[str], None]
    test_index: dict[str, np.ndarray] = field(default_factory=dict)
    splits: _Splits = field(init=False)
    resamples: Resamples = field(init=False)
    parts: _Parts = field(init=False)

    def __post_init__(self) -> None:
        self.splits = _Splits(self.train, self.test, self.device)
        self.resamples = Resamples(self.cfg.eval, self.device)
        self.parts = _Parts(self.out)

    @classmethod
    def open(cls, act: Path, out: Path, cfg: TransferConfig, log: Callable[[str], None] | None) -> _Run:
        train = _open(act, cfg.train_split, "--train-split")
        test = _open(act, cfg.test_split, "--test-split")
        _check_stores(train, test)
        model, dataset = store_names(test)
        say = around_bars(log or (lambda _msg: None))
        device = resolve_device(cfg.device)
        return cls(cfg, out, train, test, device, cfg.model_name or model, cfg.dataset_name or dataset, say)

    @property
    def num_layers(self) -> int:
        return self.test.num_layers

    @property
    def base(self) -> dict[str, Any]:
        """What every unit's fingerprint shares: the stores' contents and the evaluation settings."""
        cfg = self.cfg
        return {
            "version": OUTPUT_VERSION,
            "train_store": self.train.fingerprint,
            "test_store": self.test.fingerprint,
            "eval": asdict(cfg.eval),
            "easy": cfg.easy,
            "hard": cfg.hard,
            "max_train": cfg.max_train,
            "max_test": cfg.max_test,
            "model": self.model,
            "dataset": self.dataset,
        }

    def info(self, act: Path, grid: dict[str, list[Experiment]]) -> dict[str, Any]:
        """run.json: the fingerprinted settings plus where the inputs came from."""
        cfg = self.cfg
        return {
            **self.base,
            "activations": str(act),
            "train_split": cfg.train_split,
            "test_split": cfg.test_split,
            "methods": list(cfg.methods),
            "experiments": {m: [str(e) for e in exps] for m, exps in grid.items()},
            "probe_options": cfg.probe_options,
            "device": str(self.device),
        }

    def ids(self, method: str, exp: Experiment | None = None) -> dict[str, Any]:
        """The identifying columns of a unit's result rows."""
        train, label = (exp.train, exp.train_label) if exp is not None else ("-", "-")
        return {
            "model": self.model,
            "dataset": self.dataset,
            "method": method,
            "train": train,
            "train_label": label,
        }

    def tests_of(self, exp: Experiment) -> list[tuple[str, np.ndarray, pd.DataFrame]]:
        """(subset name, row indices into the test store, their manifest rows) of each test subset of `exp`."""
        out = []
        for t in exp.tests:
            if t not in self.test_index:
                self.test_index[t] = _subset_index(self.test, t, self.cfg, self.cfg.max_test)
            idx = self.test_index[t]
            out.append((t, idx, self.test.meta.iloc[idx].reset_index(drop=True)))
        return out

    def score_lm(self, grid: dict[str, list[Experiment]]) -> None:
        """The LM's own log-odds, scored like a probe on every test subset of the grid (unit `lm`)."""
        all_tests = list(dict.fromkeys(t for exps in grid.values() for e in exps for t in e.tests))
        fp = fingerprint({**self.base, "unit": "lm", "tests": all_tests})
        if self.parts.done("lm", "lm", fp):
            return
        self.say("scoring the LM's own log-odds")
        frames = []
        for t, idx, meta in self.tests_of(Experiment("all", tuple(all_tests), "label")):
            s = self.splits.lm_log_odds()[torch.as_tensor(idx, device=self.device)].unsqueeze(0)
            df = evaluate_scores(s, meta, t, self.cfg.eval, self.resamples, layers=np.array([-1]))
            frames.append(_with_ids(df, test=t))
        rows = _finish(pd.concat(frames, ignore_index=True), self.ids("lm"), self.cfg.eval.fpr)
        self.parts.write("lm", "lm", fp, rows, None)

    def fit_grid(self, grid: dict[str, list[Experiment]]) -> list[dict[str, Any]]:
        """Fit, save and score every (method, experiment) not done earlier; return the units that cannot be fitted.

        Methods on hidden states run before those on contrast pairs, so only one kind of features is held in
        memory at a time (`_Splits.keep`); the output does not depend on the order."""
        bar = Bar(sum(len(grid[m]) for m in self.cfg.methods), f"probe grid {self.dataset}", unit="probe")
        skipped: dict[tuple[str, str], dict[str, Any]] = {}
        for method in sorted(self.cfg.methods, key=lambda m: probe_class(m).pair):
            self.splits.keep(pair=probe_class(method).pair)
            for exp in grid[method]:
                bar.begin(f"{method} {exp}")
                record = self.fit_unit(method, exp)
                if record is not None:
                    skipped[method, exp.tag] = record
                release_freed_memory()
        bar.close()
        self.splits.keep(pair=None)
        return [skipped[m, e.tag] for m in self.cfg.methods for e in grid[m] if (m, e.tag) in skipped]

    def fit_unit(self, method: str, exp: Experiment) -> dict[str, Any] | None:
        """One unit: fit on the training subset, save the probe, score every test subset, write the rows.
        Returns the skip record when the training subset is empty or holds one class (rows of NaN, with why)."""
        cfg, settings = self.cfg, self.cfg.eval
        options = cfg.probe_options.get(method, {})
        train_idx = _subset_index(self.train, exp.train, cfg, cfg.max_train)
        y = self.train.meta[exp.train_label].to_numpy()[train_idx]
        why = EMPTY if len(train_idx) == 0 else SINGLE_CLASS if y.min() == y.max() else None
        record = skipped_record(method, exp, why, cfg.train_split) if why is not None else None
        fp = fingerprint({**self.base, "method": method, "options": options, "experiment": str(exp)})
        if self.parts.done(method, exp.tag, fp):  # the skip record is still reported
            self.say(f"{method} {exp}: done earlier, skipped")
            return record
        self.say(f"{method} {exp}")
        tests = self.tests_of(exp)
        if record is not None:
            self.say(f"  skipped: {record['note']}")
            rows = _nan_rows([(t, m) for t, _, m in tests], settings, self.num_layers, record["note"])
            self.parts.write(method, exp.tag, fp, _finish(rows, self.ids(method, exp), settings.fpr), None)
            return record
        probe = self.fit_probe(method, exp, options, train_idx, y)
        rows, quantiles, tensors = self.score_probe(probe, method, tests)
        write_safetensors(
            scores_path(self.out, exp.tag, method), tensors, {"experiment": str(exp), "method": method}
        )
        rows = _finish(rows, self.ids(method, exp), settings.fpr)
        if quantiles is not None:
            quantiles = _with_ids(quantiles, **self.ids(method, exp))[list(QUANTILE_COLUMNS)]
        self.parts.write(method, exp.tag, fp, rows, quantiles)
        return None

    def fit_probe(
        self, method: str, exp: Experiment, options: dict[str, Any], train_idx: np.ndarray, y: np.ndarray
    ) -> Probe:
        """Fit on the training rows (widened to float32 only for the fit) and save the probe."""
        x_all = self.splits.features("train", probe_class(method).pair)
        x_train = x_all.index_select(1, torch.as_tensor(train_idx, device=self.device)).float()
        probe = make_probe(method, **options).fit(x_train, torch.as_tensor(y, device=self.device))
        del x_train
        extra = {
            "experiment": str(exp),
            "n_train": len(train_idx),
            "train_store": self.train.fingerprint,
            "test_store": self.test.fingerprint,
            "model": self.model,
            "dataset": self.dataset,
        }
        probe.save(probe_path(self.out, exp.tag, method), extra=extra)
        return probe

    def score_probe(
        self, probe: Probe, method: str, tests: list[tuple[str, np.ndarray, pd.DataFrame]]
    ) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, torch.Tensor]]:
        """Metric rows, random-baseline quantile rows (or None) and the score tensors to save, for every test
        subset: one scoring of the whole test split, sliced per subset (the random baseline's [L, K, n] scores
        are computed per subset instead, to bound memory)."""
        settings, device = self.cfg.eval, self.device
        x_test = self.splits.features("test", probe_class(method).pair)
        frames, qframes, tensors = [], [], {}
        if method == "random":
            for t, idx, meta in tests:
                s = probe.score(x_test.index_select(1, torch.as_tensor(idx, device=device)))
                df, qdf, dists = evaluate_random(s, meta, t, settings)
                frames.append(_with_ids(df, test=t))
                if len(qdf):
                    qframes.append(_with_ids(qdf, test=t))
                tensors.update({f"{t}/{k}": v.contiguous() for k, v in dists.items()})
        else:
            s_full = probe.score(x_test)
            for t, idx, meta in tests:
                s = s_full[:, torch.as_tensor(idx, device=device)]
                frames.append(_with_ids(evaluate_scores(s, meta, t, settings, self.resamples), test=t))
                tensors[t] = s.float().cpu().contiguous()
                tensors[f"{t}.index"] = torch.as_tensor(idx, dtype=torch.int64)
        quantiles = pd.concat(qframes, ignore_index=True) if qframes else None
        return pd.concat(frames, ignore_index=True), quantiles, tensors

    def assemble(self, grid: dict[str, list[Experiment]], skipped: list[dict[str, Any]]) -> dict[str, Any]:
        """The final tables (results, random quantiles, EIL, PGR) from the units' parts, and the summary."""
        units = [("lm", "lm"), *((m, e.tag) for m in self.cfg.methods for e in grid[m])]
        frames, qframes = [], []
        for method, tag in units:
            rows, quantiles = self.parts.read(method, tag)
            frames.append(rows)
            if quantiles is not None:
                qframes.append(quantiles)
        results = pd.concat(frames, ignore_index=True)
        _write_table(self.out / RESULTS, results)
        if qframes:
            _write_table(self.out / RANDOM, pd.concat(qframes, ignore_index=True))
        num_layers = self.num_layers
        eil = eil_table(results, num_layers)
        _write_table(self.out / EIL_CSV, eil, parquet=False)
        pgr_rows = pgr_table(results, eil, self.cfg.pgr_specs, num_layers)
        _write_table(self.out / PGR_CSV, pgr_rows, parquet=False)
        summary = build_summary(results, eil, pgr_rows, self.cfg.pgr_specs, grid, num_layers)
        summary.update(
            {
                "model": self.model,
                "dataset": self.dataset,
                "num_layers": num_layers,
                "hidden_size": self.test.hidden_size,
                "train_store": {
                    "path": str(self.train.path),
                    "fingerprint": self.train.fingerprint,
                    "n": self.train.n,
                },
                "test_store": {
                    "path": str(self.test.path),
                    "fingerprint": self.test.fingerprint,
                    "n": self.test.n,
                },
                "fpr": self.cfg.eval.fpr,
                "n_boot": self.cfg.eval.n_boot,
                "skipped": skipped,
            }
        )
        return summary


def release_freed_memory() -> None:
    """Hand the pages of freed blocks back to the operating system (glibc's `malloc_trim`; elsewhere nothing).

    Why: glibc keeps freed blocks below its (adaptive, up to 32 MB) mmap threshold in its heaps for reuse, and
    the units' temporaries come in many sizes, so without this the resident memory after a unit stays near that
    unit's peak and the next unit's data lands on top of it."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim
        pass


def _invalidate_if_changed(out: Path, run_info: dict[str, Any]) -> None:
    """Before `run.json` changes, remove the finished tables and summary of the previous settings, so an
    interrupted re-run never leaves a new `run.json` beside an old `summary.json` that `probe show` would print."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).exists():
        write_marker(out, "probe")
    previous = out / RUN_JSON
    try:
        same = previous.is_file() and read_json(previous) == json.loads(json.dumps(run_info, default=str))
    except ValueError:
        same = False
    if not same:
        for name in PROBE_TABLES:
            (out / name).unlink(missing_ok=True)


def _write_table(path: Path, df: pd.DataFrame, parquet: bool = True) -> None:
    """Parquet (exact) and CSV (readable) copies of the table named by `path` (either suffix); identical bytes
    already on disk are left untouched."""
    stem = path.with_suffix("")
    if parquet:
        buffer = io.BytesIO()
        df.to_parquet(buffer, index=False)
        write_bytes(stem.with_suffix(".parquet"), buffer.getvalue())
    write_bytes(stem.with_suffix(".csv"), df.to_csv(index=False, float_format="%.6g").encode())
