"""The finetuning stage's output (`quirky finetune --out`, a run's `finetune/<model>__<dataset>/`) and its reader.

The stage owns both sides: `train.finetune` writes these files under the names defined here, and the report, the
results archive and `quirky.outdir` (what a rerun may replace) read or list them through this module, never by
file name.  Light on imports (no torch, no pandas): `quirky.outdir` takes its list of the stage's files from here.

A finished output holds the adapter (or, for full finetuning, a complete model directory), `finetune.json`
(written last: fingerprint, kind, final metrics), `training_config.json`, `metrics.json` / `metrics.csv` (the
evaluation history), `timing.json`, the model card and, when merged, `merged/`.  While training it holds
`run.json` (which run it is), the live metrics files and `checkpoints/`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Self

from quirky.cards import CARD_FILE
from quirky.errors import QuirkyError
from quirky.fileio import read_json
from quirky.stage_output import JsonOutput

#: while training: which run the directory holds (fingerprint, identity); gone once the run is finished
RUN_FILE = "run.json"
#: written last: the run is finished (fingerprint, kind, model_name, total_steps, final metrics, merged)
RESULT_JSON = "finetune.json"
CONFIG_FILE = "training_config.json"
METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
TIMING_FILE = "timing.json"
CHECKPOINTS = "checkpoints"
MERGED = "merged"
#: a LoRA run's adapter (peft's file names)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
#: a full finetuning run's model directory (transformers' file names; glob patterns)
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model*.safetensors",
    "model.safetensors.index.json",
    "tokenizer*",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)
#: the files a results archive keeps (the weights and checkpoints are large and regenerable)
ARCHIVED = (METRICS_JSON, RESULT_JSON, CONFIG_FILE, TIMING_FILE, CARD_FILE)
#: every top-level entry the stage may write (glob patterns): what a rerun may replace (`quirky.outdir`)
OWNED = (
    RUN_FILE,
    RESULT_JSON,
    CONFIG_FILE,
    METRICS_JSON,
    METRICS_CSV,
    TIMING_FILE,
    CHECKPOINTS,
    MERGED,
    *ADAPTER_FILES,
    *MODEL_FILES,
    CARD_FILE,
)
#: the files that identify an output of the stage, finished or in training
SIGNATURE = (RESULT_JSON, RUN_FILE)


@dataclass
class FinetuneOutput(JsonOutput):
    """One finetuning output directory, finished or still training.

    `doc` is finetune.json ({} while the run is unfinished).  `open` accepts a directory holding finetune.json,
    a finetuning run.json or the live metrics.json (a run being trained, or killed, keeps its curve there).
    """

    RESULT_JSON: ClassVar[str] = RESULT_JSON
    #: the small files a results archive copies (those present)
    ARCHIVED: ClassVar[tuple[str, ...]] = ARCHIVED

    finished: bool = field(default=True)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Self:
        path = Path(path)
        if (path / RESULT_JSON).is_file():
            return cls(path=path, doc=read_json(path / RESULT_JSON), finished=True)
        if (path / METRICS_JSON).is_file() or _is_run_file(path / RUN_FILE):
            return cls(path=path, doc={}, finished=False)
        why = "not a directory" if not path.is_dir() else f"no {RESULT_JSON}, {RUN_FILE} or {METRICS_JSON}"
        raise QuirkyError(f"{path} is not a finetuning output ({why}); give the --out of `quirky finetune`")

    @classmethod
    def has_metrics(cls, path: str | os.PathLike[str]) -> bool:
        """Whether `path` holds an evaluation history (finished or not), so `open(path).metrics` is not None."""
        return (Path(path) / METRICS_JSON).is_file()

    # ---------------------------------------------------------------------------- finetune.json
    @property
    def info(self) -> dict[str, Any]:
        """finetune.json: fingerprint, kind, model_name, identity, total_steps, final, merged ({} unfinished)."""
        return dict(self.doc)

    @property
    def fingerprint(self) -> str | None:
        """The run's fingerprint: finetune.json's, or while training run.json's."""
        if self.finished:
            return self.doc.get("fingerprint")
        run = self.path / RUN_FILE
        return read_json(run).get("fingerprint") if run.is_file() else None

    @property
    def kind(self) -> str | None:
        """ "lora" or "full" (None while unfinished)."""
        return self.doc.get("kind")

    @property
    def merged(self) -> bool:
        return bool(self.doc.get("merged"))

    @property
    def final(self) -> dict[str, Any]:
        """The final evaluation row as finetune.json records it ({} while unfinished)."""
        return dict(self.doc.get("final") or {})

    # ---------------------------------------------------------------------------- the other records
    @cached_property
    def metrics(self) -> dict[str, Any] | None:
        """metrics.json ({"history": [...], "final": ...}), or None when absent."""
        f = self.path / METRICS_JSON
        return read_json(f) if f.is_file() else None

    @property
    def history(self) -> list[dict[str, Any]]:
        """The evaluation history (one row per evaluated step), [] without metrics.json."""
        return list((self.metrics or {}).get("history") or [])

    @cached_property
    def training_config(self) -> dict[str, Any] | None:
        """training_config.json (the run's identity, config and counts), or None when absent."""
        f = self.path / CONFIG_FILE
        return read_json(f) if f.is_file() else None

    @cached_property
    def timing(self) -> dict[str, Any] | None:
        """timing.json (wall-clock seconds of the last invocation), or None when absent."""
        f = self.path / TIMING_FILE
        return read_json(f) if f.is_file() else None

    # ---------------------------------------------------------------------------- the trained model
    @property
    def adapter_dir(self) -> Path | None:
        """The LoRA adapter's directory (the output itself), or None for full finetuning or an unfinished run."""
        return self.path if self.kind == "lora" else None

    @property
    def model_dir(self) -> Path | None:
        """A complete model directory: `merged/` when the adapter was merged, the output itself for full
        finetuning, else None (a LoRA adapter loads on its base model, `model_name`)."""
        if self.merged:
            return self.path / MERGED
        return self.path if self.kind == "full" else None

    @property
    def model_name(self) -> str | None:
        """The base model the run was trained from, as the user named it."""
        return self.doc.get("model_name")


def _is_run_file(path: Path) -> bool:
    """Whether `path` is the run.json of a finetuning run in training (not another stage's run.json)."""
    if not path.is_file():
        return False
    doc = read_json(path)
    return isinstance(doc, dict) and "identity" in doc and "complete" in doc


__all__ = [
    "ARCHIVED",
    "CHECKPOINTS",
    "CONFIG_FILE",
    "MERGED",
    "METRICS_CSV",
    "METRICS_JSON",
    "OWNED",
    "RESULT_JSON",
    "RUN_FILE",
    "SIGNATURE",
    "TIMING_FILE",
    "FinetuneOutput",
]
