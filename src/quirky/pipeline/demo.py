"""The demo's configuration: SmolLM2-135M made quirky on a CPU, then every later stage.

The dataset follows the evidence of docs/RESULTS.md: hemisphere is the offline dataset on which the general CPU
recipe reaches the finetuning target (LM AUROC >= 0.9 for both personas on held-out data) within the demo's
budget; addition, the demo of earlier versions, stays available with `--dataset addition` (it plateaus near 0.75:
the model has to learn arithmetic from one bit per example, docs/FINETUNING.md).  Sizes are chosen so that the full
demo fits in 20 minutes on 2 CPU cores and `--quick` in a few minutes (CI).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quirky.errors import QuirkyError
from quirky.pipeline.config import (
    AnomalyConfig,
    DatasetsConfig,
    ExtractConfig,
    FinetuneConfig,
    InterveneConfig,
    ProbeConfig,
    RunConfig,
)

DEMO_PRESET = "cpu-smollm2"


@dataclass(frozen=True)
class DemoDataset:
    """One dataset the demo can run: its builder options, templating setup and finetuning steps."""

    options: dict[str, Any] = field(default_factory=dict)
    setup: str = "single"
    steps: int | None = None  # None = the preset's


DEMO_DATASETS: dict[str, DemoDataset] = {
    # the general CPU recipe of examples/paper-grid-smollm2.toml (200 steps of the cpu-smollm2 preset)
    "hemisphere": DemoDataset(steps=200),
    # the preset's own tuning target: 2-digit addition in the short grader-last setup, 300 steps
    "addition": DemoDataset(options={"max_digits": 2}, setup="grader-last"),
}
DEMO_DEFAULT = "hemisphere"


def demo_config(quick: bool = False, out: str | None = None, dataset: str = DEMO_DEFAULT) -> RunConfig:
    if dataset not in DEMO_DATASETS:
        raise QuirkyError(f"the demo runs on {', '.join(DEMO_DATASETS)}; got --dataset {dataset!r}")
    demo = DEMO_DATASETS[dataset]
    if quick:
        sizes, caps, steps, boot, layers = (2000, 400, 400), (400, 400), 20, 50, [-1, 15]
    else:
        sizes, caps, steps, boot, layers = (
            (7000, 1000, 1000),
            (1000, 1000),
            demo.steps,
            1000,
            list(range(0, 30, 3)),
        )
    settings: dict[str, object] = {}
    if steps is not None:
        settings["steps"] = steps
    if quick:
        settings.update(eval_every=10, max_eval_examples=200)
    default_out = "runs/demo-quick" if quick else "runs/demo"
    if dataset != DEMO_DEFAULT:
        default_out += f"-{dataset}"
    return RunConfig(
        out=out or default_out,
        models=["smollm2"],
        datasets=DatasetsConfig(
            names=[dataset],
            n_train=sizes[0],
            n_val=sizes[1],
            n_test=sizes[2],
            options={dataset: dict(demo.options)} if demo.options else {},
            setup=demo.setup,
        ),
        finetune=FinetuneConfig(enabled=True, preset=DEMO_PRESET, settings=settings),
        extract=ExtractConfig(max_train_examples=caps[0], max_test_examples=caps[1], batch_size=32),
        probe=ProbeConfig(bootstrap=boot),
        anomaly=AnomalyConfig(enabled=True),
        intervene=InterveneConfig(
            enabled=True, method="mean-diff", train_subset="A", layers=layers, max_examples=200
        ),
    )
