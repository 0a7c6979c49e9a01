"""Early stopping: ASHA on the space's metric, and a stopper for non-finite results (ASHA compares with
`<`, which NaN always fails, so on its own it would run a diverged trial to the end)."""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Stopper
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from tuner.space import SearchSpace

SCHEDULERS = ("asha", "none")


class NonFiniteStopper(Stopper):
    """Stop a trial at its first report whose metric is NaN/inf or that flags `diverged`."""

    def __init__(self, metric: str):
        self.metric = metric

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        value = result.get(self.metric)
        non_finite = isinstance(value, (int, float)) and not math.isfinite(value)
        return non_finite or bool(result.get("diverged", 0))

    def stop_all(self) -> bool:
        return False


def make_scheduler(kind: str, space: SearchSpace, metric: str, mode: str, max_t: int) -> TrialScheduler:
    """ASHA with the space's grace period and reduction factor, in reports; or FIFO (`none`)."""
    if kind not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {kind!r}")
    if kind == "none":
        return FIFOScheduler()
    return ASHAScheduler(metric=metric, mode=mode, time_attr="training_iteration", max_t=max_t,
                         grace_period=min(space.scheduler.grace_period, max_t),
                         reduction_factor=space.scheduler.reduction_factor)
