"""Word tokenisation and the positive-word lexicon behind the text datasets' Bob rules.

Why a tokeniser of our own: the original system tested word membership on `text.lower().split()`, so a word
followed by punctuation ("great!", "no.") never matched and Bob's rule silently depended on punctuation
(`elk_generalization/datasets/sentiment_dataset.py`, `nli_dataset.py`).  Here a word is a maximal run of Unicode
letters/digits, apostrophes inside a word are kept ("don't" is one word, curly apostrophes are normalised), and a
hyphenated compound counts as the compound *and* as each part ("no-one" contains "no"; "well-known" contains
"well" and "well-known"), so lexicon entries of either form match.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

from quirky.errors import QuirkyError

_PART = r"[^\W_]+(?:'[^\W_]+)*"
_WORD = re.compile(rf"{_PART}(?:-{_PART})*")

#: The original NLI negation set (`elk_generalization/datasets/nli_dataset.py`); matched as whole words,
#: case-insensitively.
NEGATION_WORDS: frozenset[str] = frozenset({"not", "nobody", "no", "never", "nothing", "none"})

#: Default VADER mean-valence threshold for a "positive word" (VADER ratings run from -4 to +4).
POSITIVE_THRESHOLD = 1.0


def words(text: str) -> list[str]:
    """Lower-cased words of `text`, punctuation removed; hyphenated compounds also yield their parts."""
    out: list[str] = []
    for match in _WORD.finditer(text.lower().replace("\u2019", "'")):
        word = match.group()
        out.append(word)
        if "-" in word:
            out.extend(word.split("-"))
    return out


def has_negation(text: str) -> bool:
    """True iff `text` contains one of `NEGATION_WORDS` as a word (any case, any adjacent punctuation)."""
    return not NEGATION_WORDS.isdisjoint(words(text))


def _vader_lexicon_path() -> Path:
    spec = importlib.util.find_spec("vaderSentiment")
    if spec is None or not spec.submodule_search_locations:
        raise QuirkyError(
            "sentiment needs the `vaderSentiment` package for its positive-word lexicon; "
            "install it with `pip install vaderSentiment`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "vader_lexicon.txt"
    if not path.is_file():
        raise QuirkyError(f"vaderSentiment is installed but {path} is missing; reinstall vaderSentiment")
    return path


@functools.cache
def vader_valences() -> dict[str, float]:
    """VADER's word -> mean valence.

    Only entries that are words starting with a letter are kept: emoticons, and slang made of digits ("143", "1432",
    "8d"), would otherwise make ordinary numbers in a review ("143 mg") count as positive words.
    """
    valences: dict[str, float] = {}
    for line in _vader_lexicon_path().read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        token = parts[0].strip().lower()
        if token[:1].isalpha() and _WORD.fullmatch(token):
            valences[token] = float(parts[1])
    return valences


@functools.cache
def positive_words(threshold: float = POSITIVE_THRESHOLD) -> frozenset[str]:
    """Words whose VADER mean valence is >= `threshold`: the stand-in for Hu & Liu's positive-word list.

    With the default threshold 1.0 this is 2,450 words (Hu & Liu's list has 2,006), "at least mildly positive" on
    VADER's -4..+4 human-rated scale.
    """
    return frozenset(w for w, v in vader_valences().items() if v >= threshold)


def has_positive_word(text: str, lexicon: frozenset[str]) -> bool:
    """Bob's sentiment rule: the text contains at least one lexicon word."""
    return not lexicon.isdisjoint(words(text))
