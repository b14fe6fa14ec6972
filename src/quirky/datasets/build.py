"""Build a dataset directory: base rows -> split by question -> persona records -> quantiles -> parquet.

Why this order (fixing the original's split arithmetic, `elk_generalization/datasets/quirky_dataset.py:276-292`,
and its cross-split operand leakage, `binary_operation_dataset.py:63`): splitting *questions* before persona
expansion keeps both personas and every proposed answer of a question in one split, so nothing about a test
question was seen in training, and the requested split sizes are exactly the record counts written.

Sizes count **records** (parquet rows; each base row gives one Alice and one Bob record).  A question with k base
rows gives 2k records and is never cut, so each size must be reachable with whole questions (for datasets with one
base row per question: an even number).  `n_train=-1` means "every question left after validation and test".
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import quirky
from quirky.datasets.layout import CHARACTERS, META_FILE, SPLITS, arg_type, record_schema, write_split
from quirky.datasets.registry import get_spec
from quirky.datasets.spec import BuildRequest, DatasetSpec, counting_dropped
from quirky.errors import QuirkyError
from quirky.fileio import file_digest, fingerprint, read_json, write_json
from quirky.outdir import check_output, replace_output

#: Splits are filled in this order; train comes last so that `n_train=-1` takes the rest.
_FILL_ORDER: tuple[str, ...] = ("validation", "test", "train")
_ID_LENGTH = 8
_FILL_ATTEMPTS = 20


@dataclass(frozen=True)
class BuildResult:
    """Where a dataset was written, its `dataset.json`, and whether an identical build was already there."""

    out: Path
    meta: dict[str, Any]
    up_to_date: bool


# ----------------------------------------------------------------------------------------------- options / sizes
def parse_option_value(text: str) -> object:
    """Interpret a `--option k=v` value: int, float, true/false, else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def resolve_options(spec: DatasetSpec, options: Mapping[str, object] | None) -> dict[str, object]:
    """Declared options with defaults filled and values coerced to the default's type; unknown names rejected."""
    given = dict(options or {})
    if not spec.options:
        return dict(sorted(given.items()))
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        raise QuirkyError(
            f"unknown option(s) {', '.join(unknown)} for dataset '{spec.name}'; "
            f"it accepts {', '.join(f'{k} (default {v})' for k, v in spec.options.items())}."
        )
    out: dict[str, object] = {}
    for key, default in spec.options.items():
        value = given.get(key, default)
        if isinstance(value, str) and not isinstance(default, str):
            value = parse_option_value(value)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value  # type: ignore[arg-type]
        else:
            ok = True
        if not ok:
            raise QuirkyError(
                f"option {key}={value!r} for dataset '{spec.name}' must be a {type(default).__name__} "
                f"(default {default})."
            )
        out[key] = value
    return out


def resolve_sizes(
    spec: DatasetSpec, n_train: int | None, n_val: int | None, n_test: int | None
) -> dict[str, int]:
    """Requested record counts per split (defaults from the spec); `train=-1` = all remaining questions."""
    d_train, d_val, d_test = spec.default_sizes
    sizes = {
        "train": d_train if n_train is None else n_train,
        "validation": d_val if n_val is None else n_val,
        "test": d_test if n_test is None else n_test,
    }
    for split, n in sizes.items():
        if not isinstance(n, int) or isinstance(n, bool):
            raise QuirkyError(f"size of {split} must be an integer, got {n!r}.")
        lowest = -1 if split == "train" else 0
        if n < lowest:
            raise QuirkyError(
                f"size of {split} must be >= {lowest}{' (-1 = all remaining questions)' if lowest < 0 else ''}, got {n}."
            )
    if sizes["train"] == 0 and sizes["validation"] == 0 and sizes["test"] == 0:
        raise QuirkyError("all split sizes are 0; ask for at least one record.")
    return sizes


# ------------------------------------------------------------------------------------------------- base rows
def _native(value: Any) -> Any:
    """numpy scalars -> Python scalars, so `str(template_args)` (the id) is the same as in the original."""
    return value.item() if isinstance(value, np.generic) else value


def _check_base(spec: DatasetSpec, base: pd.DataFrame) -> pd.DataFrame:
    needed = [*spec.arg_names, "question", "alice_label", "bob_label", "difficulty"]
    missing = [c for c in needed if c not in base.columns]
    if missing:
        raise QuirkyError(f"dataset '{spec.name}' produced base rows without column(s) {', '.join(missing)}.")
    base = base.reset_index(drop=True)
    for col in ("alice_label", "bob_label"):
        if base[col].isna().any():
            raise QuirkyError(f"dataset '{spec.name}' produced rows with a missing {col}.")
    if base["difficulty"].isna().any():
        raise QuirkyError(
            f"dataset '{spec.name}' produced rows without a difficulty; provide the difficulty (see `quirky datasets list`)."
        )
    return base


def deduplicate(base: pd.DataFrame, arg_names: tuple[str, ...]) -> tuple[pd.DataFrame, int]:
    """Drop base rows whose template arguments repeat an earlier row's.

    Identical arguments would render identical prompts; if their labels agree the copies add nothing, and if they
    disagree the question is ambiguous, so every copy is dropped.  Returns (rows kept, rows dropped).
    """
    keys = pd.Series(
        [
            repr(tuple(_native(v) for v in row))
            for row in zip(*(base[a].tolist() for a in arg_names), strict=True)
        ],
        index=base.index,
    )
    labels = base["alice_label"].astype(bool).astype(str) + base["bob_label"].astype(bool).astype(str)
    n_labels = labels.groupby(keys).transform("nunique")
    keep = ~keys.duplicated(keep="first") & (n_labels == 1)
    return base[keep].reset_index(drop=True), int((~keep).sum())


# ---------------------------------------------------------------------------------------------------- splitting
def split_questions(
    base: pd.DataFrame, sizes: Mapping[str, int], rng: np.random.Generator, name: str
) -> dict[str, list[int]]:
    """Assign whole questions (shuffled) to validation, test, then train so each gets exactly its record count.

    Returns split -> base-row positions (question order, then builder order within a question).
    """
    codes, uniques = pd.factorize(base["question"], sort=False)
    rows_of: list[list[int]] = [[] for _ in range(len(uniques))]
    for pos, code in enumerate(codes.tolist()):
        rows_of[code].append(pos)
    per_question = np.array([2 * len(r) for r in rows_of])
    total = int(per_question.sum())

    wanted = {s: sizes[s] for s in SPLITS}
    fixed = sum(n for s, n in wanted.items() if n >= 0)
    if fixed > total:
        raise QuirkyError(
            f"dataset '{name}' can give at most {total} records ({len(uniques)} questions) from this source/options, "
            f"but {fixed} were requested ({', '.join(f'{s} {n}' for s, n in wanted.items() if n >= 0)}); "
            "ask for fewer records (sizes count records: every row gives one Alice and one Bob record)."
        )
    distinct = sorted(set(per_question.tolist()))
    if len(distinct) == 1:
        step = distinct[0]
        bad = [f"{s} {n}" for s, n in wanted.items() if n > 0 and n % step]
        if bad:
            raise QuirkyError(
                f"sizes must be multiples of {step} for dataset '{name}' (each question gives {step} records: "
                f"both personas of every proposed answer); got {', '.join(bad)}."
            )

    # Shuffled questions go to the first split (validation, test, train) with room for all their records.  With
    # questions of different sizes an unlucky order can strand a remainder; a few fresh orders fix small cases.
    for _attempt in range(_FILL_ATTEMPTS):
        remaining = {s: (wanted[s] if wanted[s] >= 0 else math.inf) for s in SPLITS}
        assigned: dict[str, list[int]] = {s: [] for s in SPLITS}
        for q in rng.permutation(len(uniques)).tolist():
            need = int(per_question[q])
            for split in _FILL_ORDER:
                if remaining[split] >= need:
                    assigned[split].extend(rows_of[q])
                    remaining[split] -= need
                    break
            if all(remaining[s] == 0 for s in SPLITS):
                break
        unfilled = [f"{s} (short by {int(r)})" for s, r in remaining.items() if r not in (0, math.inf)]
        if not unfilled:
            return assigned
    raise QuirkyError(
        f"cannot fill {', '.join(unfilled)} for dataset '{name}' with whole questions from this source "
        f"(questions give {', '.join(map(str, distinct))} records each); ask for fewer records."
    )


# ------------------------------------------------------------------------------------------------ records
def record_args(spec: DatasetSpec, base: pd.DataFrame) -> list[dict[str, Any]]:
    """Per base row, its template arguments (without character) as Python values in `arg_names` order."""
    columns = [[_native(v) for v in base[a].tolist()] for a in spec.arg_names]
    return [dict(zip(spec.arg_names, values, strict=True)) for values in zip(*columns, strict=True)]


def make_ids(template_args: list[dict[str, Any]]) -> list[str]:
    """md5 of `str(template_args)` (incl. character), as in the original; the first 8 hex characters unless that
    collides, in which case every id is lengthened to the shortest prefix that is unique."""
    full = [hashlib.md5(str(a).encode()).hexdigest() for a in template_args]
    if len(set(full)) != len(full):
        raise QuirkyError(
            "two records have identical template arguments; the dataset produced duplicate questions."
        )
    for length in range(_ID_LENGTH, 33):
        ids = [h[:length] for h in full]
        if len(set(ids)) == len(ids):
            return ids
    raise AssertionError("unreachable: full md5 digests are unique")


def difficulty_quantiles(difficulty: np.ndarray, ids: list[str]) -> np.ndarray:
    """(rank + 0.5) / N over all records of all splits; ties broken by id, so the order of rows does not matter."""
    n = len(difficulty)
    order = np.lexsort((np.array(ids, dtype=str), difficulty))
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n)
    return (ranks + 0.5) / n


def expand_personas(
    spec: DatasetSpec, base: pd.DataFrame, assigned: Mapping[str, list[int]]
) -> dict[str, dict[str, list[Any]]]:
    """One Alice and one Bob record per base row, split by split; ids and difficulty quantiles over all records."""
    args = record_args(spec, base)
    alice = base["alice_label"].astype(bool).tolist()
    bob = base["bob_label"].astype(bool).tolist()
    difficulty = base["difficulty"].astype(float).tolist()

    split_of: list[str] = []
    columns: dict[str, list[Any]] = {
        k: [] for k in ("template_args", "character", "label", "alice_label", "bob_label", "difficulty")
    }
    for split in SPLITS:
        for pos in assigned[split]:
            for character in CHARACTERS:
                columns["template_args"].append({**args[pos], "character": character})
                columns["character"].append(character)
                columns["label"].append(alice[pos] if character == "Alice" else bob[pos])
                columns["alice_label"].append(alice[pos])
                columns["bob_label"].append(bob[pos])
                columns["difficulty"].append(difficulty[pos])
                split_of.append(split)

    ids = make_ids(columns["template_args"])
    quantiles = difficulty_quantiles(np.asarray(columns["difficulty"], dtype=np.float64), ids).tolist()
    out: dict[str, dict[str, list[Any]]] = {
        s: {"id": []} | {k: [] for k in columns} | {"difficulty_quantile": []} for s in SPLITS
    }
    for i, split in enumerate(split_of):
        out[split]["id"].append(ids[i])
        for key, values in columns.items():
            out[split][key].append(values[i])
        out[split]["difficulty_quantile"].append(quantiles[i])
    return out


# --------------------------------------------------------------------------------------------------- build
def _source_info(source: Path | None) -> dict[str, Any] | None:
    if source is None:
        return None
    info: dict[str, Any] = {"path": str(source)}
    if source.is_file():
        info["sha256"] = file_digest(source)
    return info


def _check_out_dir(out: Path, name: str) -> dict[str, Any] | None:
    """The existing `dataset.json` at `out` if it is a dataset of the same name; errors for anything else."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise QuirkyError(f"output path {out} exists and is not a directory; choose another --out.")
    meta_path = out / META_FILE
    if meta_path.is_file():
        try:
            meta = read_json(meta_path)
        except ValueError:
            meta = {}
        existing = meta.get("name") if isinstance(meta, dict) else None
        if existing != name:
            raise QuirkyError(
                f"{out} already holds dataset '{existing}', not '{name}'; choose another --out or delete it first."
            )
        return meta
    if any(out.iterdir()):
        raise QuirkyError(f"{out} exists, is not empty and is not a quirky dataset; choose another --out.")
    return None


def _files_intact(out: Path, meta: Mapping[str, Any]) -> bool:
    """Every split is present with the digest recorded when it was written (a truncated or edited parquet is not
    "up to date": it is rebuilt)."""
    digests = meta.get("files")
    if not isinstance(digests, Mapping):
        return False
    for s in SPLITS:
        f = out / f"{s}.parquet"
        if not f.is_file() or digests.get(s) != file_digest(f):
            return False
    return True


def build_dataset(
    name: str,
    out: str | Path,
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    source: str | Path | None = None,
    options: Mapping[str, object] | None = None,
) -> BuildResult:
    """Build dataset `name` into directory `out` (atomically; an identical existing build is kept as is)."""
    spec = get_spec(name)
    out = Path(out)
    sizes = resolve_sizes(spec, n_train, n_val, n_test)
    resolved = resolve_options(spec, options)
    source_path = Path(source) if source is not None else None
    if source_path is not None and not source_path.exists():
        raise QuirkyError(f"source {source_path} does not exist; pass an existing file with --source.")
    request = {"seed": seed, "sizes": sizes, "options": resolved, "source": _source_info(source_path)}

    check_output(out, "datasets", inputs=[source_path])  # refuse before any work, never after
    existing = _check_out_dir(out, spec.name)
    if (
        existing is not None
        and existing.get("request") == request
        and existing.get("quirky_version") == quirky.__version__
        and _files_intact(out, existing)
    ):
        return BuildResult(out=out, meta=existing, up_to_date=True)

    # Every question gives at least 2 records, so wanted/2 questions suffice; the small margin covers rows that
    # deduplication drops from real sources.  Unused questions are simply not written.
    wanted = sum(n for n in sizes.values() if n > 0)
    n_questions = None if sizes["train"] < 0 else math.ceil(wanted / 2 * 1.02) + 2
    build_rng, split_rng = (np.random.default_rng([seed, k]) for k in (0, 1))
    with counting_dropped() as dropped_by_family:
        base = spec.build_base(
            BuildRequest(n_questions=n_questions, rng=build_rng, source=source_path, options=resolved)
        )
    base = _check_base(spec, base)
    base, n_dropped = deduplicate(base, spec.arg_names)
    if len(base) == 0:
        raise QuirkyError(f"dataset '{spec.name}' has no usable rows from this source/options.")

    assigned = split_questions(base, sizes, split_rng, spec.name)
    records = expand_personas(spec, base, assigned)
    all_args = records_args(records)
    arg_types = [(a, arg_type([r[a] for r in all_args], a)) for a in spec.arg_names]
    schema = record_schema(arg_types)

    questions = base["question"].tolist()
    with replace_output(out, "datasets", inputs=[source_path]) as tmp:
        for split in SPLITS:
            write_split(tmp / f"{split}.parquet", records[split], schema)
        digests = {s: file_digest(tmp / f"{s}.parquet") for s in SPLITS}
        meta = {
            "name": spec.name,
            "seed": seed,
            "sizes": {s: len(records[s]["id"]) for s in SPLITS},
            "options": resolved,
            "fingerprint": fingerprint({"name": spec.name, "files": digests}),
            "quirky_version": quirky.__version__,
            "request": request,
            "questions": {s: len({questions[p] for p in assigned[s]}) for s in SPLITS},
            "duplicates_dropped": n_dropped + dropped_by_family[0],
            "files": digests,
        }
        write_json(tmp / META_FILE, meta)
    return BuildResult(out=out, meta=meta, up_to_date=False)


def records_args(records: Mapping[str, Mapping[str, list[Any]]]) -> list[dict[str, Any]]:
    """All records' template arguments across splits (to infer one arrow type per argument for every split)."""
    return [a for s in SPLITS for a in records[s]["template_args"]]
