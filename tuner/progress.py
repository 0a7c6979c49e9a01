"""Live progress on the terminal: one short line per trial event."""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

from tuner.outcome import Outcome, classify_end


class ProgressPrinter(Callback):
    """Prints trial starts, each report's primary metric, and how each trial ended."""

    def __init__(self, metric: str, max_reports: int, total: int):
        self.metric = metric
        self.max_reports = max_reports
        self.total = total
        self.started = time.monotonic()
        self.ended = 0

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.started:7.1f}s]"

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"{self._stamp()} trial {trial.trial_id} started: {_short(trial.config)}", flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else value
        print(f"{self._stamp()} trial {trial.trial_id} report {result.get('training_iteration')}/{self.max_reports}: "
              f"{self.metric}={shown}", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, errored=True)

    def _end(self, trial: Any, errored: bool) -> None:
        self.ended += 1
        outcome = classify_end(trial.last_result, errored=errored, metric=self.metric, max_reports=self.max_reports)
        how = f"{outcome.label} (see {trial.path}/error.txt)" if outcome is Outcome.ERROR else outcome.label
        print(f"{self._stamp()} trial {trial.trial_id} {how} ({self.ended}/{self.total} ended)", flush=True)


def _short(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())
