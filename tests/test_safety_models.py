"""No prompts, no surprises when naming a model: a folder's own code never runs without --trust-remote-code, a
hub id is never silently replaced by a same-named local folder, and a local path is never looked up on the hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_finetune import make_tokenizer
from test_safety_outdir import run_cli

from quirky.errors import QuirkyError
from quirky.models import loading


def custom_code_model(path: Path, marker: Path) -> Path:
    """A model folder whose config asks transformers to import the folder's own module (which leaves a marker)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "quirky-custom-test",
                "auto_map": {"AutoConfig": "custom.Cfg", "AutoModelForCausalLM": "custom.Model"},
            }
        )
    )
    (path / "custom.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig, PreTrainedModel\n"
        "class Cfg(PretrainedConfig):\n    model_type = 'quirky-custom-test'\n"
        "class Model(PreTrainedModel):\n    config_class = Cfg\n"
    )
    make_tokenizer().save_pretrained(path)
    return path


def test_a_folders_code_never_runs_unasked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loading.TRUST_REMOTE_CODE_ENV, raising=False)
    marker = tmp_path / "ran.txt"
    model = custom_code_model(tmp_path / "m", marker)
    monkeypatch.setattr("builtins.input", lambda *_a: pytest.fail("asked on the terminal"))
    with pytest.raises(QuirkyError, match="--trust-remote-code"):
        loading.load_model(model, device="cpu")
    assert not marker.exists()


def test_the_flag_is_global_and_reaches_every_stage(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv(loading.TRUST_REMOTE_CODE_ENV, raising=False)
    code, _ = run_cli(["datasets", "list", "--trust-remote-code"], capsys)
    assert code == 0 and loading.trust_remote_code()


def test_a_hub_id_is_never_a_same_named_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EleutherAI" / "pythia-70m").mkdir(parents=True)
    (tmp_path / "EleutherAI" / "pythia-70m" / "config.json").write_text("{}")
    with pytest.raises(QuirkyError, match=r"names both a local folder and a Hugging Face hub id; write \./"):
        loading.resolve_model("EleutherAI/pythia-70m")
    assert loading.resolve_model("./EleutherAI/pythia-70m").kind == "local"


def test_a_local_path_is_never_looked_up_on_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loading, "_hub_reachable", lambda *_a, **_k: pytest.fail("looked up on the hub"))
    monkeypatch.setattr(
        loading, "_cached_hub_snapshot", lambda *_a: pytest.fail("looked up in the hub cache")
    )
    for name in ("./models/x", str(tmp_path / "x"), "runs/a/finetune", "~/no-such-model-dir"):
        with pytest.raises(QuirkyError, match="does not exist"):
            loading.resolve_model(name)
