"""Live progress on the terminal: one short line per trial event, and a summary line every `interval_s`."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from ray.tune import Callback

from tuner.outcome import Outcome, classify_end, is_finite_number


class ProgressPrinter(Callback):
    """Prints trial starts, each report's primary metric and how each trial ended; and, every `interval_s`
    ($TUNER_PROGRESS_S, default 30), how far the sweep is (trials ended by outcome, running), the best value so
    far, the time elapsed and an estimate of the time left."""

    def __init__(self, metric: str, max_reports: int, total: int, mode: str = "max",
                 interval_s: float | None = None):
        self.metric = metric
        self.max_reports = max_reports
        self.total = total
        self.mode = mode
        self.interval_s = float(os.environ.get("TUNER_PROGRESS_S", "30")) if interval_s is None else interval_s
        self.started = time.monotonic()
        self.ended = 0
        self.outcomes: Counter[str] = Counter()
        self.running: set[str] = set()
        self.best: float | None = None
        self._next_summary = self.started + self.interval_s

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.started:7.1f}s]"

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        print(f"{self._stamp()} trial {trial.trial_id} started: {short_config(trial.config)}", flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        if is_finite_number(value) and (self.best is None or (value > self.best if self.mode == "max"
                                                              else value < self.best)):
            self.best = float(value)
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else value
        print(f"{self._stamp()} trial {trial.trial_id} report {result.get('training_iteration')}/{self.max_reports}: "
              f"{self.metric}={shown}", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, errored=True)

    def on_step(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now >= self._next_summary:
            self._next_summary = now + self.interval_s
            print(self.summary(now), flush=True)

    def summary(self, now: float) -> str:
        """'[ 120.0s] progress: 5/12 ended (3 finished, 2 pruned), 2 running; best m 0.98; 2m00s elapsed, ~2m48s left'."""
        elapsed = now - self.started
        ended = ", ".join(f"{n} {label}" for label, n in sorted(self.outcomes.items())) or "none"
        best = f"{self.best:.4g}" if self.best is not None else "-"
        left = f"~{_minutes(elapsed / self.ended * (self.total - self.ended))} left" if self.ended else "time left: -"
        return (f"{self._stamp()} progress: {self.ended}/{self.total} ended ({ended}), {len(self.running)} running; "
                f"best {self.metric} {best}; {_minutes(elapsed)} elapsed, {left}")

    def _end(self, trial: Any, errored: bool) -> None:
        self.ended += 1
        self.running.discard(trial.trial_id)
        outcome = classify_end(trial.last_result, errored=errored, metric=self.metric, max_reports=self.max_reports)
        self.outcomes[outcome.label] += 1
        how = f"{outcome.label} (see {trial.path}/error.txt)" if outcome is Outcome.ERROR else outcome.label
        print(f"{self._stamp()} trial {trial.trial_id} {how} ({self.ended}/{self.total} ended)", flush=True)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def short_config(config: Mapping[str, Any]) -> str:
    """A trial's parameters in short form, e.g. 'batch_size=8, lr=0.000133' (progress lines, MLflow run names)."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())
