"""Reading a run directory: its config, training log and evaluation, as one :class:`RunResult`.

The contract, written by the trainer and ``prectr evaluate``:

* ``RUN/evaluation.json`` (required): ``model``, ``log`` (``world`` before), ``split``,
  ``metrics``, and the optional ``slices``, ``online``, ``calibration_bins``, ``truth`` (where
  the grades came from) and ``skipped`` (what was not measured, and why).
* ``RUN/config.yaml`` (optional): ``model`` and the display ``name`` (default: directory name).
* ``RUN/train_log.jsonl`` (optional): one JSON object per line with ``step``, ``epoch``,
  ``split`` ("train" or "valid") and any number of numeric values.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

EVALUATION = "evaluation.json"
CONFIG = "config.yaml"
TRAIN_LOG = "train_log.jsonl"
#: Keys of a log record that index it rather than measure something.
LOG_INDEX_KEYS = frozenset({"step", "epoch", "split"})


class RunError(ValueError):
    """A run directory that breaks the contract (missing or unreadable evaluation)."""


@dataclass(frozen=True)
class RunResult:
    """Everything the report needs from one run directory."""

    path: Path
    name: str
    model: str
    log: str  # the log (a simulated world or any log) it was evaluated on
    split: str
    metrics: dict[str, float | None]
    slices: dict[str, dict[str, float | None]] = field(default_factory=dict)
    online: dict[str, float | None] = field(default_factory=dict)
    online_source: str = "replay"  # or the off-policy estimate on a log with no world
    calibration_bins: list[dict[str, float]] = field(default_factory=list)
    grades: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    train_log: list[dict[str, Any]] = field(default_factory=list)

    def curves(self) -> dict[tuple[str, str], tuple[list[float], list[float]]]:
        """Training curves keyed by ``(split, key)``: the steps and the values, in log order.

        Every finite numeric value other than ``step``/``epoch`` is a curve; records without a
        ``split`` count as ``train``; records without a numeric ``step`` are skipped.
        """
        out: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        for record in self.train_log:
            step = _number(record.get("step"))
            if step is None:
                continue
            split = str(record.get("split", "train"))
            for key, value in record.items():
                v = _number(value)
                if key in LOG_INDEX_KEYS or v is None:
                    continue
                xs, ys = out.setdefault((split, key), ([], []))
                xs.append(step)
                ys.append(v)
        return out


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None if it is not a finite number (bools excluded)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _metric_dict(raw: Any) -> dict[str, float | None]:
    """A metrics mapping with non-numbers and non-finite numbers mapped to None."""
    if not isinstance(raw, dict):
        return {}
    return {str(k): _number(v) for k, v in raw.items()}


def _read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL training log; blank and undecodable lines are skipped.

    A trainer killed mid-write can leave a truncated last line, so a bad line is logged and
    skipped rather than failing the whole report.
    """
    records: list[dict[str, Any]] = []
    if not path.is_file():
        return records
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: skipping a line that is not JSON", path, lineno)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _read_config(path: Path) -> dict[str, Any]:
    """The run's config.yaml as a mapping, or an empty one if absent."""
    if not path.is_file():
        return {}
    loaded = yaml.safe_load(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def _offpolicy_online(evaluation: dict) -> dict[str, float | None]:
    """A plain log's off-policy estimate in the online proxy's terms: the doubly robust
    estimate as the model's expected clicks (none for a band over lambda: the source names
    the band), the log's own clicks as the logging ranker's."""
    found = evaluation.get("offpolicy")
    if not isinstance(found, dict):
        return {}
    model = _number((found.get("dr") or {}).get("value"))
    logged = _number((found.get("logged") or {}).get("value"))
    lift = model / logged - 1.0 if model is not None and logged else None
    return {"expected_clicks": model, "logging_expected_clicks": logged, "lift": lift}


def _offpolicy_source(evaluation: dict) -> str:
    """Where a plain log's online proxy comes from, with the click model it assumed; for a
    band over lambda (no single estimate), the doubly robust band."""
    found = evaluation.get("offpolicy")
    model = found.get("model") if isinstance(found, dict) else None
    if not model:
        return "off-policy (doubly robust)"
    band = (found.get("band") or {}).get("dr") or {}
    lo, hi = _number(band.get("lo")), _number(band.get("hi"))
    within = f": [{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else ""
    return f"off-policy (doubly robust; {str(model).split(':')[0]}{within})"


def load_run(path: str | Path) -> RunResult:
    """Read the run directory ``path``.

    Raises :class:`RunError` naming the file if ``evaluation.json`` is missing, is not JSON or
    has no ``metrics`` mapping. The config and the training log are optional.
    """
    path = Path(path)
    eval_path = path / EVALUATION
    if not eval_path.is_file():
        raise RunError(f"run {path} has no {EVALUATION} (expected {eval_path}; run evaluate)")
    try:
        evaluation = json.loads(eval_path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{eval_path} is not valid JSON: {e}") from e
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get("metrics"), dict):
        raise RunError(f"{eval_path} has no 'metrics' mapping")
    config = _read_config(path / CONFIG)
    slices = evaluation.get("slices") or {}
    bins = [
        b
        for b in evaluation.get("calibration_bins") or []
        if isinstance(b, dict)
        and _number(b.get("mean_predicted")) is not None
        and _number(b.get("mean_observed")) is not None
    ]
    return RunResult(
        path=path,
        name=str(config.get("name") or path.resolve().name),
        model=str(config.get("model") or evaluation.get("model") or "?"),
        log=str(evaluation.get("log") or evaluation.get("world", "?")),
        split=str(evaluation.get("split", "?")),
        metrics=_metric_dict(evaluation["metrics"]),
        slices={str(k): _metric_dict(v) for k, v in slices.items()}
        if isinstance(slices, dict)
        else {},
        online=_metric_dict(evaluation.get("online")) or _offpolicy_online(evaluation),
        online_source="replay" if evaluation.get("online") else _offpolicy_source(evaluation),
        calibration_bins=bins,
        grades=str((evaluation.get("truth") or {}).get("grades", "")),
        skipped={str(k): str(v) for k, v in (evaluation.get("skipped") or {}).items()},
        train_log=_read_log(path / TRAIN_LOG),
    )
