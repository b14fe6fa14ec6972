"""Progress a person can follow: one progress line with rate and ETA for each long loop (finetuning steps, the probe
grid, the stages of a multi-dataset run), and silence where nobody is watching.

Why one helper: the three loops live in three packages but should look alike and obey the same switches.  A bar
is shown only on an interactive terminal: `--quiet` (`set_quiet`), `QUIRKY_PROGRESS=0`, or a stderr that is not a
terminal (a log file, CI, a SLURM job) turn it off, so logs never fill with carriage-return redraws.  Bars write to
stderr; results and log lines are untouched.  tqdm (already a dependency) draws them: nested bars (a finetuning
run inside a multi-dataset run) stack on their own lines and an inner bar disappears when it closes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

ENV = "QUIRKY_PROGRESS"
_OFF = ("0", "false", "no", "off")
_quiet = False


def set_quiet(quiet: bool = True) -> None:
    """Turn every progress display of this process off (the CLIs' `--quiet`)."""
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    """Whether a bar would be drawn now: not quiet, not switched off by QUIRKY_PROGRESS, stderr a terminal."""
    if _quiet or os.environ.get(ENV, "").strip().lower() in _OFF:
        return False
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def around_bars(log: Callable[[str], None]) -> Callable[[str], None]:
    """`log` (a line printer, e.g. rich's console.print) made to clear the progress lines before it prints and to
    redraw them after, so a log line never lands in the middle of a bar."""

    def call(message: str) -> None:
        if not enabled():
            log(message)
            return
        from tqdm import tqdm

        with tqdm.external_write_mode():
            log(message)

    return call


class Bar:
    """One progress line, or nothing at all when progress is off (every method is then a no-op).

    Two ways to count: `update(n)` after each finished item (finetuning steps), or `begin(label)` before each
    item of uneven size, which counts the previous one as finished and names the current one (the probe grid's
    units, a run's stages); `close()` then counts the last one.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "it",
        initial: int = 0,
        quiet: bool = False,
    ) -> None:
        self._bar: Any = None
        self._begun = False
        if not quiet and enabled():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                file=sys.stderr,
                dynamic_ncols=True,
                smoothing=0.1,
                mininterval=0.5,
                leave=None,  # the outermost bar stays on screen when done, nested ones are cleared
            )

    @property
    def active(self) -> bool:
        return self._bar is not None

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def note(self, text: str, refresh: bool = False) -> None:
        """Text after the counts (e.g. the current loss), drawn with the next update unless `refresh`."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=refresh)

    def begin(self, label: str) -> None:
        """Start the next item: the previous one (if any) is done; `label`, shown at once, says what runs now."""
        if self._begun:
            self.update(1)
        self._begun = True
        self.note(label, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            if self._begun:
                self._bar.update(1)
                self._begun = False
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            self._begun = False  # the item that raised is not finished
        self.close()
