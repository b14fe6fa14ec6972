"""`quirky datasets import / export`: the published `_raw` hub layout in and out, offline, nothing downloaded.

Hub snapshots and a hub cache are built in temporary folders from tiny built datasets, then reshaped into what the
original published (integer difficulty, no `difficulty_quantile`, no `mod` template argument for modular addition).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from quirky.datasets import SPLITS, build_dataset, load_split, load_templated, read_meta
from quirky.datasets.hub_io import export_dataset, import_dataset, infer_name
from quirky.errors import QuirkyError

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from quirky.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built") / "addition"
    build_dataset("addition", out, n_train=40, n_val=24, n_test=24, options={"max_digits": 2})
    return out


def _front_matter(card: Path) -> dict:
    text = card.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---", 2)[1])


def _as_published(
    src: Path, dst: Path, *, drop: tuple[str, ...] = (), drop_args: tuple[str, ...] = ()
) -> Path:
    """Rewrite exported hub files the way the original published them (int difficulty, fewer columns)."""
    for split in SPLITS:
        (path,) = (src / "data").glob(f"{split}-*.parquet")
        df = pq.read_table(path).to_pandas()
        df["difficulty"] = df["difficulty"].round().astype("int64")
        df["template_args"] = [
            {k: v for k, v in a.items() if k not in drop_args} for a in df["template_args"]
        ]
        df = df.drop(columns=list(drop))
        (dst / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), dst / "data" / path.name)
    (dst / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a published quirky dataset\n")
    return dst


def _hub_cache(root: Path, repo_id: str, snapshot: Path) -> Path:
    """A Hugging Face hub cache holding one dataset snapshot (the layout huggingface_hub writes)."""
    repo = root / f"datasets--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    (repo / "snapshots").mkdir()
    snapshot.rename(repo / "snapshots" / REVISION)
    return root


def test_export_loads_with_datasets_and_imports_back_identically(built: Path, tmp_path: Path) -> None:
    import datasets

    hub = export_dataset(built, tmp_path / "hub", repo_id="me/quirky_addition_raw")
    front = _front_matter(hub / "README.md")
    assert front["license"] == "apache-2.0" and "quirky" in front["tags"]
    assert [c["split"] for c in front["configs"][0]["data_files"]] == list(SPLITS)
    assert "Bob" in (hub / "README.md").read_text() and "load_dataset" in (hub / "README.md").read_text()

    loaded = datasets.load_dataset(str(hub), cache_dir=str(tmp_path / "hf-datasets"))
    meta = read_meta(built)
    assert {s: loaded[s].num_rows for s in SPLITS} == meta["sizes"]
    assert loaded["test"][0]["id"] == load_split(built, "test")["id"][0]

    # the card names the dataset, so the folder imports without --name, byte-identical to the build
    result = import_dataset(hub, tmp_path / "back")
    assert result.meta["name"] == "addition" and result.meta["fingerprint"] == meta["fingerprint"]
    assert result.meta["imported"]["computed"] == []
    for split in SPLITS:
        pd.testing.assert_frame_equal(
            load_templated(tmp_path / "back", split, setup="mixture"),
            load_templated(built, split, setup="mixture"),
        )


def test_import_hub_id_from_offline_cache(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = tmp_path / "mod"
    build_dataset("modularaddition", mod, n_train=40, n_val=24, n_test=24, options={"max_digits": 2})
    published = _as_published(
        export_dataset(mod, tmp_path / "export"),
        tmp_path / "snap",
        drop=("difficulty_quantile",),
        drop_args=("mod",),
    )
    cache = _hub_cache(tmp_path / "hf" / "hub", "EleutherAI/quirky_modularaddition_raw", published)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    out = tmp_path / "imported"
    code, stdout, err = _run(
        ["datasets", "import", "EleutherAI/quirky_modularaddition_raw", "--out", str(out)], capsys
    )
    assert code == 0, err
    assert "modularaddition: imported" in stdout and "mod" in stdout
    meta = read_meta(out)
    imported = meta["imported"]
    assert imported["kind"] == "hub-cache" and imported["revision"] == REVISION
    assert imported["repo_id"] == "EleutherAI/quirky_modularaddition_raw"
    assert imported["computed"] == ["difficulty_quantile"] and imported["filled_args"] == {"mod": 113}
    for split in SPLITS:
        ours, theirs = load_split(out, split), load_split(mod, split)
        # ids and labels kept; quantiles recomputed over all splits equal the build's (same definition)
        assert ours["id"].tolist() == theirs["id"].tolist()
        for col in ("label", "alice_label", "bob_label", "character", "difficulty_quantile"):
            assert ours[col].tolist() == theirs[col].tolist(), col
        assert (
            load_templated(out, split)["statement"].tolist()
            == load_templated(mod, split)["statement"].tolist()
        )

    # a hub id that is not cached, offline: one line, exit 2, nothing written
    code, _, err = _run(
        ["datasets", "import", "EleutherAI/quirky_sciq_raw", "--out", str(tmp_path / "x")], capsys
    )
    assert code == 2 and "not in the local hub cache" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_import_parquet_files_and_recomputed_ids(built: Path, tmp_path: Path) -> None:
    files = []
    for split in SPLITS:
        df = load_split(built, split).drop(columns=["id", "label"])
        path = tmp_path / f"{split}.parquet"
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
        files.append(path)
    result = import_dataset(files, tmp_path / "out", name="addition")
    assert sorted(result.meta["imported"]["computed"]) == ["id", "label"]
    for split in SPLITS:
        ours, theirs = load_split(tmp_path / "out", split), load_split(built, split)
        assert ours["id"].tolist() == theirs["id"].tolist()  # md5 of str(template_args), as the original
        assert ours["label"].tolist() == theirs["label"].tolist()


def test_schema_errors_are_one_line(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad" / "data"
    bad.mkdir(parents=True)
    for split in SPLITS:
        df = load_split(built, split).drop(columns=["alice_label", "difficulty"])
        pq.write_table(
            pa.Table.from_pandas(df, preserve_index=False), bad / f"{split}-00000-of-00001.parquet"
        )
    code, _, err = _run(
        ["datasets", "import", str(bad.parent), "--out", str(tmp_path / "o"), "--name", "addition"], capsys
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "missing column(s) alice_label, difficulty" in err

    # labels that are not the persona's, a missing split, a dataset whose templates need other arguments
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for split in SPLITS:
        df = load_split(built, split)
        if split == "test":
            df["label"] = ~df["label"]
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), wrong / f"{split}.parquet")
    with pytest.raises(QuirkyError, match="not their persona's"):
        import_dataset(wrong, tmp_path / "o", name="addition")
    with pytest.raises(QuirkyError, match="templates use"):
        import_dataset(built, tmp_path / "o", name="sentiment")
    (wrong / "test.parquet").unlink()
    with pytest.raises(QuirkyError, match="no parquet file for split"):
        import_dataset(wrong, tmp_path / "o", name="addition")
    with pytest.raises(QuirkyError, match="pass --name"):
        import_dataset(wrong, tmp_path / "o")
    assert not (tmp_path / "o").exists()

    # an --out holding something else, or the source itself, is refused before any work
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(QuirkyError, match="is not a quirky dataset"):
        import_dataset(built, tmp_path / "other", name="addition")
    with pytest.raises(QuirkyError, match="is or contains the input"):
        import_dataset(built, built, name="addition")
    with pytest.raises(QuirkyError, match="not an exported quirky dataset"):
        export_dataset(built, tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_infer_name() -> None:
    assert infer_name("EleutherAI/quirky_addition_raw") == "addition"
    assert infer_name("/x/datasets--EleutherAI--quirky_nli_raw/snapshots/abc") == "nli"
    assert infer_name("atmallen/quirky_modularaddition_increment0") == "modularaddition"
    assert infer_name("EleutherAI/sciq") is None
