"""Name -> `DatasetSpec` for the 12 quirky datasets.

Why lazy: each source family lives in its own module, and some (the text datasets) pull in optional packages or
may be unfinished.  Importing them only when a name is asked for keeps one broken family from taking the others
down; `quirky datasets list` still shows every name, with the reason a family is unavailable.
"""

from __future__ import annotations

import difflib
import importlib

from quirky.datasets.spec import DatasetSpec
from quirky.errors import QuirkyError

#: name -> (module, attribute).  Order = the order of the paper's tables.
_ENTRIES: dict[str, tuple[str, str]] = {
    "capitals": ("quirky.datasets.cities", "CAPITALS"),
    "hemisphere": ("quirky.datasets.cities", "HEMISPHERE"),
    "population": ("quirky.datasets.cities", "POPULATION"),
    "sciq": ("quirky.datasets.sciq", "SPEC"),
    "sentiment": ("quirky.datasets.sentiment", "SPEC"),
    "nli": ("quirky.datasets.nli", "SPEC"),
    "authors": ("quirky.datasets.authors", "SPEC"),
    "addition": ("quirky.datasets.arithmetic", "ADDITION"),
    "subtraction": ("quirky.datasets.arithmetic", "SUBTRACTION"),
    "multiplication": ("quirky.datasets.arithmetic", "MULTIPLICATION"),
    "modularaddition": ("quirky.datasets.arithmetic", "MODULARADDITION"),
    "squaring": ("quirky.datasets.arithmetic", "SQUARING"),
}

DATASET_NAMES: tuple[str, ...] = tuple(_ENTRIES)


def check_name(name: str) -> str:
    """Return `name` if it is a registered dataset, else raise with the closest match as a suggestion."""
    if name in _ENTRIES:
        return name
    close = difflib.get_close_matches(name.lower(), DATASET_NAMES, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise QuirkyError(
        f"unknown dataset '{name}'.{hint} Known datasets: {', '.join(DATASET_NAMES)} (see `quirky datasets list`)."
    )


def get_spec(name: str) -> DatasetSpec:
    """The spec of one dataset; a clear `QuirkyError` if the name is unknown or its module cannot be imported."""
    module_name, attr = _ENTRIES[check_name(name)]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise QuirkyError(
            f"dataset '{name}' is unavailable: importing {module_name} failed ({e}). "
            "Install the missing package (see `quirky datasets list`)."
        ) from e
    except Exception as e:  # a broken module must not surface as a traceback from deep inside it
        raise QuirkyError(
            f"dataset '{name}' is unavailable: {module_name} failed to import ({type(e).__name__}: {e})."
        ) from e
    spec = getattr(module, attr, None)
    if not isinstance(spec, DatasetSpec):
        raise QuirkyError(
            f"dataset '{name}' is unavailable: {module_name} does not define a DatasetSpec `{attr}`."
        )
    return spec


def available_specs() -> dict[str, DatasetSpec | str]:
    """Every registered name -> its spec, or the one-line reason it cannot be loaded (never raises)."""
    out: dict[str, DatasetSpec | str] = {}
    for name in DATASET_NAMES:
        try:
            out[name] = get_spec(name)
        except QuirkyError as e:
            out[name] = str(e)
    return out
