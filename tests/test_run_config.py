"""Run-config validation that must happen before any work: per-dataset finetuning settings and method names."""

from __future__ import annotations

from pathlib import Path

import pytest

from quirky.errors import QuirkyError
from quirky.pipeline.config import config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**sections: object) -> dict[str, object]:
    base: dict[str, object] = {"datasets": {"names": ["addition", "sentiment"]}}
    base.update(sections)
    return base


def test_per_dataset_settings_override_the_shared_ones() -> None:
    cfg = config_from_dict(
        _cfg(finetune={"settings": {"steps": 200, "lr": 1e-5}, "datasets": {"sentiment": {"steps": 80}}})
    )
    assert cfg.finetune.settings_for("sentiment") == {"steps": 80, "lr": 1e-5}
    assert cfg.finetune.settings_for("addition") == {"steps": 200, "lr": 1e-5}


def test_settings_for_a_dataset_not_in_the_run_are_refused() -> None:
    with pytest.raises(QuirkyError, match=r"\[finetune.datasets\] names capitals"):
        config_from_dict(_cfg(finetune={"datasets": {"capitals": {"steps": 10}}}))


def test_a_typo_in_a_per_dataset_setting_fails_at_load() -> None:
    with pytest.raises(QuirkyError, match=r"\[finetune.datasets.sentiment\].*stpes"):
        config_from_dict(_cfg(finetune={"datasets": {"sentiment": {"stpes": 10}}}))


def test_unknown_preset_fails_at_load() -> None:
    with pytest.raises(QuirkyError, match="unknown finetuning preset 'cpu-smolm2'"):
        config_from_dict(_cfg(finetune={"preset": "cpu-smolm2"}))


def test_disabled_finetuning_skips_setting_checks_but_not_dataset_names() -> None:
    config_from_dict(_cfg(finetune={"enabled": False, "settings": {"whatever": 1}}))
    with pytest.raises(QuirkyError, match="capitals"):
        config_from_dict(_cfg(finetune={"enabled": False, "datasets": {"capitals": {}}}))


def test_anomaly_methods_must_be_fitted_by_the_probe_stage() -> None:
    with pytest.raises(QuirkyError, match=r"\[anomaly\] methods ccs are not in \[probe\] methods"):
        config_from_dict(_cfg(probe={"methods": ["lr"]}, anomaly={"methods": ["lr", "ccs"]}))
    with pytest.raises(QuirkyError, match=r"unknown method\(s\) logreg"):
        config_from_dict(_cfg(anomaly={"methods": ["logreg"]}))
    with pytest.raises(QuirkyError, match=r"\[probe\] options names unknown method\(s\) css"):
        config_from_dict(_cfg(probe={"options": {"css": {"restarts": 2}}}))


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path: Path) -> None:
    load_config(path)


def test_paper_grid_covers_the_nine_offline_datasets_and_every_method() -> None:
    from quirky.probes import METHODS

    cfg = load_config(ROOT / "examples" / "paper-grid-smollm2.toml")
    assert set(cfg.datasets.names) == {
        "addition",
        "subtraction",
        "multiplication",
        "modularaddition",
        "squaring",
        "capitals",
        "hemisphere",
        "population",
        "sentiment",
    }
    assert cfg.probe.methods is None  # every method
    assert set(cfg.anomaly.methods) == set(METHODS) - {"random"}
    assert cfg.finetune.enabled and cfg.intervene.enabled and cfg.anomaly.enabled


def test_options_or_sources_for_a_dataset_not_in_the_run_are_refused() -> None:
    with pytest.raises(QuirkyError, match=r"\[datasets\] options names capitals, which \[datasets\] names"):
        config_from_dict(_cfg(datasets={"names": ["addition"], "options": {"capitals": {"n": 1}}}))
    with pytest.raises(QuirkyError, match=r"\[datasets\] sources names sciq, which \[datasets\] names"):
        config_from_dict(_cfg(datasets={"names": ["addition"], "sources": {"sciq": "sciq.parquet"}}))
    cfg = config_from_dict(
        _cfg(
            datasets={
                "names": ["addition", "sciq"],
                "options": {"addition": {}},
                "sources": {"sciq": "s.parquet"},
            }
        )
    )
    assert cfg.datasets.sources == {"sciq": "s.parquet"}


def test_unknown_dataset_names_fail_at_load_with_a_suggestion() -> None:
    with pytest.raises(
        QuirkyError, match=r"\[datasets\] names: unknown dataset 'additon'.*Did you mean 'addition'"
    ):
        config_from_dict(_cfg(datasets={"names": ["additon"]}))
    with pytest.raises(QuirkyError, match=r"addition more than once"):
        config_from_dict(_cfg(datasets={"names": ["addition", "addition"]}))


def test_setup_must_be_available_for_every_dataset() -> None:
    config_from_dict(_cfg(datasets={"names": ["addition"], "setup": "grader-first"}))
    with pytest.raises(QuirkyError) as e:
        config_from_dict(_cfg(datasets={"names": ["addition", "capitals"], "setup": "grader-first"}))
    msg = str(e.value)
    assert "\n" not in msg
    assert "'grader-first'" in msg and "dataset 'capitals'" in msg
    assert "single, mixture, standardized, all" in msg
    with pytest.raises(QuirkyError, match=r"setup 'singel' is not available for dataset 'addition'"):
        config_from_dict(_cfg(datasets={"names": ["addition"], "setup": "singel"}))


def test_run_restricted_to_some_datasets_keeps_their_settings_only(tmp_path: Path) -> None:
    """`quirky run CONFIG --datasets a,b`: the chosen datasets in the config's order, with their own sources,
    options and finetuning settings; the others' settings are dropped so the restricted config passes the checks
    that a stray per-dataset key fails; a name the config does not run is refused in one line."""
    from quirky.cli import main

    cfg = config_from_dict(
        _cfg(
            datasets={
                "names": ["sentiment", "addition", "capitals"],
                "options": {"addition": {"max_digits": 2}, "capitals": {}},
            },
            finetune={"enabled": True, "datasets": {"sentiment": {"steps": 3}, "addition": {"steps": 7}}},
        )
    )
    only = cfg.only(["capitals", "addition"])
    assert only.datasets.names == ["addition", "capitals"]
    assert only.datasets.options == {"addition": {"max_digits": 2}, "capitals": {}}
    assert only.finetune.datasets == {"addition": {"steps": 7}}
    assert only.finetune.settings_for("addition")["steps"] == 7
    assert cfg.datasets.names == ["sentiment", "addition", "capitals"]  # the original is untouched
    with pytest.raises(QuirkyError, match="squaring is not among the config's datasets"):
        cfg.only(["addition", "squaring"])

    config = tmp_path / "run.toml"
    config.write_text(f'out = "{tmp_path / "run"}"\n[datasets]\nnames = ["addition"]\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(config), "--datasets", "capitals"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "run").exists()
