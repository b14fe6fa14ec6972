"""The report: every section and figure from a small run directory, in HTML, Markdown and JSON, and the HTML
checked in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from quirky.errors import QuirkyError
from quirky.fileio import write_json
from quirky.report import build_report, discover, model_slug
from quirky.report.sections import BUILDERS

MODEL = "tiny"
DATASET = "addition"
LAYERS = 4


def _tiny_model_dir(path: Path) -> None:
    """A random 4-layer Llama with a word-level tokenizer (digits split), saved like any local model."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = ["<pad>", "<unk>", "<s>", "</s>", *"0123456789", "+", "-", "*", "=", ".", ":", "^", "%", "?", ","]
    vocab += ["Alice", "Bob", "False", "True", "No", "Yes"]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)


def _finetune_metrics(run: Path) -> None:
    """An evaluation history written by the finetuning stage's own writer (a real finetune is too slow here)."""
    from quirky.finetune.train import write_history

    steps = [0, 1, 2, 4, 8, 16, 32]
    history = [
        {
            "step": s,
            "epoch": s / 8,
            "lr": 1e-4,
            "train_loss": 1 / (1 + s),
            "loss": 1.1 / (1 + s),
            "alice_acc": 0.5 + s / 80,
            "alice_auroc": 0.5 + s / 70,
            "bob_acc": 0.5 + s / 90,
            "bob_auroc": 0.5 + s / 75,
            "bob_vs_truth_auroc": 0.5 - s / 200,
            "n_alice": 50,
            "n_bob": 50,
        }
        for s in steps
    ]
    out = run / "finetune" / f"{MODEL}__{DATASET}"
    out.mkdir(parents=True)
    write_history(out, history)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small run built with the real stages: dataset, extraction, probes, anomaly, interventions."""
    import transformers

    from quirky.anomaly.runner import run_anomaly
    from quirky.datasets import build_dataset
    from quirky.experiments.evaluate import EvalSettings
    from quirky.experiments.transfer import TransferConfig, run_transfer
    from quirky.extraction.extract import ExtractSettings, extract
    from quirky.interventions.runner import run_intervention

    transformers.logging.set_verbosity_error()
    run = tmp_path_factory.mktemp("run")
    dataset = run / "datasets" / DATASET
    build_dataset(DATASET, dataset, seed=0, n_train=60, n_val=400, n_test=400)
    model_dir = run / "model"
    _tiny_model_dir(model_dir)
    activations = run / "activations" / MODEL / DATASET
    for split in ("validation", "test"):
        extract(
            str(model_dir),
            dataset,
            split,
            activations / split,
            device="cpu",
            progress=False,
            settings=ExtractSettings(batch_size=64, storage_dtype="float32"),
        )
    probes = run / "probes" / MODEL / DATASET
    run_transfer(
        activations, probes, TransferConfig(methods=("lr", "mean-diff"), eval=EvalSettings(n_boot=20))
    )
    run_anomaly(
        [probes],
        run / "anomaly" / MODEL / DATASET,
        methods=["lr"],
        detectors=["gaussian", "mahalanobis"],
        n_boot=100,
    )
    run_intervention(
        model=str(model_dir),
        probes=probes,
        dataset=dataset,
        max_examples=40,
        device="cpu",
        out=run / "interventions" / MODEL / DATASET / "mean-diff__A",
        progress=False,
    )
    _finetune_metrics(run)
    write_json(
        run / "run.json",
        {
            "config": {"models": [MODEL], "datasets": {"names": [DATASET]}},
            "versions": {"quirky": "0.1.0", "torch": torch.__version__},
            "fingerprints": {f"datasets/{DATASET}": "0123456789abcdef"},
        },
    )
    return run


@pytest.fixture(scope="module")
def report(run_dir: Path):
    return build_report(run_dir)


SECTION_IDS = [key for key, _ in BUILDERS]
EXPECTED_FIGURES = {
    "summary_pgr",
    "finetune_curves",
    "lm_accuracy",
    "probe_auroc_layers_all",
    "probe_auroc_layers_disagree",
    "anomaly_auroc",
    "anomaly_scores",
    "interventions",
}


def test_layout_discovery(run_dir: Path) -> None:
    layout = discover(run_dir)
    assert set(layout.datasets) == {DATASET}
    assert set(layout.activations) == {(MODEL, DATASET, "validation"), (MODEL, DATASET, "test")}
    assert set(layout.finetune) == {(MODEL, DATASET)}
    assert set(layout.probes) == {(MODEL, DATASET)}
    assert set(layout.interventions) == {(MODEL, DATASET, "mean-diff__A")}
    assert layout.models() == [MODEL]
    assert model_slug("EleutherAI/pythia-410m") == "EleutherAI--pythia-410m"


def test_every_section_and_figure(report, run_dir: Path) -> None:
    assert report.errors == {}
    assert [s.id for s in report.sections] == SECTION_IDS
    assert all(s.present for s in report.sections), [(s.id, s.note) for s in report.sections if not s.present]
    html = report.html.read_text()
    md = report.markdown.read_text()
    summary = json.loads(report.summary_json.read_text())
    for sid in SECTION_IDS:
        assert f'<section id="{sid}" data-present="true">' in html
        assert f'<a id="{sid}"></a>' in md
        assert summary["sections"][sid]["present"] is True
    assert set(summary["figures"]) == EXPECTED_FIGURES
    for name in EXPECTED_FIGURES:
        assert f'id="fig-{name}"' in html
        png = (report.out_dir / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG")
        assert f"figures/{name}.png" in md
    # the HTML is self-contained: figures inlined, nothing fetched from elsewhere
    assert html.count("data:image/png;base64,") == len(EXPECTED_FIGURES)
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_numbers_are_the_stage_outputs(report, run_dir: Path) -> None:
    from quirky.extraction.store import open_store

    summary = json.loads(report.summary_json.read_text())
    # LM accuracy on Alice-hard, recomputed from the store
    store = open_store(run_dir / "activations" / MODEL / DATASET / "test")
    m = store.mask("AH")
    acc = float(np.mean((store.lm_log_odds().numpy()[m] > 0) == (store.meta["label"].to_numpy()[m] == 1)))
    rows = {r["subset"]: r for r in summary["sections"]["lm"]["rows"]}
    assert rows["AH"]["accuracy"] == pytest.approx(acc)
    assert rows["AH"]["n"] == int(m.sum())
    # the same subsets with the probe stage's bootstrap CIs: its own `lm` rows, carried over unchanged
    results = pd.read_parquet(run_dir / "probes" / MODEL / DATASET / "results.parquet")
    lm = results[(results["method"] == "lm") & (results["filter"] == "all")].set_index(["test", "label_col"])
    with_ci = {r["subset"]: r for r in summary["sections"]["lm"]["with_ci"]}
    assert set(with_ci) == {"A", "B", "AE", "AH", "BE", "BH"}
    for subset, r in with_ci.items():
        own, truth = lm.loc[(subset, "label")], lm.loc[(subset, "alice_label")]
        assert r["n"] == own["n"] == rows[subset]["n"]
        assert [r["auroc_persona"], r["auroc_persona_lo"], r["auroc_persona_hi"]] == pytest.approx(
            [own["auroc"], own["auroc_lo"], own["auroc_hi"]]
        )
        assert r["auroc_truth"] == pytest.approx(truth["auroc"])
        assert r["accuracy"] == pytest.approx(rows[subset]["accuracy"])  # the store and the probe stage agree
        assert r["auroc_persona_lo"] <= r["auroc_persona"] <= r["auroc_persona_hi"]
    # dataset sizes: the parquet row counts
    sizes = {r["split"]: r["records"] for r in summary["sections"]["datasets"]["sizes"]}
    assert sizes == {"train": 60, "validation": 400, "test": 400}
    crosstab = summary["sections"]["datasets"]["crosstab"]
    assert sum(r["records"] for r in crosstab) == 860
    # anomaly and interventions carried over unchanged
    anomaly = json.loads((run_dir / "anomaly" / MODEL / DATASET / "anomaly.json").read_text())
    got = {r["detector"]: r["AUROC"] for r in summary["sections"]["anomaly"]["results"]}
    assert got == {r["detector"]: pytest.approx(r["auroc"]) for r in anomaly["results"]}
    # the summary's anomaly row: the paper's detector on lr scores, beside the paper's number
    gaussian = next(r for r in anomaly["results"] if r["detector"] == "gaussian" and r["method"] == "lr")
    (row,) = summary["sections"]["summary"]["anomaly"]
    assert row == {
        "method": "lr",
        "AUROC (mean)": pytest.approx(gaussian["auroc"]),
        "runs": 1,
        "paper AUROC": 0.94,
    }
    (head,) = summary["sections"]["summary"]["headlines"]
    assert head["anomaly AUROC"] == pytest.approx(anomaly["summary"]["gaussian/lr"]["mean_auroc"])
    assert summary["sections"]["appendix"]["fingerprints"] == {f"datasets/{DATASET}": "0123456789abcdef"}
    # PGR per method: the probe stage's pgr.csv (one model, one dataset: model and dataset averages are identity)
    pgr_csv = pd.read_csv(run_dir / "probes" / MODEL / DATASET / "pgr.csv")
    assert set(summary["sections"]["summary"]["pgr"]) == {"AE->BH", "A->B"}
    for table, info in summary["sections"]["summary"]["pgr"].items():
        got_pgr = {(r["method"], r["train"]): r["pgr"] for r in info["pgr"] if r["dataset"] == DATASET}
        want = pgr_csv[pgr_csv["table"] == table]
        assert len(want) == len(got_pgr) > 0
        for r in want.itertuples():
            assert got_pgr[(r.method, r.train)] == pytest.approx(r.pgr, nan_ok=True, rel=1e-5)
    # interventions: the stage's own JSON
    inter = json.loads(
        (run_dir / "interventions" / MODEL / DATASET / "mean-diff__A" / "interventions.json").read_text()
    )
    rows = summary["sections"]["interventions"]["results"]
    assert [r["auroc_alice"] for r in rows] == [r["auroc_alice"] for r in inter["layers"]]


def test_deterministic(report, run_dir: Path, tmp_path: Path) -> None:
    again = build_report(run_dir, tmp_path / "again")
    for name in ("report.html", "report.md", "summary.json"):
        assert (again.out_dir / name).read_bytes() == (report.out_dir / name).read_bytes(), name


def test_missing_stages_are_reported_not_fatal(tmp_path: Path, run_dir: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(run_dir / "datasets", partial / "datasets")
    result = build_report(partial)
    present = {s.id: s.present for s in result.sections}
    assert present["datasets"] and present["appendix"]
    assert not present["finetuning"] and not present["anomaly"] and not present["lm"]
    assert not present["summary"]  # nothing probed yet: the summary says so instead of showing empty tables
    html = result.html.read_text()
    assert "(not run)" in html
    with pytest.raises(QuirkyError, match="does not look like a quirky run"):
        build_report(tmp_path / "partial" / "datasets" / DATASET)
    with pytest.raises(QuirkyError, match="does not exist"):
        build_report(tmp_path / "nope")


def test_without_activations_the_lm_section_uses_the_probe_results(run_dir: Path, tmp_path: Path) -> None:
    """A results archive keeps no activations: the LM's accuracy and AUROC per subset come from the probe stage's
    own rows (with their CIs), the summary still opens the report."""
    archive = tmp_path / "archive"
    shutil.copytree(run_dir / "probes", archive / "probes")
    result = build_report(archive)
    assert result.errors == {}
    sections = {s.id: s for s in result.sections}
    assert sections["lm"].present and sections["summary"].present
    assert [f.name for f in sections["lm"].figures()] == ["lm_auroc"]
    results = pd.read_parquet(run_dir / "probes" / MODEL / DATASET / "results.parquet")
    bh = results[
        (results["method"] == "lm")
        & (results["test"] == "BH")
        & (results["label_col"] == "alice_label")
        & (results["filter"] == "all")
    ].iloc[0]
    row = next(r for r in result.summary["sections"]["lm"]["with_ci"] if r["subset"] == "BH")
    assert (row["auroc_truth"], row["auroc_truth_lo"], row["auroc_truth_hi"]) == pytest.approx(
        (bh["auroc"], bh["auroc_lo"], bh["auroc_hi"])
    )


def test_cli(run_dir: Path, tmp_path: Path) -> None:
    from quirky.cli import main

    small = tmp_path / "small"
    shutil.copytree(run_dir / "anomaly", small / "anomaly")
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(small), "--out", str(tmp_path / "cli")])
    assert exit_info.value.code == 0
    assert (tmp_path / "cli" / "report.html").is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "missing")])
    assert exit_info.value.code == 2


# ------------------------------------------------------------------------------------------- headless browser
CHECK_SCRIPT = """
<script>
window.addEventListener('load', function () {
  var out = {images: [], sections: [], errors: window.__errors || []};
  document.querySelectorAll('img').forEach(function (img) {
    out.images.push({alt: img.alt.slice(0, 30), ok: img.complete && img.naturalWidth > 0, w: img.naturalWidth});
  });
  document.querySelectorAll('section').forEach(function (s) {
    var r = s.getBoundingClientRect();
    out.sections.push({id: s.id, visible: r.height > 0 && getComputedStyle(s).display !== 'none',
                       heading: (s.querySelector('h2') || {}).textContent || ''});
  });
  // what a reader sees first: the sections and the table that start within the first screen
  var screen = window.innerHeight;
  out.viewport = {w: window.innerWidth, h: screen};
  out.first_screen = [];
  document.querySelectorAll('section').forEach(function (s) {
    if (s.getBoundingClientRect().top < screen) { out.first_screen.push(s.id); }
  });
  var first = document.querySelector('section table');
  if (first) {
    var r = first.getBoundingClientRect();
    var caption = (first.closest('.table-wrap') || first).previousElementSibling;
    out.first_table = {section: first.closest('section').id, top: r.top, bottom: r.bottom,
                       caption: caption ? caption.textContent : '',
                       header: Array.from(first.querySelectorAll('th')).map(function (h) { return h.textContent; }),
                       row: Array.from(first.querySelectorAll('tbody tr:first-child td')).map(function (c) {
                         return c.textContent; })};
  }
  out.appendix_top = document.getElementById('appendix').getBoundingClientRect().top;
  var pre = document.createElement('pre'); pre.id = 'browser-check';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>
"""


SCREEN = (1280, 900)  # a laptop browser window: what a reader sees before scrolling


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    _chromium() is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)
def test_html_in_headless_browser(report, tmp_path: Path) -> None:
    """Load a copy of the page (plus a checking script appended at the end) in headless chromium: every image
    decodes, every section renders with its heading, and the browser logs no console errors."""
    page = tmp_path / "checked.html"
    html = report.html.read_text()
    error_hook = "<script>window.__errors=[];window.addEventListener('error',function(e){window.__errors.push(String(e.message||e.type))},true);</script>"
    page.write_text(
        html.replace("<head>", "<head>" + error_hook, 1).replace("</body>", CHECK_SCRIPT + "</body>")
    )
    chromium = _chromium()
    assert chromium is not None
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            f"--window-size={SCREEN[0]},{SCREEN[1]}",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r'<pre id="browser-check">(.*?)</pre>', proc.stdout, re.S)
    assert match, "the check script did not run: " + proc.stdout[-500:]
    import html as html_lib

    result = json.loads(html_lib.unescape(match.group(1)))
    assert result["errors"] == []
    assert len(result["images"]) == len(EXPECTED_FIGURES)
    assert all(img["ok"] and img["w"] > 100 for img in result["images"]), result["images"]
    assert [s["id"] for s in result["sections"]] == SECTION_IDS
    assert all(s["visible"] and s["heading"] for s in result["sections"]), result["sections"]
    console_errors = [
        line for line in proc.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()
    ]
    assert console_errors == []
    # the first screen shows the results, not the configuration: the summary is the first section, its first
    # table is the headline table, entirely visible without scrolling, and the appendix starts far below
    assert result["viewport"]["w"] == SCREEN[0] and 0 < result["viewport"]["h"] <= SCREEN[1]
    screen = result["viewport"]["h"]
    assert result["first_screen"] == ["summary"], result["first_screen"]
    head = result["first_table"]
    assert head["section"] == "summary" and head["caption"].startswith("Headline numbers")
    assert 0 < head["top"] < head["bottom"] <= screen, head
    assert head["header"][:3] == ["dataset", "LM AUROC Alice (vs Alice)", "LM AUROC Bob (vs Bob)"]
    probe_summary = json.loads(
        (report.out_dir.parent / "probes" / MODEL / DATASET / "summary.json").read_text()
    )
    lm = probe_summary["lm"]
    assert head["row"][:3] == [
        DATASET,
        f"{lm['A']['all']['alice_label']:.3f}",
        f"{lm['B']['all']['bob_label']:.3f}",
    ]
    assert result["appendix_top"] > 2 * screen
    assert result["sections"][-1]["id"] == "appendix"


def test_several_models_and_datasets(run_dir: Path, tmp_path: Path) -> None:
    """Two models and two datasets (copies of one probe run): curves are averaged over runs, the PGR table gains
    the reference's 'average' column, and population is left out of the easy->hard average, saying so."""
    multi = tmp_path / "multi"
    src = run_dir / "probes" / MODEL / DATASET
    for model, dataset in (("m1", DATASET), ("m2", DATASET), ("m1", "population")):
        shutil.copytree(src, multi / "probes" / model / dataset)
    result = build_report(multi)
    assert result.errors == {}
    pgr = result.summary["sections"]["summary"]["pgr"]
    assert pgr["AE->BH"]["excluded"] == ["population"] and pgr["A->B"]["excluded"] == []
    single = json.loads(result.summary_json.read_text())  # JSON-clean copy
    for table in ("AE->BH", "A->B"):
        rows = single["sections"]["summary"]["pgr"][table]["pgr"]
        by = {(r["method"], r["train"], r["dataset"]): r for r in rows}
        for (method, train, dataset), r in by.items():
            if dataset == "average":
                # identical copies: the average equals the (model-averaged) value of the kept dataset
                assert r["pgr"] == pytest.approx(by[(method, train, DATASET)]["pgr"], nan_ok=True)
                assert r["n_datasets"] == (1 if table == "AE->BH" else 2)
    # the overview (dataset x method) before the details: datasets in the paper's order, population shown but
    # left out of the average, which is then the (model-averaged) addition row
    overview = {r["dataset"]: r for r in single["sections"]["summary"]["overview"]}
    assert list(overview) == ["population", DATASET, "average (without population)"]
    for method in ("lr", "mean-diff"):
        assert overview["average (without population)"][method] == pytest.approx(overview[DATASET][method])
    html = result.html.read_text()
    assert html.index("Overview, dataset x method") < html.index('<section id="datasets"')


def test_curve_average_ignores_nan_runs() -> None:
    """The original (results/viz.py) divided by all runs even where one was NaN; here a NaN run is left out."""
    from quirky.report.sections import _curves

    rows = []
    for model, values in (("m1", [0.6, 0.7, 0.8, 0.9]), ("m2", [0.6, np.nan, np.nan, 0.7])):
        for layer, v in enumerate(values):
            rows.append(
                {
                    "model": model,
                    "dataset": "d",
                    "method": "lr",
                    "train": "A",
                    "train_label": "label",
                    "test": "B",
                    "layer": layer,
                    "label_col": "alice_label",
                    "filter": "all",
                    "auroc": v,
                    "auroc_lo": v,
                    "auroc_hi": v,
                }
            )
    curves = _curves(pd.DataFrame(rows), "alice_label", "all")
    panel = curves[curves["panel"].str.startswith("A → B")]

    def at(x: float) -> float:
        return float(panel.loc[np.isclose(panel["x"], x), "y"].iloc[0])

    # x = 0.25 (layer 0): both runs 0.6; x = 1.0: mean(0.9, 0.7); x = 0.5 and 0.75, where m2 is NaN: m1 alone
    # (the reference would have reported (0.7 + 0) / 2); between layers 0 and 1 m2 is NaN too, so m1 alone
    assert at(0.25) == pytest.approx(0.6)
    assert at(1.0) == pytest.approx(0.8)
    assert at(0.5) == pytest.approx(0.7)
    assert at(0.75) == pytest.approx(0.8)
    assert at(0.3) == pytest.approx(0.6 + 0.1 * (0.3 - 0.25) / 0.25)  # m1 only: m2's segment ends in NaN
    assert at(0.9) == pytest.approx(0.86)  # m1 only: m2 is NaN at layer 2
    assert np.isnan(at(0.0))  # before the first layer nothing is extrapolated
