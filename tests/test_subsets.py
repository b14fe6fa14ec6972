"""One home for the persona x difficulty subsets (`quirky.subsets`): every stage that selects rows by persona or
difficulty selects exactly the rows of `subset_mask`, at the default cutoffs and at others, on quantiles that sit
on and just beside the cutoffs (where a `<` for a `<=` would show)."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
import torch

from quirky.errors import QuirkyError
from quirky.subsets import EASY, HARD, SUBSETS, subset_mask

QUANTILES = (0.0, 0.1, 0.2499, 0.25, 0.2501, 0.4, 0.5, 0.6, 0.7499, 0.75, 0.7501, 0.9, 1.0)
CUTOFFS = ((EASY, HARD), (0.1, 0.9), (0.2501, 0.7499), (0.5, 0.5))


def _frame() -> pd.DataFrame:
    q = np.array(QUANTILES * 2)
    n = len(q)
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "character": ["Alice"] * len(QUANTILES) + ["Bob"] * len(QUANTILES),
            "label": np.arange(n) % 2,
            "alice_label": np.arange(n) % 2,
            "bob_label": (np.arange(n) // 2) % 2,
            "difficulty_quantile": q,
            "template": 0,
            "statement": [f"s{i}" for i in range(n)],
            "choices": [["No", "Yes"]] * n,
        }
    )


def _ids(df: pd.DataFrame) -> list[str]:
    return df["id"].tolist()


def test_the_rule_itself() -> None:
    df = _frame()
    q, alice = df["difficulty_quantile"].to_numpy(), (df["character"] == "Alice").to_numpy()
    assert subset_mask(df, "all").all()
    np.testing.assert_array_equal(subset_mask(df, "AE"), alice & (q <= 0.25))
    np.testing.assert_array_equal(subset_mask(df, "BH"), ~alice & (q >= 0.75))
    np.testing.assert_array_equal(subset_mask(df, "B"), ~alice)
    with pytest.raises(QuirkyError, match="unknown subset 'CE'"):
        subset_mask(df, "CE")


def test_every_default_cutoff_is_the_one_home() -> None:
    from quirky.experiments.probe_run import ProbeRun
    from quirky.experiments.transfer import TransferConfig
    from quirky.extraction.store import ActivationStore
    from quirky.interventions.experiment import select_examples

    assert (TransferConfig().easy, TransferConfig().hard) == (EASY, HARD)
    for fn in (ActivationStore.mask, select_examples):
        params = inspect.signature(fn).parameters
        assert (params["easy"].default, params["hard"].default) == (EASY, HARD), fn
    run = ProbeRun(__import__("pathlib").Path("/nonexistent"))  # no run.json: the defaults
    assert (run.easy, run.hard) == (EASY, HARD)


@pytest.mark.parametrize(("easy", "hard"), CUTOFFS)
def test_store_masks_are_the_one_rule(tmp_path, easy: float, hard: float) -> None:
    from quirky.extraction.store import write_store

    df = _frame()
    n = len(df)
    store = write_store(
        tmp_path / "store",
        hiddens=torch.zeros(1, n, 2),
        pairs=torch.zeros(1, n, 2, 2),
        lm_log_odds=torch.zeros(n),
        meta=df.drop(columns=["statement", "choices"]),
        config={"source": {}},
    )
    for subset in SUBSETS:
        np.testing.assert_array_equal(
            store.mask(subset, easy=easy, hard=hard), subset_mask(df, subset, easy, hard), subset
        )


@pytest.mark.parametrize(("easy", "hard"), CUTOFFS)
def test_intervention_prompts_are_the_one_rule(easy: float, hard: float) -> None:
    from quirky.interventions.experiment import select_examples

    df = _frame()
    for subset in SUBSETS:
        want = _ids(df[subset_mask(df, subset, easy, hard)])
        if not want:
            continue
        assert _ids(select_examples(df, subset, None, easy=easy, hard=hard)) == want, subset


def test_finetuning_filter_is_the_one_rule() -> None:
    from quirky.finetune.config import FinetuneConfig
    from quirky.finetune.train import select_examples

    df = _frame()
    for characters, persona in (("both", ""), ("Alice", "A"), ("Bob", "B")):
        for difficulty, side in (("none", ""), ("easy", "E"), ("hard", "H")):
            got = select_examples(df, FinetuneConfig(characters=characters, difficulty=difficulty))
            if persona:
                want = subset_mask(df, persona + side)
            else:  # both personas: the union of Alice's and Bob's rows on that side
                want = subset_mask(df, "A" + side) | subset_mask(df, "B" + side)
            assert _ids(got) == _ids(df[want]), (characters, difficulty)


@pytest.mark.parametrize(("easy", "hard"), CUTOFFS)
def test_anomaly_row_check_is_the_one_rule(easy: float, hard: float) -> None:
    """The anomaly stage accepts exactly a subset's rows as that subset, and refuses one row beyond them."""
    from quirky.anomaly.inputs import _check_rows
    from quirky.experiments.probe_run import ProbeRun

    df = _frame()
    run = ProbeRun(__import__("pathlib").Path("/nonexistent"))
    run.info = {"easy": easy, "hard": hard}  # type: ignore[misc]
    for subset in ("AE", "AH", "BH"):
        rows = np.flatnonzero(subset_mask(df, subset, easy, hard))
        _check_rows(df, rows, subset, run)
        outside = np.flatnonzero(~subset_mask(df, subset, easy, hard))
        with pytest.raises(QuirkyError, match="are not all"):
            _check_rows(df, np.append(rows, outside[:1]), subset, run)


def test_report_counts_are_the_one_rule(tmp_path) -> None:
    """The datasets section's easy/hard columns count the one rule's rows."""
    from quirky.report.sections import _split_counts

    df = _frame()
    row = _split_counts(df)
    assert row["easy (q≤.25)"] == int((subset_mask(df, "AE") | subset_mask(df, "BE")).sum())
    assert row["hard (q≥.75)"] == int((subset_mask(df, "AH") | subset_mask(df, "BH")).sum())
    assert row["Alice"] == int(subset_mask(df, "A").sum())
