"""Where each stage's outputs live inside a run directory (docs/ARCHITECTURE.md, "Run directory").

Why a separate module: the report, `quirky run` and users' own scripts must agree on one layout; this is it, in
code.  Discovery is tolerant: a stage that has not run simply has no entries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quirky.errors import QuirkyError

RUN_JSON = "run.json"
DATASETS = "datasets"
FINETUNE = "finetune"
ACTIVATIONS = "activations"
PROBES = "probes"
ANOMALY = "anomaly"
INTERVENTIONS = "interventions"
REPORT = "report"


def model_slug(name: str) -> str:
    """A model name made safe for one path component: `EleutherAI/pythia-410m` -> `EleutherAI--pythia-410m`."""
    return name.strip().rstrip("/").replace("/", "--").replace(os.sep, "--")


def finetune_key(model: str, dataset: str) -> str:
    """Directory name of one finetuning run: `<model>__<dataset>`."""
    return f"{model_slug(model)}__{dataset}"


def _subdirs(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass
class RunLayout:
    """Everything a run directory holds, found by walking the documented layout."""

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
        return self.root / RUN_JSON

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT

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
        if (d / "dataset.json").is_file():
            layout.datasets[d.name] = d
    for d in _subdirs(root / FINETUNE):
        if "__" in d.name:
            model, dataset = d.name.rsplit("__", 1)
            layout.finetune[(model, dataset)] = d
    for m in _subdirs(root / ACTIVATIONS):
        for ds in _subdirs(m):
            for split in _subdirs(ds):
                if (split / "store.json").is_file():
                    layout.activations[(m.name, ds.name, split.name)] = split
    for m in _subdirs(root / PROBES):
        for ds in _subdirs(m):
            layout.probes[(m.name, ds.name)] = ds
    for m in _subdirs(root / ANOMALY):
        for ds in _subdirs(m):
            if (ds / "anomaly.json").is_file():
                layout.anomaly[(m.name, ds.name)] = ds
    for m in _subdirs(root / INTERVENTIONS):
        for ds in _subdirs(m):
            for run in _subdirs(ds):
                if (run / "interventions.json").is_file():
                    layout.interventions[(m.name, ds.name, run.name)] = run
    known = (DATASETS, FINETUNE, ACTIVATIONS, PROBES, ANOMALY, INTERVENTIONS)
    if not layout.run_json.is_file() and not any((root / k).is_dir() for k in known):
        raise QuirkyError(
            f"{root} does not look like a quirky run directory: it has no {RUN_JSON} and none of "
            f"{', '.join(known)}/ (see docs/ARCHITECTURE.md, 'Run directory')"
        )
    return layout
