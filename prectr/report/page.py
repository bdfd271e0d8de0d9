"""The comparison page: one self-contained HTML file (inline CSS, figures as base64 PNG)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from prectr import __version__
from prectr.io import atomic_file
from prectr.metrics import LOWER_IS_BETTER
from prectr.report import plots
from prectr.report.runs import RunResult, load_run
from prectr.words import count

#: Metrics best closest to a target (the others: :data:`prectr.metrics.LOWER_IS_BETTER`, or
#: largest).
TARGET = {"calibration": 1.0}
#: Counts reported beside the metrics: shown, never bolded.
NOT_RANKED = frozenset({"test_requests", "test_exposed", "requests", "candidates", "exposed"})

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta, .caption { color: #555; font-size: 0.92em; } .caption { margin-top: -0.4em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; background: #eef7ee; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em;
          border-radius: 2px; vertical-align: middle; }
.figs { display: flex; flex-wrap: wrap; gap: 0.8em; }
img { max-width: 100%; border: 1px solid #eee; }
.empty { color: #999; font-style: italic; }
"""

#: Matplotlib's default colour cycle, so the swatches match the figures' "C0".."C9".
SWATCHES = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def best_rows(key: str, values: Sequence[float | None]) -> set[int]:
    """Indices of the best of ``values`` for metric ``key`` (all of them on a tie).

    Higher is better, except :data:`LOWER_IS_BETTER` (lower) and :data:`TARGET` (closest to
    the target). Nothing is best when fewer than two runs have a value or ``key`` is a count.
    """
    present = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if len(present) < 2 or key in NOT_RANKED:
        return set()

    def score(v: float) -> float:
        if key in TARGET:
            return -abs(v - TARGET[key])
        return -v if key in LOWER_IS_BETTER else v

    best = max(score(v) for _, v in present)
    return {i for i, v in present if math.isclose(score(v), best, rel_tol=1e-12, abs_tol=1e-15)}


def format_value(v: float | None) -> str:
    """A metric for the table: 4 decimals, whole counts as integers, missing as an em dash."""
    if v is None or not math.isfinite(v):
        return "—"
    if v.is_integer() and abs(v) >= 100:
        return str(int(v))
    return f"{v:.4f}"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _img(png: str, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{png}">'


def _section(title: str, caption: str, body: str) -> str:
    return f'<h2>{_esc(title)}</h2>\n<p class="caption">{_esc(caption)}</p>\n{body}\n'


def _empty(text: str) -> str:
    return f'<p class="empty">{_esc(text)}</p>'


def _run_label(i: int, run: RunResult) -> str:
    swatch = f'<span class="swatch" style="background:{SWATCHES[i % 10]}"></span>'
    return f"{swatch}{_esc(run.name)}"


def runs_table(runs: Sequence[RunResult]) -> str:
    """The list of runs: display name (with its colour), model, log, split and directory."""
    rows = "".join(
        f"<tr><td>{_run_label(i, r)}</td><td>{_esc(r.model)}</td><td>{_esc(r.log)}</td>"
        f"<td>{_esc(r.split)}</td><td>{_esc(r.path)}</td></tr>\n"
        for i, r in enumerate(runs)
    )
    head = "<tr><th>run</th><th>model</th><th>log</th><th>split</th><th>directory</th></tr>"
    return f"<table>\n{head}\n{rows}</table>"


def metrics_table(runs: Sequence[RunResult]) -> str:
    """One row per run, one column per metric key (in first-seen order), best per column bold."""
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run.metrics if k not in keys)
    best = {k: best_rows(k, [run.metrics.get(k) for run in runs]) for k in keys}
    head = "<tr><th>run</th>" + "".join(f"<th>{_esc(k)}</th>" for k in keys) + "</tr>"
    rows = []
    for i, run in enumerate(runs):
        cells = []
        for k in keys:
            v = run.metrics.get(k)
            cls, text = ("num best", f"<b>{format_value(v)}</b>") if i in best[k] else ("num", None)
            cells.append(f'<td class="{cls}">{text or format_value(v)}</td>')
        rows.append(f"<tr><td>{_run_label(i, run)}</td>{''.join(cells)}</tr>")
    return f"<table>\n{head}\n" + "\n".join(rows) + "\n</table>"


def unmeasured_table(runs: Sequence[RunResult]) -> str:
    """Per run: what its relevance metrics' grades are, and what its evaluation left out and
    why (e.g. what needs a simulated world on a plain log)."""
    rows = []
    for i, r in enumerate(runs):
        if r.grades:
            rows.append(f"<tr><td>{_run_label(i, r)}</td><td>relevance metrics</td>"
                        f"<td>on {_esc(r.grades)}</td></tr>")  # fmt: skip
        rows.extend(
            f"<tr><td>{_run_label(i, r)}</td><td>{_esc(what)}</td><td>not measured: "
            f"{_esc(why)}</td></tr>"
            for what, why in r.skipped.items()
        )
    head = "<tr><th>run</th><th>part</th><th>truth</th></tr>"
    return f"<table>\n{head}\n" + "\n".join(rows) + "\n</table>"


def online_table(runs: Sequence[RunResult]) -> str:
    """Expected clicks per request of each run's ranker and of the logging ranker, and the lift."""
    rows = [
        f"<tr><td>{_run_label(i, r)}</td>"
        + "".join(
            f'<td class="num">{format_value(r.online.get(k))}</td>'
            for k in ("expected_clicks", "logging_expected_clicks")
        )
        + f'<td class="num">{_percent(r.online.get("lift"))}</td>'
        + f"<td>{_esc(r.online_source)}</td></tr>"
        for i, r in enumerate(runs)
        if r.online
    ]
    head = (
        "<tr><th>run</th><th>expected clicks</th><th>logging ranker</th>"
        "<th>lift (relative change)</th><th>estimated by</th></tr>"
    )
    return f"<table>\n{head}\n" + "\n".join(rows) + "\n</table>"


#: The columns of the per-slice table.
SLICE_TABLE_METRICS = ("auc", "gauc_user", "ndcg@10", "irrelevant@10", "expected_clicks",
                       "requests")  # fmt: skip


def slices_table(runs: Sequence[RunResult]) -> str:
    """One row per slice and run, the slices in first-seen order; the best run per slice and
    metric is bold."""
    names: list[str] = []
    for run in runs:
        names.extend(s for s in run.slices if s not in names)
    keys = [
        k for k in SLICE_TABLE_METRICS if any(k in r.slices.get(s, {}) for r in runs for s in names)
    ]
    head = "<tr><th>slice</th><th>run</th>" + "".join(f"<th>{_esc(k)}</th>" for k in keys)
    rows = []
    for name in names:
        present = [(i, r) for i, r in enumerate(runs) if name in r.slices]
        best = {k: best_rows(k, [r.slices[name].get(k) for _, r in present]) for k in keys}
        for j, (i, run) in enumerate(present):
            cells = "".join(
                f'<td class="num{" best" if j in best[k] else ""}">'
                f"{format_value(run.slices[name].get(k))}</td>"
                for k in keys
            )
            rows.append(f"<tr><td>{_esc(name)}</td><td>{_run_label(i, run)}</td>{cells}</tr>")
    return f"<table>\n{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1%}"


def render(runs: Sequence[RunResult], title: str = "prectr run comparison") -> str:
    """The whole page for ``runs`` (in the given order) as an HTML string."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<h1>{_esc(title)}</h1>",
        f'<p class="meta">{count(len(runs), "run")} · generated {stamp} by prectr '
        f"{__version__}</p>",
        _section(
            "Runs",
            "Each run's display name, model, world and evaluated split; the colour "
            "swatch is the run's colour in every figure.",
            runs_table(runs),
        ),
        _section(
            "Metrics",
            "Test metrics, one row per run; the best value per column is bold (higher is better, "
            "except logloss and irrelevant@10, lower, and calibration, closest to 1).",
            metrics_table(runs),
        ),
    ]
    if any(r.grades or r.skipped for r in runs):
        parts.append(
            _section(
                "What was measured",
                "Where each run's truth came from: a simulated world knows every candidate's "
                "grade and replays new rankings; a plain log has clicks and human grades only, "
                "so what needs a world is left out, with the reason.",
                unmeasured_table(runs),
            )
        )

    curves = plots.curve_figures(runs)
    no_log = [r.name for r in runs if not r.curves()]
    body = '<div class="figs">' + "".join(_img(png, t) for t, png in curves) + "</div>"
    if no_log:
        body += _empty("No training log for: " + ", ".join(no_log) + ".")
    parts.append(
        _section(
            "Training curves",
            "Every logged value against training step, one figure per split and key, one line per "
            "run; look for loss going down and validation metrics levelling off.",
            body if curves else _empty("No run has a training log."),
        )
    )

    figures = [
        (
            "Calibration",
            plots.calibration_figure(runs),
            "Mean observed click rate against mean predicted probability per score bin; points on "
            "the dashed diagonal are calibrated, above it under-predicts, below it over-predicts.",
            "No run has calibration bins (scores that are not probabilities have none).",
        ),
        (
            "Relevance–CTR trade-off",
            plots.tradeoff_figure(runs),
            "NDCG@10 on the known grades (a world's true ones, a log's human ones) against click "
            "AUC, one labelled point per run; up and to "
            "the right is better on both; a run up-left of another trades clicks for relevance.",
            "No run has both auc and ndcg@10.",
        ),
        (
            "Slices",
            plots.slices_figure(runs),
            "AUC, GAUC and NDCG@10 on each slice of the test set, one bar per run; the y-axis is "
            "zoomed to the values' range, so compare bar tops, not lengths.",
            "No run reports slices.",
        ),
        (
            "Online proxy",
            plots.online_figure(runs),
            "Expected clicks per request when the world replays each run's ranking (coloured) "
            "beside the logging ranker's (hatched grey); higher than the logging bar is a win. On "
            "a plain log, the doubly robust off-policy estimate from the log's own clicks, beside "
            "the clicks the log shows (docs/offpolicy.md).",
            "No run reports an online proxy (it needs a simulated world to replay rankings).",
        ),
    ]
    for name, png, caption, missing in figures:
        body = _img(png, name) if png else _empty(missing)
        if name == "Online proxy" and png:
            body += "\n" + online_table(runs)
        if name == "Slices" and png:
            body += "\n" + slices_table(runs)
        parts.append(_section(name, caption, body))

    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )


def write_report(
    runs: list[Path], out: Path, title: str = "prectr run comparison",
    labels: Sequence[str] | None = None,
) -> Path:  # fmt: skip
    """Compare the run directories ``runs`` in one self-contained HTML page written to ``out``.

    ``labels``, one per run and all different, name the runs in every table and figure
    instead of their config's name (two runs of one config share it). Every run is read first
    (see :func:`load_run`; a run without ``evaluation.json`` raises :class:`RunError` naming
    it), then the page is written atomically. Returns ``out``.
    """
    if not runs:
        raise ValueError("write_report needs at least one run directory")
    loaded = [load_run(p) for p in runs]
    if labels is not None:
        if len(labels) != len(runs):
            raise ValueError(f"{count(len(labels), 'label')} for {count(len(runs), 'run')}: "
                             "give one label per run, in the same order")  # fmt: skip
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels {', '.join(labels)}: each run needs its own")
        loaded = [replace(run, name=label) for run, label in zip(loaded, labels, strict=True)]
    page = render(loaded, title=title)
    out = Path(out)
    with atomic_file(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
