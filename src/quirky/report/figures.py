"""Publication-style figures rendered with matplotlib's Agg backend to PNG bytes.

Why PNG bytes: the HTML report inlines them (base64) and the Markdown report links the same bytes written to
files; nothing needs a display, a browser or the network.  Output is deterministic (no timestamps in the PNG).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 150,
    "savefig.dpi": 150,
}

COLORS = plt.get_cmap("tab10").colors


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _grid(
    n: int, max_cols: int = 3, width: float = 3.4, height: float = 2.8
) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _color_map(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    return {name: COLORS[i % len(COLORS)] for i, name in enumerate(names)}


def outside_legend(fig: plt.Figure, axes: Sequence[plt.Axes]) -> None:
    """One legend for the whole figure, right of the panels: a legend inside an axes hides the curves it names
    (and per-panel legends repeat the same series).  Entries are deduplicated by label, in first-seen order."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if not label.startswith("_"):
                entries.setdefault(label, handle)
    if entries:
        fig.legend(
            list(entries.values()),
            list(entries),
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
        )


def line_panels(
    data: pd.DataFrame,
    *,
    panel: str,
    series: str,
    x: str,
    y: str,
    lo: str | None = None,
    hi: str | None = None,
    references: Mapping[str, Sequence[tuple[str, float] | tuple[str, float, str]]] | None = None,
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float] | None = (0.0, 1.0),
    chance: float | None = 0.5,
    max_cols: int = 3,
) -> bytes:
    """One panel per value of `panel`, one line per `series` (with a shaded [lo, hi] band when given), and
    dashed horizontal reference lines per panel (e.g. the LM's own AUROC)."""
    with plt.rc_context(_STYLE):
        panels = list(dict.fromkeys(data[panel]))
        colors = _color_map(list(dict.fromkeys(data[series])))
        fig, axes = _grid(len(panels), max_cols)
        for ax, name in zip(axes, panels, strict=True):
            part = data[data[panel] == name]
            for s, frame in part.groupby(series, sort=False):
                frame = frame.sort_values(x)
                marker = "o" if len(frame) <= 40 else None
                ax.plot(frame[x], frame[y], color=colors[s], label=str(s), lw=1.5, marker=marker, ms=3)
                if lo is not None and hi is not None and frame[lo].notna().any():
                    ax.fill_between(frame[x], frame[lo], frame[hi], color=colors[s], alpha=0.18, lw=0)
            ref_styles = ["--", ":", "-."]
            for i, ref in enumerate((references or {}).get(name, [])):
                label, value = ref[0], ref[1]
                color = colors.get(ref[2], "black") if len(ref) > 2 else "black"  # type: ignore[misc]
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    ax.axhline(value, color=color, ls=ref_styles[i % 3], lw=1.0, label=label)
            if chance is not None:
                ax.axhline(chance, color="grey", lw=0.6, alpha=0.6)
            ax.set_title(str(name))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            if ylim is not None:
                ax.set_ylim(*ylim)
        fig.tight_layout()
        outside_legend(fig, axes)
        return _png(fig)


def grouped_bars(
    data: pd.DataFrame,
    *,
    group: str,
    series: str,
    y: str,
    lo: str | None = None,
    hi: str | None = None,
    panel: str | None = None,
    ylabel: str,
    title: str = "",
    ylim: tuple[float, float] | None = (0.0, 1.0),
    chance: float | None = 0.5,
    reference: Sequence[float] = (),
) -> bytes:
    """Bars of `y` grouped by `group` (x axis), one colour per `series`, with [lo, hi] error bars when given; one
    panel per value of `panel` (side by side), grey lines at `chance` (dashed) and at each `reference` value (solid)."""
    with plt.rc_context(_STYLE):
        panels = list(dict.fromkeys(data[panel])) if panel is not None else [None]
        names = list(dict.fromkeys(data[series]))
        colors = _color_map(names)
        width = 0.8 / max(len(names), 1)
        n_groups = max(
            data[data[panel] == p][group].nunique() if panel else data[group].nunique() for p in panels
        )
        fig, axes = plt.subplots(
            1,
            len(panels),
            figsize=(min(max(4.0, 0.55 * n_groups * max(len(names), 1) + 1.5), 12.0) * len(panels), 3.0),
            squeeze=False,
        )
        flat = list(axes.flat)
        for ax, name in zip(flat, panels, strict=True):
            part_all = data if name is None else data[data[panel] == name]
            groups = list(dict.fromkeys(part_all[group]))
            xs = np.arange(len(groups))
            for i, s in enumerate(names):
                part = part_all[part_all[series] == s].set_index(group)
                vals = np.array([part[y].get(g, np.nan) for g in groups], dtype=float)
                kwargs = {}
                if lo is not None and hi is not None:
                    low = np.array([part[lo].get(g, np.nan) for g in groups], dtype=float)
                    high = np.array([part[hi].get(g, np.nan) for g in groups], dtype=float)
                    err = np.vstack([vals - low, high - vals])
                    kwargs = {
                        "yerr": np.where(np.isfinite(err), err, 0.0),
                        "capsize": 2,
                        "error_kw": {"lw": 0.8},
                    }
                ax.bar(
                    xs + (i - (len(names) - 1) / 2) * width,
                    vals,
                    width,
                    label=str(s),
                    color=colors[s],
                    **kwargs,
                )
            if chance is not None:
                ax.axhline(chance, color="grey", lw=0.8, ls="--")
            for value in reference:
                ax.axhline(value, color="grey", lw=0.8)
            ax.set_xticks(xs, [str(g) for g in groups], rotation=20 if len(groups) > 6 else 0)
            ax.grid(axis="x", visible=False)
            ax.set_ylabel(ylabel)
            if ylim is not None:
                ax.set_ylim(*ylim)
            heading = " ".join(t for t in (title, "" if name is None else str(name)) if t)
            if heading:
                ax.set_title(heading)
        fig.tight_layout()
        outside_legend(fig, flat)
        return _png(fig)


def finetune_curves(histories: Mapping[str, pd.DataFrame]) -> bytes:
    """Per finetuning run: losses (left) and the LM's AUROC per persona (right) against the training step."""
    metrics = [
        ("alice_auroc", "Alice (vs Alice labels)"),
        ("bob_auroc", "Bob (vs Bob labels)"),
        ("bob_vs_truth_auroc", "Bob prompts vs truth"),
    ]
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(len(histories), 2, figsize=(7.2, 2.6 * len(histories)), squeeze=False)
        for row, (name, h) in enumerate(histories.items()):
            ax_loss, ax_auc = axes[row]
            steps = h["step"].to_numpy(dtype=float)
            # evaluations are often log-spaced (steps 0, 1, 2, 4, ...): use a symlog axis when they span decades
            log_x = bool(
                len(steps) > 2 and np.nanmax(steps) > 20 * max(np.nanmin(steps[steps > 0], initial=1), 1)
            )
            for col, label, color in (
                ("train_loss", "train loss", COLORS[0]),
                ("loss", "eval loss", COLORS[1]),
            ):
                if col in h and h[col].notna().any():
                    ax_loss.plot(steps, h[col], marker="o", ms=2.5, lw=1.2, label=label, color=color)
            for i, (col, label) in enumerate(metrics):
                if col in h and h[col].notna().any():
                    ax_auc.plot(steps, h[col], marker="o", ms=2.5, lw=1.2, label=label, color=COLORS[2 + i])
            for ax in (ax_loss, ax_auc):
                ax.set_xlabel("training step")
                if log_x:
                    ax.set_xscale("symlog", linthresh=1.0)
            ax_loss.set_ylabel("cross-entropy")
            ax_loss.set_title(f"{name}: loss")
            ax_auc.set_ylabel("AUROC of LM log-odds")
            ax_auc.set_ylim(0, 1.02)
            ax_auc.axhline(0.5, color="grey", lw=0.6)
            ax_auc.set_title(f"{name}: answer AUROC")
        fig.tight_layout()
        outside_legend(fig, list(axes.flat))
        return _png(fig)


def score_histograms(data: pd.DataFrame, *, panel: str, group: str, value: str, xlabel: str) -> bytes:
    """Overlaid density histograms of `value` per `group` (e.g. AH vs BH anomaly scores), one panel per `panel`."""
    with plt.rc_context(_STYLE):
        panels = list(dict.fromkeys(data[panel]))
        groups = list(dict.fromkeys(data[group]))
        colors = _color_map(groups)
        fig, axes = _grid(len(panels), 3)
        for ax, name in zip(axes, panels, strict=True):
            part = data[data[panel] == name]
            vals = part[value].to_numpy(dtype=float)
            vals = vals[np.isfinite(vals)]
            if len(vals) == 0:
                continue
            lo, hi = np.quantile(vals, [0.005, 0.995])
            bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 40)
            for g in groups:
                v = part.loc[part[group] == g, value].to_numpy(dtype=float)
                if len(v):
                    ax.hist(
                        np.clip(v, bins[0], bins[-1]),
                        bins=bins,
                        density=True,
                        alpha=0.5,
                        color=colors[g],
                        label=str(g),
                    )
            ax.set_title(str(name))
            ax.set_xlabel(xlabel)
            ax.set_ylabel("density")
        fig.tight_layout()
        outside_legend(fig, axes)
        return _png(fig)


def dot_ci(
    data: pd.DataFrame,
    *,
    panel: str,
    label: str,
    value: str,
    lo: str,
    hi: str,
    xlabel: str,
    chance: float | None = 0.5,
    xlim: tuple[float, float] = (0.0, 1.02),
) -> bytes:
    """A dot per row (`label` on the y axis) with a [lo, hi] interval, one panel per `panel`: a compact way to
    compare many configurations (e.g. detector x features) with their confidence intervals."""
    with plt.rc_context(_STYLE):
        panels = list(dict.fromkeys(data[panel]))
        labels = list(dict.fromkeys(data[label]))
        colors = _color_map(labels)
        height = 0.28 * len(labels) + 1.0
        fig, axes = _grid(len(panels), 3, width=3.6, height=height)
        for j, (ax, name) in enumerate(zip(axes, panels, strict=True)):
            part = data[data[panel] == name].set_index(label)
            ys = np.arange(len(labels))[::-1]
            for yy, lab in zip(ys, labels, strict=True):
                if lab not in part.index:
                    continue
                r = part.loc[lab]
                v, a, b = float(r[value]), float(r[lo]), float(r[hi])
                if np.isfinite(a) and np.isfinite(b):
                    ax.plot([a, b], [yy, yy], color=colors[lab], lw=1.4)
                ax.plot([v], [yy], "o", color=colors[lab], ms=4)
            ax.set_yticks(ys, labels if j % 3 == 0 else [""] * len(labels))
            ax.set_ylim(-0.7, len(labels) - 0.3)
            ax.set_xlim(*xlim)
            if chance is not None:
                ax.axvline(chance, color="grey", lw=0.8, ls="--")
            ax.set_xlabel(xlabel)
            ax.set_title(str(name))
            ax.grid(axis="y", visible=False)
        fig.tight_layout()
        return _png(fig)
