"""The run configuration: one TOML/YAML file that names everything `quirky run` does.

Why typed dataclasses with a strict loader: a sweep that runs for hours must fail in the first second on a typo
(`lora_rnak = 8`), with a message that names the key, the section and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quirky.errors import QuirkyError


@dataclass
class DatasetsConfig:
    names: list[str] = field(default_factory=lambda: ["addition"])
    seed: int = 0
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    # Per-dataset builder options, e.g. {addition = {max_digits = 3}}.
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Local source files per dataset (authors, sciq, nli, or a custom sentiment source).
    sources: dict[str, str] = field(default_factory=dict)
    # Existing dataset directories (from `quirky datasets build` or `quirky datasets import`) by the run's name
    # for them, e.g. {addition = "data/addition"}: used as they are (copied into RUN/datasets/<name>), never
    # built, so the sizes, seed, options and sources above do not apply to them.  A relative path is taken from
    # the working directory, like `out` and `sources`.
    dirs: dict[str, str] = field(default_factory=dict)
    setup: str = "single"


@dataclass
class FinetuneConfig:
    enabled: bool = True
    preset: str | None = None
    # Any other finetuning setting (lr, steps, lora_rank, batch_size, ...), passed through to quirky.finetune.
    settings: dict[str, Any] = field(default_factory=dict)
    # Per-dataset overrides of `settings`, e.g. {sentiment = {steps = 80, batch_size = 8}}: long prompts cost
    # more per step, so one CPU budget needs fewer steps there.
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def settings_for(self, dataset: str) -> dict[str, Any]:
        """The finetuning settings of one dataset: the shared ones, then that dataset's overrides."""
        return {**self.settings, **self.datasets.get(dataset, {})}


@dataclass
class ExtractConfig:
    train_split: str = "validation"
    test_split: str = "test"
    max_train_examples: int | None = 4000
    max_test_examples: int | None = 1000
    batch_size: int = 32


@dataclass
class ProbeConfig:
    methods: list[str] | None = None  # None = every method
    experiments: list[str] | None = None  # None = the reference grid
    bootstrap: int = 200
    # Per-method constructor options, e.g. {ccs = {restarts = 10, max_iter = 1000}, lda = {shrinkage = 0.1}}.
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class AnomalyConfig:
    enabled: bool = True
    # Probe methods whose AE-trained per-layer scores feed the detectors (the paper's table has one row each).
    methods: list[str] = field(default_factory=lambda: ["lr"])
    detectors: list[str] | None = None
    exclude_datasets: list[str] = field(default_factory=lambda: ["population"])


@dataclass
class InterveneConfig:
    enabled: bool = False
    method: str = "mean-diff"
    train_subset: str = "A"
    layers: list[int] | None = None
    max_examples: int = 300


@dataclass
class ExecutorConfig:
    kind: str = "local"  # local | submitit-local | slurm
    folder: str | None = None  # submitit log folder (default RUN/submitit)
    slurm: dict[str, Any] = field(default_factory=dict)  # submitit slurm parameters, e.g. {partition = "gpu"}


@dataclass
class RunConfig:
    out: str = "runs/run"
    models: list[str] = field(default_factory=lambda: ["smollm2"])
    datasets: DatasetsConfig = field(default_factory=DatasetsConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    intervene: InterveneConfig = field(default_factory=InterveneConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def only(self, names: list[str]) -> RunConfig:
        """The same run restricted to some of its datasets (`quirky run --datasets`): their per-dataset
        sources, options, directories and finetuning settings come along, the others' are dropped, so the result
        is a config that passes the same checks.  A name the config does not run is refused (its settings would
        come from nowhere)."""
        unknown = [n for n in names if n not in self.datasets.names]
        if not names or unknown:
            raise QuirkyError(
                f"--datasets: {', '.join(unknown) or 'no name given'} "
                f"{'is' if len(unknown) == 1 else 'are'} not among the config's datasets "
                f"({', '.join(self.datasets.names)})"
            )
        d = self.to_dict()
        keep = [n for n in self.datasets.names if n in names]
        d["datasets"]["names"] = keep
        for key in ("options", "sources", "dirs"):
            d["datasets"][key] = {k: v for k, v in d["datasets"][key].items() if k in keep}
        d["finetune"]["datasets"] = {k: v for k, v in d["finetune"]["datasets"].items() if k in keep}
        return config_from_dict(d)


_EXECUTORS = ("local", "submitit-local", "slurm")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, returning it (dataclasses are built recursively)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise QuirkyError(f"config: [{where}] must be a table, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, where)
            except QuirkyError as e:
                errors.append(str(e))
        raise QuirkyError(errors[0] if errors else f"config: {where} has an invalid value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise QuirkyError(f"config: {where} must be a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_check(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise QuirkyError(f"config: {where} must be a table, got {value!r}")
        _, inner = typing.get_args(tp)
        return {str(k): _check(v, inner, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise QuirkyError(f"config: {where} must be an integer, got {value!r}")
    if not isinstance(value, tp):
        raise QuirkyError(f"config: {where} must be {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: Any, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise QuirkyError(
            f"config: unknown key(s) {', '.join(unknown)} in [{where or 'top level'}]; allowed: {', '.join(names)}"
        )
    kwargs = {k: _check(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], *, read_dirs: bool = True) -> RunConfig:
    """Validate a parsed config mapping into a `RunConfig` (strict: unknown keys and wrong types are errors).

    `read_dirs=False` skips reading the `[datasets] dirs` directories (a job of a run that has already copied
    them into the run directory, possibly on another machine, does not need them)."""
    cfg: RunConfig = _build(RunConfig, data, "")
    if not cfg.models:
        raise QuirkyError('config: `models` is empty; name at least one model (e.g. models = ["smollm2"])')
    if not cfg.datasets.names:
        raise QuirkyError(
            "config: [datasets] names is empty; name at least one dataset (see `quirky datasets list`)"
        )
    from quirky.rundir import model_key

    keys = [model_key(m) for m in cfg.models]
    if len(set(keys)) != len(keys):
        raise QuirkyError(f"config: two models share a run-directory name ({keys}); give them distinct names")
    if cfg.executor.kind not in _EXECUTORS:
        raise QuirkyError(
            f"config: [executor] kind must be one of {', '.join(_EXECUTORS)}, got {cfg.executor.kind!r}"
        )
    _check_datasets(cfg, read_dirs=read_dirs)
    _check_finetune(cfg)
    _check_methods(cfg)
    return cfg


def _check_datasets(cfg: RunConfig, *, read_dirs: bool = True) -> None:
    """Dataset names must be registered (or given by a directory), options/sources/dirs must name listed datasets,
    a directory's dataset takes no options or sources, and the setup must fit each dataset."""
    from quirky.datasets.registry import check_name
    from quirky.datasets.templating import setups_for

    d = cfg.datasets
    for name in d.names:
        if name in d.dirs:
            _check_dir_name(name)
            continue
        try:
            check_name(name)
        except QuirkyError as e:
            raise QuirkyError(f"config: [datasets] names: {e}") from None
    doubled = sorted({n for n in d.names if d.names.count(n) > 1})
    if doubled:
        raise QuirkyError(
            f"config: [datasets] names lists {', '.join(doubled)} more than once; list each dataset once"
        )
    for key, table in (("options", d.options), ("sources", d.sources), ("dirs", d.dirs)):
        stray = sorted(set(table) - set(d.names))
        if stray:
            raise QuirkyError(
                f"config: [datasets] {key} names {', '.join(stray)}, which [datasets] names does not list; "
                f"add them to [datasets] names or remove their {key}"
            )
    for key, table in (("options", d.options), ("sources", d.sources)):
        given = sorted(set(table) & set(d.dirs))
        if given:
            raise QuirkyError(
                f"config: [datasets] {key} names {', '.join(given)}, which [datasets] dirs gives as an existing "
                f"directory (used as it is, not built); remove their {key}"
            )
    # the dataset a name stands for: itself, or for a directory the registered dataset its dataset.json names
    kinds = {n: n for n in d.names if n not in d.dirs}
    if read_dirs:
        kinds.update({n: dir_dataset(n, d.dirs[n]) for n in d.names if n in d.dirs})
    for name, kind in kinds.items():
        allowed = setups_for(kind)
        if d.setup not in allowed:
            held = f" (its directory {d.dirs[name]} holds '{kind}')" if name in d.dirs else ""
            raise QuirkyError(
                f"config: [datasets] setup {d.setup!r} is not available for dataset '{name}'{held}; "
                f"use one of {', '.join(allowed)}"
            )


_DIR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _check_dir_name(name: str) -> None:
    """A name given by a directory names RUN/datasets/<name>: one plain path component."""
    if not _DIR_NAME.fullmatch(name):
        raise QuirkyError(
            f"config: [datasets] dirs names a dataset {name!r}; use letters, digits, '_', '-' and '.' "
            "(it becomes a directory name in the run)"
        )


def dir_dataset(name: str, path: str) -> str:
    """The registered dataset that the directory `[datasets] dirs.<name> = path` holds, read through the datasets
    stage's reader; one-line errors for a missing or foreign directory, an unknown dataset, or a registered name
    used for another dataset's directory."""
    from quirky.datasets.layout import read_meta
    from quirky.datasets.registry import DATASET_NAMES, check_name

    where = f"config: [datasets] dirs.{name}"
    try:
        held = str(read_meta(path)["name"])
        check_name(held)
    except QuirkyError as e:
        raise QuirkyError(f"{where}: {e}") from None
    if name in DATASET_NAMES and name != held:
        raise QuirkyError(
            f"{where}: {path} holds dataset '{held}', not '{name}'; list it under a name that is not another "
            f"registered dataset (e.g. '{held}')"
        )
    return held


def _check_methods(cfg: RunConfig) -> None:
    """Probe and anomaly methods must exist, and the anomaly detectors can only read probes the run fits."""
    from quirky.probes import METHODS

    fitted = cfg.probe.methods if cfg.probe.methods is not None else list(METHODS)
    for where, names in (
        ("[probe] methods", fitted),
        ("[probe] options", list(cfg.probe.options)),
        ("[anomaly] methods", cfg.anomaly.methods if cfg.anomaly.enabled else []),
    ):
        unknown = [m for m in names if m not in METHODS]
        if unknown:
            raise QuirkyError(
                f"config: {where} names unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}"
            )
    missing = [m for m in (cfg.anomaly.methods if cfg.anomaly.enabled else []) if m not in fitted]
    if missing:
        raise QuirkyError(
            f"config: [anomaly] methods {', '.join(missing)} are not in [probe] methods; add them there "
            "(the detectors read those probes' scores)"
        )


def _check_finetune(cfg: RunConfig) -> None:
    """Fail before any work on an unknown preset, setting or per-dataset key (not after hours of finetuning)."""
    f = cfg.finetune
    stray = sorted(set(f.datasets) - set(cfg.datasets.names))
    if stray:
        raise QuirkyError(
            f"config: [finetune.datasets] names {', '.join(stray)}, which [datasets] names does not list; "
            f"add them to [datasets] names or remove their settings"
        )
    if not f.enabled:
        return
    from quirky.finetune.config import preset_config

    for name in cfg.datasets.names:
        settings = f.settings_for(name)
        settings.setdefault("setup", cfg.datasets.setup)
        where = f"[finetune.datasets.{name}]" if name in f.datasets else "[finetune]"
        try:
            preset_config(f.preset, **settings)
        except (QuirkyError, TypeError, ValueError) as e:
            raise QuirkyError(f"config: {where}: {e}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML (.toml) or YAML (.yaml/.yml) run config."""
    path = Path(path)
    if not path.is_file():
        raise QuirkyError(f"config file not found: {path}")
    try:
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise QuirkyError(f"config {path}: use a .toml, .yaml or .yml file")
    except QuirkyError:
        raise
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError (not a ValueError), UnicodeDecodeError
        where = " ".join(str(e).split())
        raise QuirkyError(f"config {path} is not valid {path.suffix[1:].upper()}: {where}") from None
    if not isinstance(data, dict):
        raise QuirkyError(f"config {path}: the top level must be a mapping of sections")
    return config_from_dict(data)
