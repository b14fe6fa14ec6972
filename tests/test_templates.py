"""Template validity for every registered dataset (the original's templates had missing persona slots, inverted
questions and choices without a leading space, e.g. `elk_generalization/datasets/cities_dataset.py:239`).  Covers
whatever the registry can load, so new datasets are checked too."""

from __future__ import annotations

import re
import string

import pytest

from quirky.datasets import DATASET_NAMES, available_specs
from quirky.datasets.spec import DatasetSpec
from quirky.datasets.templating import render, render_statement

SPECS: dict[str, DatasetSpec] = {n: s for n, s in available_specs().items() if isinstance(s, DatasetSpec)}

#: First word of a choice -> what it asserts.  The positive choice (index 1) must affirm the proposition.
AFFIRM = {
    "yes",
    "true",
    "correct",
    "right",
    "positive",
    "good",
    "northern",
    "imply",
    "implies",
    "emplie",
    "agree",
}
DENY = {
    "no",
    "false",
    "incorrect",
    "wrong",
    "negative",
    "bad",
    "southern",
    "contradict",
    "contradicts",
    "konterdik",
    "disagree",
}
#: Wording that inverts a yes/no question ("is it non-positive?"); templates must ask the positive question.
NEGATION = re.compile(r"\b(?:not|never|non-\w+|isn't|aren't|doesn't|wasn't|won't|cannot)\b", re.IGNORECASE)


def slots(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def literal(text: str) -> str:
    return "".join(lit for lit, *_ in string.Formatter().parse(text))


def test_all_twelve_are_registered():
    assert set(DATASET_NAMES) == {
        "addition", "subtraction", "multiplication", "modularaddition", "squaring",
        "capitals", "hemisphere", "population", "authors", "sciq", "sentiment", "nli",
    }  # fmt: skip
    # the offline families this module owns must always load
    assert {"addition", "subtraction", "multiplication", "modularaddition", "squaring"} <= set(SPECS)
    assert {"capitals", "hemisphere", "population"} <= set(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_quirky_templates(name):
    spec = SPECS[name]
    assert len(spec.templates) >= 10, "the reference has ~10 quirky templates per dataset"
    allowed = {*spec.arg_names, "character"}
    for i, t in enumerate(spec.templates):
        where = f"{name} template {i}: {t.text!r}"
        assert "character" in slots(t.text), f"no {{character}} slot in {where}"
        assert slots(t.text) <= allowed, f"unknown slot(s) {slots(t.text) - allowed} in {where}"
        assert not NEGATION.search(literal(t.text)), f"negated question in {where}"
        neg, pos = t.choices
        assert neg != pos and neg.startswith(" ") and pos.startswith(" ") and neg.strip() and pos.strip(), (
            where
        )
        assert pos.split()[0].lower() in AFFIRM, f"positive choice {pos!r} does not affirm in {where}"
        assert neg.split()[0].lower() in DENY, f"negative choice {neg!r} does not deny in {where}"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_statement_templates(name):
    spec = SPECS[name]
    assert len(spec.statement_templates) >= 10
    allowed = {*spec.arg_names, "character"}
    for i, st in enumerate(spec.statement_templates):
        where = f"{name} statement template {i}: {st!r}"
        assert slots(st.context) | slots(st.statement) <= allowed, where
        assert not NEGATION.search(literal(st.statement)), f"negated statement in {where}"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_persona_changes_every_prompt(name):
    spec = SPECS[name]
    args = {a: f"<{a}>" for a in spec.arg_names}
    for t in spec.templates:
        alice, bob = render(t, {**args, "character": "Alice"}), render(t, {**args, "character": "Bob"})
        assert alice != bob and "Alice" in alice and "Bob" in bob
        assert all(f"<{a}>" in alice for a in slots(t.text) - {"character"})
    for st in spec.statement_templates:
        text = render_statement(st, {**args, "character": "Bob"})
        assert text.startswith("Name: Bob\n\n") and text.endswith("\n\nIs the statement factually correct?")


# Dataset-specific polarity: a clearly true and a clearly false row; the rendered question must be about the
# proposition whose truth is the label, so the target choices[label] is affirmative exactly for the true row.
CITY_CASES = {
    # dataset: (true args, false args, pattern every rendered question must contain)
    "hemisphere": (
        {"city": "Oslo", "country": "Norway"},
        {"city": "Sydney", "country": "Australia"},
        re.compile(r"north|above the equator|latitude .*positive|positive latitude", re.IGNORECASE),
    ),
    "population": (
        {"city": "Tokyo", "country": "Japan"},
        {"city": "Tiny Village", "country": "Iceland"},
        re.compile(r"(exceeds|more than|greater than|over|above) 30,000", re.IGNORECASE),
    ),
    "capitals": (
        {"city": "Paris", "country": "France"},
        {"city": "Lyon", "country": "France"},
        re.compile(r"capital|seat of government|government of", re.IGNORECASE),
    ),
}


@pytest.mark.parametrize("name", sorted(CITY_CASES))
def test_city_template_polarity(name):
    spec = SPECS[name]
    true_args, false_args, concept = CITY_CASES[name]
    for label, args in ((1, true_args), (0, false_args)):
        for t in spec.templates:
            text = render(t, {**args, "character": "Alice"})
            asked = concept.search(text) or concept.search(t.choices[1])  # e.g. " Southern" / " Northern"
            assert asked, f"{name}: {text!r} does not ask about the labelled proposition"
            assert args["city"] in text and args["country"] in text
            target = t.choices[label].split()[0].lower()
            assert target in (AFFIRM if label else DENY), (text, t.choices[label])
        for st in spec.statement_templates:
            text = render_statement(st, {**args, "character": "Alice"})
            assert concept.search(text) and args["city"] in text
            assert not re.search(r"south|below the equator", st.statement, re.IGNORECASE)
