"""How a trial ended, named once, and which trial is best.

Every part of a sweep that speaks of a trial's end — the searcher telling Optuna, the MLflow run's status
and tags, the progress line, the trials table — asks `classify_end` and reads the answer's attributes, so
they cannot disagree. Imports nothing heavy: the names of Optuna states and MLflow statuses are strings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

import pandas as pd


class Outcome(Enum):
    """How a trial ended: (table and progress label, MLflow run status, Optuna trial state)."""

    FINISHED = ("finished", "FINISHED", "COMPLETE")  # ran every report
    PRUNED = ("pruned", "KILLED", "PRUNED")  # stopped early by the scheduler (or the user)
    DIVERGED = ("diverged", "FAILED", "FAIL")  # reported a non-finite metric or `diverged`
    ERROR = ("error", "FAILED", "FAIL")  # raised

    def __init__(self, label: str, mlflow_status: str, optuna_state: str):
        self.label = label
        self.mlflow_status = mlflow_status
        self.optuna_state = optuna_state

    def mlflow_tags(self) -> dict[str, str]:
        """The tags a trial's MLflow run carries for this outcome."""
        tags = {"pruned": str(self is Outcome.PRUNED).lower(), "diverged": str(self is Outcome.DIVERGED).lower()}
        if self is Outcome.ERROR:
            tags["error"] = "true"
        return tags


def is_finite_number(value: Any) -> bool:
    """A real number that is neither NaN nor infinite (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_diverged(result: Mapping[str, Any], metric: str) -> bool:
    """A report whose primary metric is NaN/inf, or that sets the family's `diverged` flag."""
    value = result.get(metric)
    non_finite = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value)
    return non_finite or bool(result.get("diverged", 0))


def classify_end(result: Mapping[str, Any] | None, *, errored: bool, metric: str, max_reports: int) -> Outcome:
    """The outcome of a trial from its last result, whether it raised, and the reports a full run makes."""
    result = result or {}
    if errored:
        return Outcome.ERROR
    if is_diverged(result, metric):
        return Outcome.DIVERGED
    if int(result.get("training_iteration", 0) or 0) < max_reports:
        return Outcome.PRUNED
    if not is_finite_number(result.get(metric)):  # ran every report, never gave its metric: a family bug
        return Outcome.ERROR
    return Outcome.FINISHED


def best_trial(trials: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """The trials-table row with the best finite value of `metric` (`mode` 'max' or 'min'), or None."""
    column = f"metric.{metric}"
    if column not in trials:
        return None
    values = pd.to_numeric(trials[column], errors="coerce")
    values = values[values.map(math.isfinite)]
    if values.empty:
        return None
    return trials.loc[values.idxmax() if mode == "max" else values.idxmin()]
