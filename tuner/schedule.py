"""Early stopping: ASHA on the space's metric whose rungs survive a restart, and a stopper for non-finite
results (ASHA compares with `<`, which NaN always fails, so on its own it would run a diverged trial to the end)."""

from __future__ import annotations

import json
from typing import Any

from ray.tune import Stopper
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from tuner.outcome import is_diverged
from tuner.space import SearchSpace
from tuner.storage import read_text, write_text
from tuner.validation import SCHEDULERS


class NonFiniteStopper(Stopper):
    """Stop a trial at its first report whose metric is NaN/inf or that flags `diverged`."""

    def __init__(self, metric: str):
        self.metric = metric

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return is_diverged(result, self.metric)

    def stop_all(self) -> bool:
        return False


class ResumableASHA(ASHAScheduler):
    """ASHA whose rungs and stop decisions survive a driver restart.

    Ray stores the scheduler only as it was built (inside the Tuner's pickle) and never saves its rungs, so a
    restored sweep would start with empty rungs and judge resumed trials against the few values recorded
    after the restart. This scheduler writes its rungs (trial -> metric at each milestone) and the trials it
    stopped to `STATE_FILE` in the experiment folder whenever they change (rungs as [milestone, {trial: value}]
    in the order the values came), and reads them back when the
    restored Tuner unpickles it. A trial it had stopped, resumed from an older checkpoint, is stopped again.
    """

    STATE_FILE = "asha_state.json"

    def __init__(self, *, experiment: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.experiment = experiment
        self.stopped: set[str] = set()
        self._saved: Any = self._state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        try:
            saved = json.loads(read_text(self.experiment, self.STATE_FILE))
        except (FileNotFoundError, OSError):
            return  # nothing recorded yet
        for bracket, rungs in zip(self._brackets, saved["rungs"]):
            for (_, recorded), (_, values) in zip(bracket._rungs, rungs):
                recorded.clear()
                recorded.update(values)
        self.stopped = set(saved["stopped"])
        self._num_stopped = len(self.stopped)
        self._saved = self._state()

    def _state(self) -> dict[str, Any]:
        return {"rungs": [[[milestone, dict(recorded)] for milestone, recorded in bracket._rungs]
                          for bracket in self._brackets], "stopped": sorted(self.stopped)}

    def _save_if_changed(self) -> None:
        state = self._state()
        if state != self._saved:
            write_text(self.experiment, self.STATE_FILE, json.dumps(state))
            self._saved = state

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if trial.trial_id in self.stopped:  # decided before a restart; resumed from an older checkpoint
            return TrialScheduler.STOP
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get(self._time_attr, 0) < self._max_t:
            self.stopped.add(trial.trial_id)
        self._save_if_changed()
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if trial.trial_id in self._trial_info:
            super().on_trial_complete(tune_controller, trial, result)
        self._save_if_changed()


def make_scheduler(kind: str, space: SearchSpace, metric: str, mode: str, max_t: int,
                   experiment: str) -> TrialScheduler:
    """ASHA (rungs kept across restarts, in `experiment`) with the space's grace period and reduction factor,
    in reports; or FIFO (`none`)."""
    if kind not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {kind!r}")
    if kind == "none":
        return FIFOScheduler()
    return ResumableASHA(experiment=experiment, metric=metric, mode=mode, time_attr="training_iteration",
                         max_t=max_t, grace_period=min(space.scheduler.grace_period, max_t),
                         reduction_factor=space.scheduler.reduction_factor)
