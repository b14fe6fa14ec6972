"""The common shape of a stage output whose result is one JSON document (anomaly, interventions, finetuning).

The stage that writes such an output also owns its reader, a subclass naming the document (`RESULT_JSON`) and
giving typed access to its parts; other stages and the report open it through that reader, never by file name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from quirky.fileio import read_json


@dataclass
class JsonOutput:
    """One finished output directory: `doc` is its result document."""

    RESULT_JSON: ClassVar[str]

    path: Path
    doc: dict[str, Any]

    @classmethod
    def exists(cls, path: str | os.PathLike[str]) -> bool:
        """Whether `path` holds a finished output of this stage (its result document is written last)."""
        return (Path(path) / cls.RESULT_JSON).is_file()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Self:
        path = Path(path)
        return cls(path=path, doc=read_json(path / cls.RESULT_JSON))
