"""`quirky run CONFIG`: datasets -> finetune -> extract -> probe -> anomaly -> (intervene) -> report.

The whole data flow in one place.  Every stage is cached by its own fingerprint inside the run directory (the
stages themselves decide whether a finished result can be reused), so a re-run skips what is done, an interrupted
run resumes, and a changed setting recomputes exactly the stages whose inputs changed.  Independent
(model, dataset) jobs can be dispatched to submitit (local processes or SLURM); each job loads its model once and
shares it between extraction of both splits and the interventions.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from quirky.datasets.layout import META_FILE, SPLITS, load_split, read_meta, split_path
from quirky.errors import QuirkyError
from quirky.fileio import file_digest, read_json, write_json
from quirky.outdir import check_output, replace_output
from quirky.pipeline.config import RunConfig, config_from_dict
from quirky.pipeline.executor import run_jobs
from quirky.progress import Bar, around_bars
from quirky.rundir import DATASETS, JobPaths, RunDir, model_key

Log = Callable[[str], None]
_VERSIONED = (
    "quirky",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "scikit-learn",
    "numpy",
    "concept-erasure",
    "safetensors",
    "pyarrow",
)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


#: the run's progress line (stage, dataset, model), while `run_pipeline` runs jobs in this process
_RUN_BAR: Bar | None = None


@dataclass
class _Timer:
    """Wall-clock and CPU seconds per stage, for run.json (the only non-deterministic part of a run's records);
    with a `where`, each stage also advances the run's progress line.  CPU seconds (this process, all threads)
    are what a stage costs even on a shared machine, where wall-clock time is inflated by the other load."""

    seconds: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    where: str = ""

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        if self.where and _RUN_BAR is not None:
            _RUN_BAR.begin(f"{name} · {self.where}")
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            return fn()
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 2)
            self.cpu[name] = round(time.process_time() - cpu_start, 2)


class _SharedModel:
    """Loads the (finetuned) model at most once per job, and only if some stage really needs it."""

    def __init__(self, model: str, adapter: Path | None, device: str | None) -> None:
        self.model, self.adapter, self.device = model, adapter, device
        self._loaded: tuple[Any, Any] | None = None

    def get(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from quirky.models import load_model

            self._loaded = load_model(self.model, adapter=self.adapter, device=self.device)
        return self._loaded


def build_datasets(cfg: RunConfig, run_dir: Path, log: Log) -> dict[str, Path]:
    """Build (or reuse) every dataset of the config, or copy it from its `[datasets] dirs` directory; they are
    shared by all models."""
    from quirky.datasets import build_dataset

    out: dict[str, Path] = {}
    d = cfg.datasets
    for name in d.names:
        target = RunDir(run_dir).dataset_dir(name)
        if name in d.dirs:
            copied = copy_dataset(Path(d.dirs[name]), target, where=f"[datasets] dirs.{name}")
            log(f"dataset {name}: {'copied' if copied else 'cached'} from {d.dirs[name]} -> {target}")
            out[name] = target
            continue
        result = build_dataset(
            name,
            target,
            seed=d.seed,
            n_train=d.n_train,
            n_val=d.n_val,
            n_test=d.n_test,
            source=d.sources.get(name),
            options=d.options.get(name),
        )
        log(f"dataset {name}: {'cached' if result.up_to_date else 'built'} -> {result.out}")
        out[name] = result.out
    return out


def _dataset_files(dataset_dir: Path) -> list[Path]:
    """The files of a dataset directory (Contract 1): its dataset.json and one file per split."""
    return [dataset_dir / META_FILE, *(split_path(dataset_dir, s) for s in SPLITS)]


def _digests(dataset_dir: Path) -> dict[str, str] | None:
    files = _dataset_files(dataset_dir)
    if not all(f.is_file() for f in files):
        return None
    return {f.name: file_digest(f) for f in files}


def copy_dataset(source: Path, target: Path, *, where: str) -> bool:
    """Copy the dataset directory `source` (never changed) into the run's `target` as a datasets-stage output;
    return False when `target` already holds the same files (nothing is written, so every later stage is reused).

    The source is read through the datasets stage's reader first (dataset.json, every split in the raw schema,
    each split's digest as dataset.json records it, so its fingerprint describes what is copied); a changed source
    replaces the earlier copy as a whole (its new fingerprint tells the later stages their input changed)."""
    real_source, real_target = source.resolve(), target.resolve()
    if real_source == real_target or real_target in real_source.parents or real_source in real_target.parents:
        raise QuirkyError(
            f"{where}: {source} is or overlaps the run's own copy {target}; point it at a dataset directory "
            "outside the run"
        )
    meta = read_meta(source)
    for split in SPLITS:
        load_split(source, split)
    recorded = meta.get("files")
    if not meta.get("fingerprint") or not isinstance(recorded, dict):
        raise QuirkyError(
            f"{where}: {source / META_FILE} records no fingerprint or split digests; rebuild it with "
            "`quirky datasets build` or re-import it with `quirky datasets import`"
        )
    wanted = _digests(source) or {}  # every file hashed once: the check below and the reuse decision share it
    changed = [s for s in SPLITS if recorded.get(s) != wanted.get(split_path(source, s).name)]
    if changed:
        raise QuirkyError(
            f"{where}: the {', '.join(changed)} split(s) of {source} differ from the digests in its {META_FILE} "
            "(changed after it was written); rebuild it with `quirky datasets build` or re-import it"
        )
    if check_output(target, "datasets", inputs=[source]) == "previous" and _digests(target) == wanted:
        return False
    with replace_output(target, "datasets", inputs=[source]) as tmp:
        for f in _dataset_files(source):
            shutil.copyfile(f, tmp / f.name)
        if _digests(tmp) != wanted:
            raise QuirkyError(f"{where}: {source} changed while it was being copied; run again")
    return True


def _finetune(cfg: RunConfig, paths: JobPaths, log: Log) -> tuple[str, Path | None, dict[str, Any]]:
    """Finetune (or reuse) and return the model and adapter that the later stages use."""
    if not cfg.finetune.enabled:
        return paths.model, None, {}
    from quirky.finetune.config import preset_config
    from quirky.finetune.train import finetune

    settings = cfg.finetune.settings_for(paths.dataset)
    settings.setdefault("setup", cfg.datasets.setup)
    ft_cfg = preset_config(cfg.finetune.preset, **settings)
    # the run directory is the pipeline's own: a stale result of other settings is replaced, the same is reused
    result = finetune(paths.model, paths.dataset_dir, paths.finetune_dir, ft_cfg, log=log, overwrite=True)
    log(
        f"finetune {paths.model} on {paths.dataset}: {result.status} ({result.step}/{result.total_steps} steps)"
    )
    if ft_cfg.full:
        return str(paths.finetune_dir), None, result.metrics
    return paths.model, paths.finetune_dir, result.metrics


def _extract(
    cfg: RunConfig, paths: JobPaths, model: str, adapter: Path | None, shared: _SharedModel, log: Log
) -> None:
    """Extract the probe-training and evaluation splits, loading the model only if a store must be computed
    (the extraction stage decides: `store_is_current`)."""
    from quirky.datasets import load_templated
    from quirky.extraction.extract import (
        ExtractSettings,
        check_frame,
        extract_frame,
        extraction_source,
        store_is_current,
    )

    e = cfg.extract
    settings = ExtractSettings(batch_size=e.batch_size)
    for split, cap in ((e.train_split, e.max_train_examples), (e.test_split, e.max_test_examples)):
        df = load_templated(
            paths.dataset_dir, split, setup=cfg.datasets.setup, seed=cfg.datasets.seed, max_examples=cap
        )
        check_frame(df)
        source = extraction_source(
            model,
            adapter,
            paths.dataset_dir,
            split,
            setup=cfg.datasets.setup,
            seed=cfg.datasets.seed,
            max_examples=cap,
        )
        out = paths.activations_dir / split
        if store_is_current(out, df, source, settings, device=cfg.device):
            log(f"extract {split}: cached")
            continue
        lm, tok = shared.get()
        extract_frame(lm, tok, df, out, source=source, settings=settings, overwrite=True)
        log(f"extract {split}: {len(df)} prompts -> {out}")


def _probe(cfg: RunConfig, paths: JobPaths, log: Log) -> dict[str, Any]:
    from quirky.experiments.transfer import TransferConfig, run_transfer
    from quirky.probes import METHODS

    p = cfg.probe
    tcfg = TransferConfig(
        methods=tuple(p.methods) if p.methods else METHODS,
        experiments=tuple(p.experiments) if p.experiments else None,
        train_split=cfg.extract.train_split,
        test_split=cfg.extract.test_split,
        probe_options={k: dict(v) for k, v in p.options.items()},
        device=cfg.device,
        model_name=model_key(paths.model),
        dataset_name=paths.dataset,
    )
    tcfg.eval = dataclasses.replace(tcfg.eval, n_boot=p.bootstrap)
    return run_transfer(paths.activations_dir, paths.probes_dir, tcfg, log=log)


def _anomaly(cfg: RunConfig, paths: JobPaths) -> dict[str, Any]:
    from quirky.anomaly.runner import DEFAULT_DETECTORS, run_anomaly

    a = cfg.anomaly
    return run_anomaly(
        [paths.probes_dir],
        paths.anomaly_dir,
        detectors=tuple(a.detectors) if a.detectors else DEFAULT_DETECTORS,
        methods=tuple(a.methods),
        exclude=tuple(a.exclude_datasets),
        activations=paths.activations_dir,
    )


def _intervene(
    cfg: RunConfig, paths: JobPaths, model: str, adapter: Path | None, shared: _SharedModel
) -> dict[str, Any]:
    from quirky.interventions.runner import run_intervention

    i = cfg.intervene
    out = paths.intervention_dir(i.method, i.train_subset)
    return run_intervention(
        model=model,
        adapter=adapter,
        probes=paths.probes_dir,
        dataset=paths.dataset_dir,
        out=out,
        method=i.method,
        train_subset=i.train_subset,
        layers=i.layers,
        split=cfg.extract.test_split,
        setup=cfg.datasets.setup,
        max_examples=i.max_examples,
        activations=paths.activations_dir,
        device=cfg.device,
        loaded=shared.get,
        overwrite=True,
    )


def run_job(config: dict[str, Any], run_dir: str, model: str, dataset: str) -> dict[str, Any]:
    """One (model, dataset) job: finetune -> extract -> probe -> anomaly -> intervene.  Picklable for submitit."""
    cfg = config_from_dict(config, read_dirs=False)  # the run has copied them into RUN/datasets
    paths = JobPaths(Path(run_dir), model, dataset)
    timer = _Timer(where=f"{dataset} · {model_key(model)}")

    @around_bars
    def log(msg: str) -> None:
        print(f"[{model} / {dataset}] {msg}", flush=True)

    lm_name, adapter, ft_metrics = timer.stage("finetune", lambda: _finetune(cfg, paths, log))
    shared = _SharedModel(lm_name, adapter, cfg.device)
    timer.stage("extract", lambda: _extract(cfg, paths, lm_name, adapter, shared, log))
    summary = timer.stage("probe", lambda: _probe(cfg, paths, log))
    anomaly = None
    if cfg.anomaly.enabled:
        anomaly = timer.stage("anomaly", lambda: _anomaly(cfg, paths))
    intervention = None
    if cfg.intervene.enabled:
        intervention = timer.stage("intervene", lambda: _intervene(cfg, paths, lm_name, adapter, shared))
    return {
        "model": model,
        "dataset": dataset,
        "timings_s": timer.seconds,
        "cpu_s": timer.cpu,
        "finetune_metrics": ft_metrics,
        "probe_summary": summary,
        "anomaly_summary": anomaly.get("summary") if anomaly else None,
        "intervention": intervention,
    }


def _stages_per_job(cfg: RunConfig) -> int:
    """How many `_Timer.stage` calls one `run_job` makes (the unit of the run's progress line): finetune (also
    when disabled or cached), extract, probe, and anomaly and intervene when enabled."""
    return 3 + int(cfg.anomaly.enabled) + int(cfg.intervene.enabled)


def _run_jobs_with_progress(
    cfg: RunConfig, jobs: list[tuple[Any, ...]], run_dir: Path
) -> list[dict[str, Any]]:
    """Run the jobs with one progress line over every (stage, dataset, model) when they run in this process
    (submitit jobs run elsewhere and write their own logs)."""
    global _RUN_BAR
    if cfg.executor.kind != "local":
        return run_jobs(run_job, jobs, cfg.executor, run_dir)
    with Bar(len(jobs) * _stages_per_job(cfg), "quirky run", unit="stage") as bar:
        _RUN_BAR = bar
        try:
            return run_jobs(run_job, jobs, cfg.executor, run_dir)
        finally:
            _RUN_BAR = None


def run_pipeline(cfg: RunConfig, log: Log = print) -> dict[str, Any]:
    """Run every stage for every (model, dataset) pair of `cfg` and write the report; return run.json's content."""
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_json = RunDir(run_dir).run_json
    previous = read_json(run_json) if run_json.is_file() else {}
    record: dict[str, Any] = {
        "config": cfg.to_dict(),
        "versions": package_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "timings_s": {},
        "cpu_s": {},
        "previous_finished": previous.get("finished"),
    }
    timer = _Timer()
    datasets = timer.stage("datasets", lambda: build_datasets(cfg, run_dir, log))
    record["fingerprints"] = {f"dataset/{n}": read_meta(p).get("fingerprint") for n, p in datasets.items()}
    jobs = [(cfg.to_dict(), str(run_dir), m, d) for m in cfg.models for d in cfg.datasets.names]
    results = timer.stage("jobs", lambda: _run_jobs_with_progress(cfg, jobs, run_dir))
    for r in results:
        record["timings_s"][f"{model_key(r['model'])}/{r['dataset']}"] = r["timings_s"]
        record["cpu_s"][f"{model_key(r['model'])}/{r['dataset']}"] = r["cpu_s"]
    record["jobs"] = [{k: v for k, v in r.items() if k != "probe_summary"} for r in results]
    write_json(run_json, record)

    from quirky.report.build import build_report

    report = timer.stage("report", lambda: build_report(run_dir))
    record["timings_s"]["run"] = timer.seconds
    record["cpu_s"]["run"] = timer.cpu
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record["report"] = str(report.html)
    write_json(run_json, record)
    record["results"] = results
    return record


def check_run_dir(cfg: RunConfig) -> None:
    """Refuse to write into a directory that is not a quirky run (a typo in `out` must not litter a home dir)."""
    out = Path(cfg.out)
    if out.is_file():
        raise QuirkyError(f"run output {out} is a file; set `out` to a directory")
    if (
        out.is_dir()
        and any(out.iterdir())
        and not RunDir(out).run_json.is_file()
        and not (out / DATASETS).is_dir()
    ):
        raise QuirkyError(f"{out} is not empty and is not a quirky run directory; choose another `out`")
