"""`quirky run`: the whole pipeline on tiny random models, caching, config errors, and the submitit sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quirky.errors import QuirkyError
from quirky.pipeline.config import config_from_dict, load_config
from quirky.pipeline.run import run_pipeline

PROMPTS = [
    f"{a} + {b} = {a + b + d}. {c}:{t}"
    for a in range(40)
    for b in (3, 17)
    for d in (0, 1)
    for c in ("Alice", "Bob")
    for t in (" True", " False")
]


def save_tiny(path: Path, arch: str) -> Path:
    from quirky.models.tiny import tiny_model, tiny_tokenizer

    # Every answer word of the two datasets used here must be one token with its leading space.
    answers = [" Yes No True False Correct Incorrect Right Wrong Northern Southern North South"] * 200
    tok = tiny_tokenizer(PROMPTS + answers, bos=arch == "llama", vocab_size=600)
    model = tiny_model(arch, len(tok), layers=3, hidden=32, max_position_embeddings=256)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_config(tmp: Path, models: list[str], datasets: list[str], executor: str = "local") -> dict:
    return {
        "out": str(tmp / "run"),
        "models": models,
        "datasets": {
            "names": datasets,
            "n_train": 200,
            "n_val": 120,
            "n_test": 120,
            "options": {"addition": {"max_digits": 2}},
        },
        "finetune": {
            "settings": {"steps": 2, "batch_size": 8, "grad_accum": 1, "lr": 1e-3, "max_eval_examples": 40}
        },
        "extract": {"max_train_examples": 120, "max_test_examples": 120, "batch_size": 16},
        "probe": {"methods": ["lr", "mean-diff", "lda", "ccs"], "bootstrap": 20},
        "anomaly": {"enabled": True, "detectors": ["gaussian", "mahalanobis"]},
        "intervene": {"enabled": True, "layers": [1, -1], "max_examples": 30},
        "executor": {"kind": executor},
        "device": "cpu",
    }


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"llama": save_tiny(root / "llama", "llama"), "gpt2": save_tiny(root / "gpt2", "gpt2")}


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(QuirkyError, match="lora_rnak"):
        config_from_dict({"finetune": {"lora_rnak": 8}})
    with pytest.raises(QuirkyError, match=r"extract\.batch_size must be int"):
        config_from_dict({"extract": {"batch_size": "big"}})
    with pytest.raises(QuirkyError, match="executor"):
        config_from_dict({"executor": {"kind": "kubernetes"}})
    bad = tmp_path / "c.toml"
    bad.write_text("models = [")
    with pytest.raises(QuirkyError, match="not valid TOML"):
        load_config(bad)
    good = tmp_path / "c.yaml"
    good.write_text("models: [m]\ndatasets:\n  names: [addition]\n")
    assert load_config(good).models == ["m"]


def test_run_is_complete_and_cached(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_config(tmp_path, [str(tiny_models["llama"])], ["addition"]))
    first = run_pipeline(cfg, log=lambda _m: None)
    run = Path(cfg.out)
    assert (run / "report" / "report.html").is_file()
    job = first["results"][0]
    assert set(job["timings_s"]) >= {"finetune", "extract", "probe", "anomaly", "intervene"}
    stores = sorted(p.parent.name for p in (run / "activations").rglob("store.json"))
    assert stores == ["test", "validation"]
    mtimes = {
        p: p.stat().st_mtime_ns
        for p in run.rglob("*")
        if p.is_file() and "report" not in p.parts and p.name != "run.json"
    }
    second = run_pipeline(cfg, log=lambda _m: None)
    assert second["results"][0]["probe_summary"] == job["probe_summary"]
    changed = [str(p) for p, t in mtimes.items() if p.stat().st_mtime_ns != t]
    assert changed == [], f"a cached re-run rewrote {changed}"
    record = json.loads((run / "run.json").read_text())
    assert record["versions"]["torch"] and record["config"]["models"] == [str(tiny_models["llama"])]


def test_submitit_sweep_two_models_two_datasets(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    models = [str(tiny_models["llama"]), str(tiny_models["gpt2"])]
    raw = tiny_config(tmp_path, models, ["addition", "hemisphere"], executor="submitit-local")
    raw["intervene"]["enabled"] = False
    raw["probe"]["methods"] = ["lr", "mean-diff"]
    record = run_pipeline(config_from_dict(raw), log=lambda _m: None)
    pairs = sorted((r["model"], r["dataset"]) for r in record["results"])
    assert pairs == sorted((m, d) for m in models for d in ("addition", "hemisphere"))
    summary = json.loads((Path(raw["out"]) / "report" / "summary.json").read_text())
    assert summary["sections"], "the aggregated report has no sections"


def test_changed_settings_recompute_what_depends_on_them(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """A re-run with other finetuning settings replaces the stale finetune, stores, probes and interventions in
    the run directory (no 'holds a different run' refusal) and reuses the datasets."""
    raw = tiny_config(tmp_path, [str(tiny_models["llama"])], ["addition"])
    run_pipeline(config_from_dict(raw), log=lambda _m: None)
    run = Path(raw["out"])
    dataset_files = {p: p.stat().st_mtime_ns for p in (run / "datasets").rglob("*") if p.is_file()}
    store = next((run / "activations").rglob("validation/store.json"))
    old_store = json.loads(store.read_text())["fingerprint"]

    raw["finetune"]["settings"]["steps"] = 3
    raw["intervene"]["layers"] = [0, -1]
    second = run_pipeline(config_from_dict(raw), log=lambda _m: None)
    assert second["results"][0]["finetune_metrics"]["step"] == 3
    assert json.loads(store.read_text())["fingerprint"] != old_store  # extracted from the new model
    assert all(p.stat().st_mtime_ns == t for p, t in dataset_files.items())
    layers = second["results"][0]["intervention"]["config"]["layers"]
    assert layers[0] == 0
