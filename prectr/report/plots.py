"""The report's figures, each rendered to a base64 PNG string for embedding in HTML.

Figures are built with matplotlib's object API and drawn on an explicit Agg canvas, so no
display, no pyplot global state and no change to the process-wide backend are involved. Each
function takes the runs in report order (run ``i`` is drawn in colour ``C{i}`` everywhere) and
returns None when no run has the data it needs.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from prectr.report.runs import RunResult

#: Metrics drawn per slice, in this order, when a slice has them.
SLICE_METRICS = ("auc", "gauc_user", "gauc_request", "ndcg@10")
SLICE_COLUMNS = 4
DPI = 100


def color(i: int) -> str:
    """The colour of run ``i`` in every figure."""
    return f"C{i % 10}"


def _figure(width: float = 5.2, height: float = 3.4) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png_base64(fig: Figure) -> str:
    """``fig`` as a base64-encoded PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _legend(ax: Axes, n: int) -> None:
    if n:
        ax.legend(fontsize=8, frameon=False)


def curve_figures(runs: Sequence[RunResult]) -> list[tuple[str, str]]:
    """One ``(title, png)`` per logged ``(split, key)``, one line per run against step.

    Train curves come before valid ones; within a split, keys keep their first-logged order.
    """
    curves = [run.curves() for run in runs]
    keys: list[tuple[str, str]] = []
    for c in curves:
        keys.extend(k for k in c if k not in keys)
    split_rank = {"train": 0, "valid": 1}
    keys.sort(key=lambda k: split_rank.get(k[0], 2))  # stable: keeps first-logged order
    out = []
    for split, key in keys:
        fig = _figure()
        ax = fig.add_subplot()
        drawn = 0
        for i, (run, c) in enumerate(zip(runs, curves, strict=True)):
            if (split, key) not in c:
                continue
            xs, ys = c[(split, key)]
            ax.plot(xs, ys, color=color(i), label=run.name, marker="." if len(xs) < 30 else None)
            drawn += 1
        title = f"{split} · {key}"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        _legend(ax, drawn)
        out.append((title, to_png_base64(fig)))
    return out


def calibration_figure(runs: Sequence[RunResult]) -> str | None:
    """Reliability diagram: mean observed against mean predicted click rate per bin."""
    series = [(i, run) for i, run in enumerate(runs) if run.calibration_bins]
    if not series:
        return None
    fig = _figure(5.0, 4.4)
    ax = fig.add_subplot()
    hi = 0.0
    for i, run in series:
        xs = [b["mean_predicted"] for b in run.calibration_bins]
        ys = [b["mean_observed"] for b in run.calibration_bins]
        hi = max(hi, *xs, *ys)
        ax.plot(xs, ys, color=color(i), marker="o", markersize=4, label=run.name)
    hi = hi * 1.05 or 1.0
    ax.plot([0, hi], [0, hi], color="0.5", linestyle="--", linewidth=1, label="perfect")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("mean predicted click probability")
    ax.set_ylabel("mean observed click rate")
    ax.set_title("calibration (reliability diagram)", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, len(series) + 1)
    return to_png_base64(fig)


def tradeoff_figure(runs: Sequence[RunResult]) -> str | None:
    """NDCG@10 against AUC, one labelled point per run."""
    points = [
        (i, run, run.metrics.get("auc"), run.metrics.get("ndcg@10")) for i, run in enumerate(runs)
    ]
    points = [p for p in points if p[2] is not None and p[3] is not None]
    if not points:
        return None
    fig = _figure(5.2, 4.0)
    ax = fig.add_subplot()
    for i, run, x, y in points:
        ax.scatter([x], [y], color=color(i), s=50, zorder=3)
        ax.annotate(
            run.name, (x, y), xytext=(5, 5), textcoords="offset points", fontsize=8, color=color(i)
        )
    ax.margins(0.25)
    ax.set_xlabel("AUC (click) →")
    ax.set_ylabel("NDCG@10 (relevance) →")
    ax.set_title("relevance–CTR trade-off", fontsize=10)
    ax.grid(alpha=0.3)
    return to_png_base64(fig)


def slices_figure(runs: Sequence[RunResult]) -> str | None:
    """One panel per slice (SLICE_COLUMNS to a row): grouped bars of AUC/GAUC and NDCG@10, one
    bar per run."""
    names: list[str] = []
    for run in runs:
        names.extend(s for s in run.slices if s not in names)
    panels = []
    for s in names:
        keys = [
            k
            for k in SLICE_METRICS
            if any(run.slices.get(s, {}).get(k) is not None for run in runs)
        ]
        if keys:
            panels.append((s, keys))
    if not panels:
        return None
    ncols = min(len(panels), SLICE_COLUMNS)
    nrows = -(-len(panels) // ncols)
    fig = _figure(min(4.2 * ncols, 14.0), 3.2 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    width = 0.8 / len(runs)
    for ax, (s, keys) in zip(axes, panels, strict=False):
        values = []
        for i, run in enumerate(runs):
            ys = [run.slices.get(s, {}).get(k) for k in keys]
            xs = [j - 0.4 + width * (i + 0.5) for j in range(len(keys))]
            kept = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            values.extend(y for _, y in kept)
            if kept:
                ax.bar(*zip(*kept, strict=True), width=width, color=color(i), label=run.name)
        lo, hi = min(values), max(values)
        pad = max(0.02, 0.15 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), hi + pad)
        ax.set_xticks(range(len(keys)), keys, fontsize=8)
        ax.set_title(s, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, frameon=False)
    return to_png_base64(fig)


def online_figure(runs: Sequence[RunResult]) -> str | None:
    """Expected clicks per request: each run's ranker beside the logging ranker, lift on top."""
    rows = [
        (i, run)
        for i, run in enumerate(runs)
        if run.online.get("expected_clicks") is not None
        or run.online.get("logging_expected_clicks") is not None
    ]
    if not rows:
        return None
    fig = _figure(max(4.5, 1.4 * len(rows) + 2.0), 3.6)
    ax = fig.add_subplot()
    for j, (i, run) in enumerate(rows):
        model = run.online.get("expected_clicks")
        logging_ = run.online.get("logging_expected_clicks")
        if model is not None:
            ax.bar(j - 0.18, model, width=0.36, color=color(i))
        if logging_ is not None:
            ax.bar(j + 0.18, logging_, width=0.36, color="0.7", hatch="//", edgecolor="0.4")
        lift = run.online.get("lift")
        top = max(v for v in (model, logging_) if v is not None)
        if lift is not None:
            ax.annotate(
                f"lift {lift:+.1%}", (j, top), xytext=(0, 3), textcoords="offset points",
                ha="center", fontsize=8,
            )  # fmt: skip
    handles = [
        Patch(facecolor="0.5", label="ranker (in its run's colour)"),
        Patch(facecolor="0.7", hatch="//", edgecolor="0.4", label="logging ranker"),
    ]
    ax.set_xticks(range(len(rows)), [run.name for _, run in rows], fontsize=8)
    ax.set_ylabel("expected clicks per request")
    ax.set_title("online proxy: replay, or off-policy on a log", fontsize=10)
    ax.margins(y=0.12)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(handles=handles, fontsize=8, frameon=False, loc="outside lower center", ncols=2)
    return to_png_base64(fig)
