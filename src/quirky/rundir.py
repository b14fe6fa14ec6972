"""The layout of a run directory (docs/ARCHITECTURE.md, "Run directory"): where `quirky run` writes each stage's
outputs and where the report, the results archive and the later stages find them.

Why one module: the writer (`quirky.pipeline.run`), the readers (`quirky.report`, `quirky.results`) and a probe
output's guess of its sibling activation stores must agree on one layout; this is it, in code.  It imports no
stage, so every stage can use it.  Discovery is tolerant: a stage that has not run simply has no entries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quirky.anomaly.output import AnomalyOutput
from quirky.datasets.layout import META_FILE
from quirky.errors import QuirkyError
from quirky.extraction.store import STORE_JSON
from quirky.interventions.output import InterventionOutput

RUN_JSON = "run.json"
DATASETS = "datasets"
FINETUNE = "finetune"
ACTIVATIONS = "activations"
PROBES = "probes"
ANOMALY = "anomaly"
INTERVENTIONS = "interventions"
REPORT = "report"
#: the stage directories of a run (one of them, or run.json, makes a directory a run)
STAGES = (DATASETS, FINETUNE, ACTIVATIONS, PROBES, ANOMALY, INTERVENTIONS)


def model_slug(name: str) -> str:
    """A model name made safe for one path component: `EleutherAI/pythia-410m` -> `EleutherAI--pythia-410m`."""
    return name.strip().rstrip("/").replace("/", "--").replace(os.sep, "--")


def model_key(model: str) -> str:
    """The model's directory name in the run: a local path gives its last component (`/ckpt/llama` -> `llama`),
    a hub id its slug (`EleutherAI/pythia-410m` -> `EleutherAI--pythia-410m`)."""
    path = Path(model).expanduser()
    return model_slug(path.name) if path.exists() else model_slug(model)


def finetune_key(model: str, dataset: str) -> str:
    """Directory name of one finetuning run: `<model>__<dataset>` (`parse_finetune_key` reads it back)."""
    return f"{model_slug(model)}__{dataset}"


def parse_finetune_key(name: str) -> tuple[str, str] | None:
    """(model, dataset) of a finetuning directory's name, None when it is not one."""
    if "__" not in name:
        return None
    model, dataset = name.rsplit("__", 1)
    return model, dataset


def intervention_key(method: str, train_subset: str) -> str:
    """Directory name of one intervention run: `<method>__<train-subset>`."""
    return f"{method}__{train_subset}"


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory; `model` arguments are model keys (`model_key`)."""

    root: Path

    @property
    def run_json(self) -> Path:
        return self.root / RUN_JSON

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT

    def dataset_dir(self, dataset: str) -> Path:
        return self.root / DATASETS / dataset

    def finetune_dir(self, model: str, dataset: str) -> Path:
        return self.root / FINETUNE / finetune_key(model, dataset)

    def activations_dir(self, model: str, dataset: str) -> Path:
        return self.root / ACTIVATIONS / model / dataset

    def probes_dir(self, model: str, dataset: str) -> Path:
        return self.root / PROBES / model / dataset

    def anomaly_dir(self, model: str, dataset: str) -> Path:
        return self.root / ANOMALY / model / dataset

    def interventions_dir(self, model: str, dataset: str, name: str) -> Path:
        """One intervention run, `name` = `intervention_key(method, train_subset)`."""
        return self.root / INTERVENTIONS / model / dataset / name

    def is_run(self) -> bool:
        """Holds run.json or one of the stage directories."""
        return self.run_json.is_file() or any((self.root / k).is_dir() for k in STAGES)


@dataclass(frozen=True)
class JobPaths:
    """Where one (model, dataset) job of `quirky run` reads and writes; `model` as configured (hub id or path)."""

    run: Path
    model: str
    dataset: str

    @property
    def key(self) -> str:
        return model_key(self.model)

    @property
    def dataset_dir(self) -> Path:
        return RunDir(self.run).dataset_dir(self.dataset)

    @property
    def finetune_dir(self) -> Path:
        return RunDir(self.run).finetune_dir(self.key, self.dataset)

    @property
    def activations_dir(self) -> Path:
        return RunDir(self.run).activations_dir(self.key, self.dataset)

    @property
    def probes_dir(self) -> Path:
        return RunDir(self.run).probes_dir(self.key, self.dataset)

    @property
    def anomaly_dir(self) -> Path:
        return RunDir(self.run).anomaly_dir(self.key, self.dataset)

    def intervention_dir(self, method: str, subset: str) -> Path:
        return RunDir(self.run).interventions_dir(self.key, self.dataset, intervention_key(method, subset))


def probes_position(path: str | os.PathLike[str]) -> tuple[RunDir, str, str] | None:
    """(run, model, dataset) when `path` is a run's probe output RUN/probes/<model>/<dataset>, else None."""
    path = Path(path)
    if path.parent.parent.name != PROBES:
        return None
    return RunDir(path.parent.parent.parent), path.parent.name, path.name


def activations_beside(probes: str | os.PathLike[str]) -> Path | None:
    """The activation stores a probe output at RUN/probes/<model>/<dataset> was fitted on, by position:
    RUN/activations/<model>/<dataset> (None for a path too short to have that sibling)."""
    probes = Path(probes)
    if len(probes.parts) < 3:
        return None
    return RunDir(probes.parent.parent.parent).activations_dir(probes.parent.name, probes.name)


def _subdirs(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass
class RunLayout:
    """Everything a run directory holds, found by walking the layout (`discover`)."""

    root: Path
    datasets: dict[str, Path] = field(default_factory=dict)
    finetune: dict[tuple[str, str], Path] = field(default_factory=dict)  # (model, dataset) -> dir
    activations: dict[tuple[str, str, str], Path] = field(
        default_factory=dict
    )  # (model, dataset, split) -> store
    probes: dict[tuple[str, str], Path] = field(default_factory=dict)
    anomaly: dict[tuple[str, str], Path] = field(default_factory=dict)
    interventions: dict[tuple[str, str, str], Path] = field(
        default_factory=dict
    )  # (model, dataset, name) -> dir
    #: tables read once and shared by several report sections (not part of the layout)
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def run_json(self) -> Path:
        return RunDir(self.root).run_json

    @property
    def report_dir(self) -> Path:
        return RunDir(self.root).report_dir

    def models(self) -> list[str]:
        keys = [*self.finetune, *self.activations, *self.probes, *self.anomaly, *self.interventions]
        return sorted({k[0] for k in keys})

    def dataset_names(self) -> list[str]:
        keys = [*self.finetune, *self.activations, *self.probes, *self.anomaly, *self.interventions]
        return sorted(set(self.datasets) | {k[1] for k in keys})


def discover(root: str | os.PathLike[str]) -> RunLayout:
    """Index a run directory; a clear error when it does not exist or holds none of the expected parts."""
    root = Path(root)
    if not root.is_dir():
        raise QuirkyError(
            f"run directory {root} does not exist (run `quirky run CONFIG` or `quirky demo` first)"
        )
    layout = RunLayout(root=root)
    for d in _subdirs(root / DATASETS):
        if (d / META_FILE).is_file():
            layout.datasets[d.name] = d
    for d in _subdirs(root / FINETUNE):
        key = parse_finetune_key(d.name)
        if key is not None:
            layout.finetune[key] = d
    for m in _subdirs(root / ACTIVATIONS):
        for ds in _subdirs(m):
            for split in _subdirs(ds):
                if (split / STORE_JSON).is_file():
                    layout.activations[(m.name, ds.name, split.name)] = split
    for m in _subdirs(root / PROBES):
        for ds in _subdirs(m):
            layout.probes[(m.name, ds.name)] = ds
    for m in _subdirs(root / ANOMALY):
        for ds in _subdirs(m):
            if AnomalyOutput.exists(ds):
                layout.anomaly[(m.name, ds.name)] = ds
    for m in _subdirs(root / INTERVENTIONS):
        for ds in _subdirs(m):
            for run in _subdirs(ds):
                if InterventionOutput.exists(run):
                    layout.interventions[(m.name, ds.name, run.name)] = run
    if not RunDir(root).is_run():
        raise QuirkyError(
            f"{root} does not look like a quirky run directory: it has no {RUN_JSON} and none of "
            f"{', '.join(STAGES)}/ (see docs/ARCHITECTURE.md, 'Run directory')"
        )
    return layout
