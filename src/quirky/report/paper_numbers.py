"""The published numbers of Mallen, Brumley, Kharchenko & Belrose, *Eliciting Latent Knowledge from Quirky Language
Models* (arXiv 2312.01037v4), in one place, so the report and the tables of docs/RESULTS.md compare against the
same constants.

Why one module: a number copied into two places drifts.  Every constant says where it comes from.  The abstract's
numbers are quoted from the paper; the tables' numbers are the stored outputs of the original repository's notebook
`results/figures.ipynb` in EleutherAI/elk-generalization at commit 8f30c6d (2024-03-19), the outputs behind the v4
tables (at that commit `mean-diff-on-pair` still computed plain mean-diff, a bug fixed later in e001e93, so its
numbers equal mean-diff's by construction).

Keys use quirky's names: methods as in `quirky.probes.METHODS`, datasets as in `quirky.datasets.DATASET_NAMES`, and
a PGR row is `(method, train)` with `train` the experiment's training tag, as in `pgr.csv` (`all@alice_label` is
the reference's CCS/CRC trained on all examples, Alice's labels used only for the sign).

How the paper averages (reproduced by `quirky.experiments.average_pgr`): population is left out whenever hard
examples are involved (its label is decided by its difficulty), so it is absent from every AE->BH average and from
the anomaly averages; an average PGR is computed on averaged AUROCs,
(mean_k AUC - mean_k floor) / (mean_k ceiling - mean_k floor) over datasets k, not as a mean of per-dataset PGRs.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

PAPER: Final = "arXiv 2312.01037v4"
"""The paper these numbers belong to (v4, Aug 2024: Mallen, Brumley, Kharchenko, Belrose)."""

NOTEBOOK: Final = "EleutherAI/elk-generalization results/figures.ipynb at commit 8f30c6d"
"""The notebook whose stored outputs hold the paper's tables."""

MODELS: Final = 8
"""Every table average is over the paper's 8 finetuned base models (Pythia 410m-12b, Llama-2-7B, Mistral-7B)."""

AE_BH_DATASETS: Final = (
    "capitals",
    "hemisphere",
    "sciq",
    "sentiment",
    "nli",
    "authors",
    "addition",
    "subtraction",
    "multiplication",
    "modularaddition",
    "squaring",
)
"""The 11 datasets of the AE->BH averages (all 12 but population), arXiv 2312.01037v4 and the notebook at 8f30c6d."""

DATASET_ABBREVIATIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "capitals": "cap",
        "hemisphere": "hem",
        "population": "pop",
        "sciq": "sciq",
        "sentiment": "snt",
        "nli": "nli",
        "authors": "aut",
        "addition": "add",
        "subtraction": "sub",
        "multiplication": "mul",
        "modularaddition": "mod",
        "squaring": "sqr",
    }
)
"""The short dataset names the paper's tables use as column headers, in the paper's column order (arXiv
2312.01037v4; the notebook at 8f30c6d prints the same), so a table over all 12 datasets fits a page."""

EXCLUDED_WHEN_HARD: Final = ("population",)
"""Datasets the paper leaves out of every average that involves hard examples (AE->BH PGR, anomaly detection):
population's label is decided by its difficulty (notebook at 8f30c6d; arXiv 2312.01037v4)."""

AE_BH_PGR: Final[Mapping[tuple[str, str], float]] = MappingProxyType(
    {
        ("lr", "AE"): 0.68,
        ("mean-diff", "AE"): 0.69,
        ("lda", "AE"): 0.60,
        ("lr-on-pair", "AE"): 0.75,
        ("mean-diff-on-pair", "AE"): 0.69,  # = mean-diff at 8f30c6d (bug fixed in e001e93)
        ("ccs", "AE"): 0.54,
        ("ccs", "all@alice_label"): 0.15,
        ("crc", "AE"): 0.54,
        ("crc", "all@alice_label"): 0.36,
    }
)
"""AE->BH PGR (probe trained on Alice's easy examples, tested on Bob's hard ones, against Alice's labels at the
probe's earliest informative layer) averaged over 8 models and the 11 datasets of `AE_BH_DATASETS`, by (method,
training set).  Notebook outputs at 8f30c6d (the v4 PGR table of arXiv 2312.01037v4; its abstract rounds
lr-on-pair's value to "75%")."""

AE_BH_METHOD_AVERAGE: Final = 0.56
"""AE->BH PGR averaged over methods too (notebook at 8f30c6d, arXiv 2312.01037v4)."""

AE_BH_FLOOR: Final = 0.53
"""Average weak floor of the AE->BH table: final-layer `lr` trained on Bob (B->BH) against Alice's labels
(notebook at 8f30c6d, arXiv 2312.01037v4)."""

AE_BH_CEILING: Final = 0.87
"""Average strong ceiling of the AE->BH table: final-layer `lr` A->AH against Alice's labels (notebook at 8f30c6d,
arXiv 2312.01037v4)."""

AE_BH_FLOOR_CEILING: Final[Mapping[str, tuple[float, float]]] = MappingProxyType(
    {
        "capitals": (0.89, 0.93),
        "hemisphere": (0.53, 0.87),
        "sciq": (0.86, 0.94),
        "sentiment": (0.69, 0.99),
        "nli": (0.65, 0.97),
        "authors": (0.64, 0.64),
        "addition": (0.27, 0.92),
        "subtraction": (0.37, 0.90),
        "multiplication": (0.21, 0.95),
        "modularaddition": (0.48, 0.60),
        "squaring": (0.26, 0.82),
    }
)
"""Per-dataset (floor, ceiling) of the AE->BH table, averaged over 8 models: final-layer `lr` B->BH and A->AH
AUROC against Alice's labels (notebook at 8f30c6d, arXiv 2312.01037v4).  Population is not in the table.  Where
ceiling ~ floor (capitals, authors) the paper's per-dataset PGRs are huge and unstable (e.g. -6.68, 5.38)."""

A_B_PGR: Final[Mapping[tuple[str, str], float]] = MappingProxyType(
    {
        ("lr", "A"): 0.81,
        ("mean-diff", "A"): 0.76,
        ("lda", "A"): 0.73,
        ("lr-on-pair", "A"): 0.89,
        ("ccs", "A"): 0.66,
        ("crc", "A"): 0.66,
    }
)
"""A->B PGR (trained on Alice's examples, tested on Bob's, against Alice's labels at the probe's earliest
informative layer) averaged over 8 models and the datasets, by (method, training set).  Notebook outputs at
8f30c6d (arXiv 2312.01037v4; its abstract's "89%" is lr-on-pair).  The notebook's A->B table has no
mean-diff-on-pair row."""

A_B_FLOOR: Final = 0.53
"""Average floor of the A->B table: final-layer `lr` B->B against Alice's labels (notebook at 8f30c6d,
arXiv 2312.01037v4)."""

A_B_CEILING: Final = 0.89
"""Average ceiling of the A->B table: final-layer `lr` A->A against Alice's labels (notebook at 8f30c6d,
arXiv 2312.01037v4)."""

ANOMALY_AUROC: Final[Mapping[str, float]] = MappingProxyType(
    {
        "lr": 0.94,
        "mean-diff": 0.93,
        "lda": 0.95,
        "lr-on-pair": 0.95,
        "ccs": 0.90,
        "crc": 0.91,
    }
)
"""Mechanistic anomaly detection AUROC (Bob-hard anomalous vs Alice-hard normal) of a Gaussian fitted on the
AE-trained probe's per-layer scores of Alice's easy examples, without diagonal subtraction (quirky's `gaussian`
detector), averaged over 8 models and 11 datasets (population excluded), by probe method.  Notebook outputs at
8f30c6d; arXiv 2312.01037v4's abstract reports "0.95 AUROC"."""

ANOMALY_DETECTOR: Final = "gaussian"
"""The quirky detector that matches the paper's anomaly table (arXiv 2312.01037v4, notebook at 8f30c6d)."""

ABSTRACT_A_B_BEST_PGR: Final = 0.89
"""arXiv 2312.01037v4, abstract: the best probe (lr-on-pair) "recovers 89% of the gap in AUROC between truthful
and untruthful contexts" (A->B)."""

ABSTRACT_AE_BH_BEST_PGR: Final = 0.75
"""arXiv 2312.01037v4, abstract: "and 75% for questions harder than those used to train the probe" (AE->BH)."""

ABSTRACT_ANOMALY_AUROC: Final = 0.95
"""arXiv 2312.01037v4, abstract: anomaly detection "can flag untruthful behavior with 0.95 AUROC"."""

PGR_TABLES: Final[Mapping[str, Mapping[tuple[str, str], float]]] = MappingProxyType(
    {"AE->BH": AE_BH_PGR, "A->B": A_B_PGR}
)
"""The PGR averages by table name (as in `pgr.csv`'s `table` column); see `AE_BH_PGR` and `A_B_PGR`."""

FLOOR_CEILING_AVERAGES: Final[Mapping[str, tuple[float, float]]] = MappingProxyType(
    {"AE->BH": (AE_BH_FLOOR, AE_BH_CEILING), "A->B": (A_B_FLOOR, A_B_CEILING)}
)
"""The average (floor, ceiling) by table name; see `AE_BH_FLOOR`, `AE_BH_CEILING`, `A_B_FLOOR`, `A_B_CEILING`."""
