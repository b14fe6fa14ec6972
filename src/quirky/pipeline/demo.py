"""The demo's configuration: SmolLM2-135M made quirky on addition on a CPU, then every later stage.

Sizes are chosen so that the full demo fits in 20 minutes on 2 CPU cores and `--quick` in a few minutes (CI);
the finetuning recipe is the measured `cpu-smollm2` preset (docs/FINETUNING.md).
"""

from __future__ import annotations

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
#: The addition variant the preset was tuned on (operand range and templating setup).
DEMO_DATASET_OPTIONS = {"max_digits": 2}
DEMO_SETUP = "grader-last"


def demo_config(quick: bool = False, out: str | None = None) -> RunConfig:
    if quick:
        sizes, caps, steps, boot, layers = (2000, 400, 400), (400, 400), 20, 50, [-1, 15]
    else:
        sizes, caps, steps, boot, layers = (7000, 1000, 1000), (1000, 1000), None, 1000, list(range(0, 30, 3))
    settings: dict[str, object] = {}
    if steps is not None:
        settings.update(steps=steps, eval_every=10, max_eval_examples=200)
    return RunConfig(
        out=out or ("runs/demo-quick" if quick else "runs/demo"),
        models=["smollm2"],
        datasets=DatasetsConfig(
            names=["addition"],
            n_train=sizes[0],
            n_val=sizes[1],
            n_test=sizes[2],
            options={"addition": dict(DEMO_DATASET_OPTIONS)},
            setup=DEMO_SETUP,
        ),
        finetune=FinetuneConfig(enabled=True, preset=DEMO_PRESET, settings=settings),
        extract=ExtractConfig(max_train_examples=caps[0], max_test_examples=caps[1], batch_size=32),
        probe=ProbeConfig(bootstrap=boot),
        anomaly=AnomalyConfig(enabled=True),
        intervene=InterveneConfig(
            enabled=True, method="mean-diff", train_subset="A", layers=layers, max_examples=200
        ),
    )
