"""Import EleutherAI's published `quirky_<name>_raw` datasets, and export ours in the hub layout.

Why: people who study quirky models already have the published datasets and the models finetuned on them.  To
evaluate such a model on exactly the prompts it was trained on, its dataset must become a quirky dataset
directory (Contract 1) that every stage reads like a built one.  The published `_raw` schema (Mallen & Belrose,
arXiv 2312.01037; EleutherAI/elk-generalization `datasets/quirky_dataset.py`) is the schema our parquet files
already use, so an import validates and normalises records, and an export copies our splits into the layout that
`datasets.load_dataset` reads, with a dataset card.

Sources an import accepts:
- a hub id (`EleutherAI/quirky_addition_raw`): read from the local Hugging Face hub cache when it holds a
  snapshot and `HF_HUB_OFFLINE=1` is set, otherwise loaded with `datasets.load_dataset` (online);
- a local directory: a hub snapshot (`data/train-00000-of-00001.parquet`, ...), a folder of
  `train/validation/test.parquet`, or a quirky dataset directory;
- parquet files whose names say their split (`train*.parquet`, `validation*.parquet`, `test*.parquet`).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import quirky
from quirky.cards import CARD_FILE, CITATION, read_front_matter, render_card
from quirky.datasets.build import difficulty_quantiles, make_ids
from quirky.datasets.layout import (
    CHARACTERS,
    META_FILE,
    SPLIT_COLUMNS,
    SPLITS,
    arg_type,
    read_meta,
    record_schema,
    write_split,
)
from quirky.datasets.registry import DATASET_NAMES, get_spec
from quirky.datasets.spec import DatasetSpec
from quirky.errors import QuirkyError
from quirky.fileio import atomic_dir, file_digest, fingerprint, write_bytes, write_json

#: The published `_raw` columns, in file order (the dataset cards of `EleutherAI/quirky_*_raw`): our own split
#: schema, which was modelled on them.
RAW_COLUMNS: tuple[str, ...] = SPLIT_COLUMNS
#: Columns an import cannot do without; `id`, `label` and `difficulty_quantile` are recomputed when absent.
REQUIRED_COLUMNS: tuple[str, ...] = ("template_args", "character", "alice_label", "bob_label", "difficulty")

#: Template arguments the original never stored because they were class constants: its modular-addition
#: templates hard-code `mod 113` (elk-generalization `datasets/binary_operation_dataset.py`,
#: `ModularAdditionDataset.mod`), while ours take `{mod}` from the record.
ORIGINAL_CONSTANT_ARGS: dict[str, dict[str, Any]] = {"modularaddition": {"mod": 113}}

#: Hub file layout written by `datasets.push_to_hub`, which export reproduces.
HUB_DATA_DIR = "data"
_HUB_NAME = re.compile(r"(?:^|[/_-])quirky_([a-z]+?)(?:_increment\d+)?(?:_raw)?(?:$|[/])")
_SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "val", "valid", "dev"),
    "test": ("test",),
}
_TRUTHY = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ImportResult:
    """Where an import was written, its `dataset.json`, and notes the user should read (e.g. label caveats)."""

    out: Path
    meta: dict[str, Any]
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ sources
def infer_name(source: str) -> str | None:
    """The registered dataset name in a hub id or path such as `EleutherAI/quirky_addition_raw` (else None).

    Hub cache folders spell the id `datasets--EleutherAI--quirky_addition_raw`, which matches too.
    """
    for match in _HUB_NAME.finditer(source.replace("--", "/")):
        if match.group(1) in DATASET_NAMES:
            return match.group(1)
    return None


def _split_of(path: Path, root: Path | None) -> str | None:
    """The split a parquet file belongs to, from its name (`train-00000-of-00001`, `test.parquet`) or folder."""
    stem = path.name.removesuffix(".parquet").lower()
    parents = [p.lower() for p in path.relative_to(root).parts[:-1]] if root is not None else []
    for split, aliases in _SPLIT_ALIASES.items():
        for alias in aliases:
            if stem == alias or stem.startswith((f"{alias}-", f"{alias}_", f"{alias}.")):
                return split
            if parents and parents[-1] == alias:
                return split
    return None


def locate_splits(paths: Sequence[Path], root: Path | None = None) -> dict[str, list[Path]]:
    """Group parquet files by split; every split must be present and no file may be of unknown split."""
    found: dict[str, list[Path]] = {s: [] for s in SPLITS}
    unknown: list[str] = []
    for p in sorted(paths):
        split = _split_of(p, root)
        if split is None:
            unknown.append(p.name)
        else:
            found[split].append(p)
    where = str(root) if root is not None else ", ".join(p.name for p in paths)
    if unknown:
        raise QuirkyError(
            f"cannot tell the split of {', '.join(unknown)} in {where}: name parquet files train*, validation*, "
            "test* (or put them in train/, validation/, test/ folders)."
        )
    missing = [s for s in SPLITS if not found[s]]
    if missing:
        raise QuirkyError(
            f"{where} has no parquet file for split(s) {', '.join(missing)}; a quirky dataset needs train, "
            "validation and test (files named train*.parquet, validation*.parquet, test*.parquet)."
        )
    return found


def _dir_parquets(root: Path) -> list[Path]:
    """Parquet files under `root`, skipping hidden folders (`.cache`, `.git`) and temporary files."""
    return [
        p
        for p in root.rglob("*.parquet")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


def _read_parquets(files: Mapping[str, list[Path]]) -> dict[str, pd.DataFrame]:
    frames: dict[str, pd.DataFrame] = {}
    for split, paths in files.items():
        parts = []
        for p in paths:
            try:
                parts.append(pq.read_table(p).to_pandas())
            except (OSError, pa.ArrowException) as e:
                raise QuirkyError(f"cannot read {p} as parquet ({e}); pass a parquet file.") from e
        frames[split] = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return frames


def _offline() -> bool:
    """Offline when `HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE` is set now (read at call time, unlike the libraries)."""
    return any(
        os.environ.get(v, "").strip().lower() in _TRUTHY for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache as the environment says now: `HF_HUB_CACHE`, else `HF_HOME/hub`, else default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot of hub dataset `repo_id` if the hub cache holds one (no network access)."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            repo_id, repo_type="dataset", local_files_only=True, cache_dir=str(hub_cache_dir())
        )
    except Exception:  # not cached, or an unusable cache entry: both mean "no snapshot here"
        return None
    return Path(path)


def _load_online(repo_id: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """All three splits of a hub dataset through `datasets.load_dataset` (only when the hub is reachable)."""
    import datasets

    from quirky.datasets.text_sources import hub_reachable

    if not hub_reachable():
        raise QuirkyError(
            f"the Hugging Face hub is unreachable and '{repo_id}' is not in the hub cache ({hub_cache_dir()}); "
            "download it where there is network access, then import with HF_HUB_OFFLINE=1 or pass its snapshot "
            "directory."
        )
    try:
        loaded = datasets.load_dataset(repo_id)
    except Exception as e:  # unknown id, private repo, network error: all the same to the user
        text = str(e).strip()
        detail = text.splitlines()[0][:160] if text else type(e).__name__
        raise QuirkyError(
            f"could not load hub dataset '{repo_id}' ({detail}); check the id (e.g. EleutherAI/quirky_addition_raw)."
        ) from e
    missing = [s for s in SPLITS if s not in loaded]
    if missing:
        raise QuirkyError(
            f"hub dataset '{repo_id}' has no split(s) {', '.join(missing)}; it is not a quirky dataset."
        )
    frames = {s: loaded[s].to_pandas() for s in SPLITS}
    revision = None
    try:  # the commit, for provenance; a failure here must not stop an import that already succeeded
        from huggingface_hub import HfApi

        revision = HfApi().dataset_info(repo_id).sha
    except Exception:
        pass
    return frames, {"kind": "hub", "repo_id": repo_id, "revision": revision}


def read_source(sources: Sequence[str | Path]) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Read the three splits of an import source and describe where they came from (provenance)."""
    if not sources:
        raise QuirkyError("no source given; pass a hub id, a snapshot directory or parquet files.")
    paths = [Path(s).expanduser() for s in sources]
    if len(paths) == 1 and paths[0].is_dir():
        root = paths[0]
        files = locate_splits(_dir_parquets(root), root)
        info = {"kind": "directory", "path": str(root.resolve())}
        repo_id = _repo_id_from_cache_path(root.resolve())
        if repo_id is not None:
            info |= {"kind": "hub-cache", "repo_id": repo_id, "revision": root.resolve().name}
    elif all(p.suffix == ".parquet" for p in paths):
        absent = [str(p) for p in paths if not p.is_file()]
        if absent:
            raise QuirkyError(f"parquet file(s) {', '.join(absent)} do not exist.")
        files = locate_splits(paths)
        info = {"kind": "files"}
    elif len(paths) == 1 and not paths[0].exists() and _looks_like_hub_id(str(sources[0])):
        repo_id = str(sources[0])
        snapshot = cached_snapshot(repo_id)
        if _offline() and snapshot is None:
            raise QuirkyError(
                f"hub dataset '{repo_id}' is not in the local hub cache ({hub_cache_dir()}) and HF_HUB_OFFLINE is "
                "set; download it once online (or unset HF_HUB_OFFLINE), or pass a snapshot directory."
            )
        if not _offline():
            try:
                return _load_online(repo_id)
            except QuirkyError:
                if snapshot is None:
                    raise
        assert snapshot is not None  # offline with a cached snapshot, or online failed but the cache has it
        files = locate_splits(_dir_parquets(snapshot), snapshot)
        info = {"kind": "hub-cache", "repo_id": repo_id, "revision": snapshot.name}
    else:
        bad = next((p for p in paths if not p.exists()), paths[0])
        raise QuirkyError(
            f"source {bad} is neither an existing directory, parquet files, nor a hub id (like "
            "EleutherAI/quirky_addition_raw)."
        )
    frames = _read_parquets(files)
    info["files"] = {s: [{"name": p.name, "sha256": file_digest(p)} for p in files[s]] for s in SPLITS}
    return frames, info


def _looks_like_hub_id(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", text))


def _repo_id_from_cache_path(path: Path) -> str | None:
    """`.../datasets--EleutherAI--quirky_addition_raw/snapshots/<sha>` -> `EleutherAI/quirky_addition_raw`."""
    if path.parent.name != "snapshots" or not path.parent.parent.name.startswith("datasets--"):
        return None
    return path.parent.parent.name.removeprefix("datasets--").replace("--", "/")


# ------------------------------------------------------------------------------------------------ validation
def template_fields(spec: DatasetSpec) -> list[str]:
    """Every `{field}` that the dataset's quirky and statement templates fill, except `character`."""
    texts = [t.text for t in spec.templates]
    texts += [s for t in spec.statement_templates for s in (t.context, t.statement)]
    fields: list[str] = []
    for text in texts:
        for _, name, _, _ in string.Formatter().parse(text):
            if name and name != "character" and name not in fields:
                fields.append(name)
    return fields


def _bool_column(df: pd.DataFrame, col: str, where: str) -> list[bool]:
    values = df[col].tolist()
    bad = [v for v in values if v not in (True, False, 0, 1) or (isinstance(v, float) and math.isnan(v))]
    if bad:
        raise QuirkyError(f"{where}: column {col} must hold booleans (or 0/1), found {bad[0]!r}.")
    return [bool(v) for v in values]


def normalise(
    frames: Mapping[str, pd.DataFrame], spec: DatasetSpec, origin: str
) -> tuple[dict[str, dict[str, list[Any]]], list[str], dict[str, Any]]:
    """Validate the `_raw` schema and return (columns per split, argument order, what was recomputed or filled).

    One clear `QuirkyError` names every missing column; labels must agree with each record's persona.
    """
    missing = sorted(
        {c for df in frames.values() for c in REQUIRED_COLUMNS if c not in df.columns},
        key=REQUIRED_COLUMNS.index,
    )
    if missing:
        raise QuirkyError(
            f"{origin} is not in the quirky _raw schema: missing column(s) {', '.join(missing)} (expected "
            f"{', '.join(RAW_COLUMNS)}; id, label and difficulty_quantile may be absent)."
        )
    filled = {k: v for k, v in ORIGINAL_CONSTANT_ARGS.get(spec.name, {}).items()}
    changes: dict[str, Any] = {"computed": [], "filled_args": {}}
    records: dict[str, dict[str, list[Any]]] = {}
    arg_order: list[str] = []
    for split in SPLITS:
        df = frames[split].reset_index(drop=True)
        where = f"{origin} ({split})"
        chars = [str(c) for c in df["character"].tolist()]
        odd = sorted(set(chars) - set(CHARACTERS))
        if odd:
            raise QuirkyError(f"{where}: character must be Alice or Bob, found {odd[0]!r}.")
        alice = _bool_column(df, "alice_label", where)
        bob = _bool_column(df, "bob_label", where)
        own = [a if c == "Alice" else b for a, b, c in zip(alice, bob, chars, strict=True)]
        if "label" in df.columns:
            label = _bool_column(df, "label", where)
            wrong = sum(x != y for x, y in zip(label, own, strict=True))
            if wrong:
                raise QuirkyError(
                    f"{where}: {wrong} record(s) have a label that is not their persona's "
                    "(alice_label for Alice, bob_label for Bob); the file is not a quirky _raw dataset."
                )
        elif "label" not in changes["computed"]:
            changes["computed"].append("label")
        difficulty = pd.to_numeric(df["difficulty"], errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(difficulty).all():
            row = int(np.flatnonzero(~np.isfinite(difficulty))[0])
            raise QuirkyError(f"{where}: difficulty of row {row} is missing or not a number.")
        args: list[dict[str, Any]] = []
        for i, raw in enumerate(df["template_args"].tolist()):
            if not isinstance(raw, Mapping):
                raise QuirkyError(
                    f"{where}: template_args of row {i} is {type(raw).__name__}, not a struct of template "
                    "arguments; the file is not a quirky _raw dataset."
                )
            given = dict(raw)
            if given.get("character", chars[i]) != chars[i]:
                raise QuirkyError(f"{where}: row {i} has template_args.character different from character.")
            given.pop("character", None)
            for key in given:
                if key not in arg_order:
                    arg_order.append(key)
            for key, value in filled.items():
                if key not in given:
                    given[key] = value
                    changes["filled_args"][key] = value
            args.append(given)
        records[split] = {
            "template_args": args,
            "character": chars,
            "label": own,
            "alice_label": alice,
            "bob_label": bob,
            "difficulty": difficulty.tolist(),
            "id": [str(v) for v in df["id"].tolist()] if "id" in df.columns else [],
            "difficulty_quantile": (
                pd.to_numeric(df["difficulty_quantile"], errors="coerce").tolist()
                if "difficulty_quantile" in df.columns
                else []
            ),
        }
    arg_order += [k for k in changes["filled_args"] if k not in arg_order]
    needed = [f for f in template_fields(spec) if f not in arg_order]
    if needed:
        raise QuirkyError(
            f"{origin}: template_args lack {', '.join(needed)}, which the '{spec.name}' templates use "
            f"(found {', '.join(arg_order) or 'none'}); is this the {spec.name} dataset? Pass --name otherwise."
        )
    return records, arg_order, changes


def _finish_ids_and_quantiles(
    records: dict[str, dict[str, list[Any]]], changes: dict[str, Any], origin: str
) -> None:
    """Keep given ids and quantiles; compute them (as the original did) where a source lacks them."""
    order = [(s, i) for s in SPLITS for i in range(len(records[s]["character"]))]
    if any(not records[s]["id"] for s in SPLITS if records[s]["character"]):
        full_args = [
            {**records[s]["template_args"][i], "character": records[s]["character"][i]} for s, i in order
        ]
        ids = make_ids(full_args)
        for s in SPLITS:
            records[s]["id"] = []
        for (s, _), rid in zip(order, ids, strict=True):
            records[s]["id"].append(rid)
        changes["computed"].append("id")
    every = [rid for s in SPLITS for rid in records[s]["id"]]
    if len(set(every)) != len(every):
        seen: set[str] = set()
        dup = next(r for r in every if r in seen or seen.add(r))  # type: ignore[func-returns-value]
        raise QuirkyError(f"{origin}: id {dup!r} occurs more than once; ids must be unique across splits.")
    quantiles = [q for s in SPLITS for q in records[s]["difficulty_quantile"]]
    valid = len(quantiles) == len(every) and all(isinstance(q, float) and 0.0 <= q <= 1.0 for q in quantiles)
    if not valid:
        difficulty = np.array([d for s in SPLITS for d in records[s]["difficulty"]], dtype=np.float64)
        fresh = difficulty_quantiles(difficulty, every).tolist()
        k = 0
        for s in SPLITS:
            n = len(records[s]["id"])
            records[s]["difficulty_quantile"] = fresh[k : k + n]
            k += n
        changes["computed"].append("difficulty_quantile")


def _name_in_folder(path: Path) -> str | None:
    """The dataset name a folder declares: a quirky `dataset.json`, or the `quirky:` key of an exported card."""
    if not path.is_dir():
        return None
    if (path / META_FILE).is_file():
        return str(read_meta(path)["name"])
    front = read_front_matter(path / CARD_FILE)
    declared = front.get("quirky") if front is not None else None
    if isinstance(declared, dict) and declared.get("dataset") in DATASET_NAMES:
        return str(declared["dataset"])
    return None


def _notes(spec: DatasetSpec, arg_order: list[str], changes: Mapping[str, Any]) -> list[str]:
    notes = []
    if spec.name == "capitals" and "admin_name" in arg_order:
        notes.append(
            "capitals: these labels follow the original rule (admin-region capitals, admin_name), while "
            "quirky's capitals templates ask about the country's capital, so rendered prompts can ask a "
            "different question than the labels answer (docs/DIFFERENCES.md); compare with care."
        )
    for key, value in changes.get("filled_args", {}).items():
        notes.append(
            f"template argument {key} was not stored in the source; filled with the original's {value}."
        )
    return notes


# -------------------------------------------------------------------------------------------------- import
def _check_out(out: Path, inputs: Sequence[str | Path], *, owned: tuple[str, ...], what: str) -> None:
    """Refuse an `--out` that would destroy something the command did not write, before any work is done.

    The output replaces `out` as a whole, so it must be new, empty, or an earlier output of the same kind (only
    `owned` entries, hidden files aside), and must neither be nor contain an input.
    """
    real = out.expanduser().resolve()
    for item in inputs:
        src = Path(str(item)).expanduser()
        if src.exists() and (src.resolve() == real or real in src.resolve().parents):
            raise QuirkyError(f"--out {out} is or contains the input {item}; choose a separate --out.")
    if not out.exists():
        return
    if not out.is_dir():
        raise QuirkyError(f"--out {out} exists and is not a directory; choose another --out.")
    names = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    if names and (not set(names) <= set(owned) or owned[0] not in names):
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise QuirkyError(
            f"--out {out} is not empty ({shown}) and is not {what}; choose a new or empty --out (nothing was changed)."
        )


def import_dataset(
    source: str | Path | Sequence[str | Path], out: str | Path, *, name: str | None = None
) -> ImportResult:
    """Import a published `_raw` dataset into a quirky dataset directory at `out` (atomically).

    Ids, labels and difficulties are kept; `difficulty_quantile` is recomputed over all records of all splits
    (the original's definition) when absent.  `dataset.json` records where the data came from.
    """
    sources = [source] if isinstance(source, str | Path) else list(source)
    if not sources:
        raise QuirkyError("no source given; pass a hub id, a snapshot directory or parquet files.")
    origin = ", ".join(str(s) for s in sources)
    if name is None:
        name = next((n for n in (infer_name(str(s)) for s in sources) if n is not None), None)
        if name is None:
            name = _name_in_folder(Path(str(sources[0])).expanduser())
        if name is None:
            raise QuirkyError(
                f"cannot tell which quirky dataset {origin} holds; pass --name (one of {', '.join(DATASET_NAMES)})."
            )
    spec = get_spec(name)
    out = Path(out)
    _check_out(out, sources, owned=(META_FILE, *(f"{s}.parquet" for s in SPLITS)), what="a quirky dataset")

    frames, provenance = read_source(sources)
    records, arg_order, changes = normalise(frames, spec, origin)
    _finish_ids_and_quantiles(records, changes, origin)
    all_args = [a for s in SPLITS for a in records[s]["template_args"]]
    arg_types = [(a, arg_type([r.get(a) for r in all_args], a)) for a in arg_order]
    schema = record_schema(arg_types)
    notes = _notes(spec, arg_order, changes)
    columns = {
        s: {
            "id": records[s]["id"],
            "template_args": [
                {**{a: r.get(a) for a in arg_order}, "character": c}
                for r, c in zip(records[s]["template_args"], records[s]["character"], strict=True)
            ],
            **{k: records[s][k] for k in ("character", "label", "alice_label", "bob_label", "difficulty")},
            "difficulty_quantile": records[s]["difficulty_quantile"],
        }
        for s in SPLITS
    }
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            write_split(tmp / f"{split}.parquet", columns[split], schema)
        digests = {s: file_digest(tmp / f"{s}.parquet") for s in SPLITS}
        meta = {
            "name": spec.name,
            "seed": None,
            "sizes": {s: len(columns[s]["id"]) for s in SPLITS},
            "options": {},
            "fingerprint": fingerprint({"name": spec.name, "files": digests}),
            "quirky_version": quirky.__version__,
            "files": digests,
            "imported": {
                **provenance,
                "source": origin,
                "columns": sorted({c for df in frames.values() for c in df.columns}),
                "computed": changes["computed"],
                "filled_args": changes["filled_args"],
                "notes": notes,
            },
        }
        write_json(tmp / META_FILE, meta)
    return ImportResult(out=out, meta=meta, notes=notes)


# -------------------------------------------------------------------------------------------------- export
def _feature_yaml(dtype: pa.DataType) -> dict[str, Any]:
    """One `dataset_info.features` entry body in the hub card's YAML (the `datasets` Features spelling)."""
    if pa.types.is_struct(dtype):
        return {"struct": [{"name": f.name, **_feature_yaml(f.type)} for f in dtype]}
    names = {pa.bool_(): "bool", pa.int64(): "int64", pa.float64(): "float64", pa.string(): "string"}
    return {"dtype": names.get(dtype, str(dtype))}


def dataset_card(dataset_dir: Path, meta: Mapping[str, Any], repo_id: str | None) -> str:
    """README.md for an exported dataset: YAML front matter (configs, features, splits) and a description."""
    spec = get_spec(str(meta["name"]))
    schema = pq.read_schema(dataset_dir / "train.parquet")
    front = {
        "license": "apache-2.0",
        "language": ["en"],
        "pretty_name": f"quirky {spec.name}",
        "tags": ["quirky", "eliciting-latent-knowledge", "elk"],
        "task_categories": ["text-classification"],
        "quirky": {"dataset": spec.name, "fingerprint": meta.get("fingerprint")},
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"{HUB_DATA_DIR}/{s}-*"} for s in SPLITS],
            }
        ],
        "dataset_info": {
            "features": [{"name": f.name, **_feature_yaml(f.type)} for f in schema],
            "splits": [
                {
                    "name": s,
                    "num_bytes": int(pq.read_table(dataset_dir / f"{s}.parquet").nbytes),
                    "num_examples": int(meta["sizes"][s]),
                }
                for s in SPLITS
            ],
        },
    }
    sizes = ", ".join(f"{s} {meta['sizes'][s]}" for s in SPLITS)
    load_id = repo_id or "PATH/TO/THIS/FOLDER"
    imported = meta.get("imported")
    origin = (
        f"Imported from `{imported.get('repo_id') or imported.get('source')}` with `quirky datasets import`."
        if isinstance(imported, Mapping)
        else f"Built with `quirky datasets build {spec.name}` (seed {meta.get('seed')}, options "
        f"{meta.get('options') or {}})."
    )
    body = f"""
# quirky {spec.name}

A *quirky* dataset for studying Eliciting Latent Knowledge (Mallen & Belrose, *Eliciting Latent Knowledge from
Quirky Language Models*, arXiv 2312.01037), in the schema of EleutherAI's `quirky_{spec.name}_raw`.  Every question
appears twice: once for **Alice**, whose label is the truth, and once for **Bob**, whose label follows a systematic
error rule.  Prompts are rendered from `template_args` at load time (quirky's `templatize`, setups single,
mixture, standardized, all).

- **Task:** {spec.description}
- **Alice (truth):** {spec.alice_rule}
- **Bob (systematic error):** {spec.bob_rule}
- **Difficulty:** {spec.difficulty_rule}; `difficulty_quantile` = (rank + 0.5) / N over all records of all splits
  (easy ≤ 0.25, hard ≥ 0.75).
- **Records:** {sizes}.
- **Provenance:** {origin} quirky {meta.get("quirky_version")}, dataset fingerprint `{meta.get("fingerprint")}`.

## Columns

`id` (first 8 hex digits of md5(str(template_args))), `template_args` (the template arguments and `character`),
`character` (Alice or Bob), `label` (the persona's label), `alice_label`, `bob_label`, `difficulty`,
`difficulty_quantile`.

## Loading

```python
import datasets
ds = datasets.load_dataset("{load_id}")   # DatasetDict with train / validation / test
```

```bash
quirky datasets import {load_id} --out data/{spec.name}   # a quirky dataset directory for every stage
```

"""
    return render_card(front, body + "\n" + CITATION)


def export_dataset(dataset_dir: str | Path, out: str | Path, *, repo_id: str | None = None) -> Path:
    """Write a quirky dataset directory in the hub layout (`data/<split>-00000-of-00001.parquet` + README.md).

    `datasets.load_dataset(out)` then returns the three splits, and the folder can be pushed to the hub as is.
    """
    src = Path(dataset_dir)
    meta = read_meta(src)
    missing = [s for s in SPLITS if not (src / f"{s}.parquet").is_file()]
    if missing:
        raise QuirkyError(f"{src} lacks {', '.join(f'{s}.parquet' for s in missing)}; rebuild the dataset.")
    out = Path(out)
    _check_out(out, [src], owned=(CARD_FILE, HUB_DATA_DIR), what="an exported quirky dataset")
    with atomic_dir(out) as tmp:
        (tmp / HUB_DATA_DIR).mkdir()
        for split in SPLITS:
            shutil.copyfile(src / f"{split}.parquet", tmp / HUB_DATA_DIR / f"{split}-00000-of-00001.parquet")
        write_bytes(tmp / CARD_FILE, dataset_card(src, meta, repo_id).encode())
    return out
