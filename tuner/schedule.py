"""Early stopping: ASHA on the space's metric whose rungs survive a restart, a stopper for non-finite results
(ASHA compares with `<`, which NaN always fails, so on its own it would run a diverged trial to the end), and a
resumable stop of the whole sweep when its folders run out of space."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.trial import TrialState
from ray.tune import Callback, Stopper
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from tuner.outcome import is_diverged
from tuner.space import SearchSpace
from tuner.storage import back_up_state, hold_reserve, low_space_reason, release_reserve
from tuner.validation import SCHEDULERS


class NonFiniteStopper(Stopper):
    """Stop a trial at its first report whose metric is NaN/inf or that flags `diverged`."""

    def __init__(self, metric: str):
        self.metric = metric

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return is_diverged(result, self.metric)

    def stop_all(self) -> bool:
        return False


class StorageGuard(Callback):
    """Keeps a sweep resumable when its disk fills: at every step of the Tune loop it keeps a complete copy of
    the newest save of Ray's state files (`storage.back_up_state`: a few stats when nothing changed; Ray rewrites
    them in place, so a full disk can truncate them), and every `every_s` seconds (and whenever a trial errors)
    it checks free space: once a folder the sweep writes to runs low, it gives back the space it held
    (`storage.hold_reserve`, for Ray's final save and the stores' last writes when another program took every
    byte) and stops the whole sweep with Ray's own stop signal (SIGUSR1, handled by Tune as it handles Ctrl-C:
    trials keep their checkpoints, the experiment stays resumable)."""

    def __init__(self, folders: Sequence[Path], experiment: Path | None, every_s: float = 5.0):
        self.folders = list(folders)
        self.experiment = experiment  # None: not on a local disk (e.g. s3://)
        self.every_s = every_s
        self._next_check = 0.0
        self.reason: str | None = None

    def setup(self, **info: Any) -> None:
        if self.experiment is not None:
            hold_reserve(self.experiment)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # every step, not every few seconds: a disk that fills right after Ray's first save must find it kept
        if self.experiment is not None and self.experiment.is_dir():
            back_up_state(self.experiment)
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.every_s
            self._check_space()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check_space()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.experiment is not None:
            release_reserve(self.experiment)

    def _check_space(self) -> None:
        if self.reason is not None:
            return
        self.reason = next((r for r in map(low_space_reason, self.folders) if r), None)
        if self.reason is None:
            return
        if self.experiment is not None:
            release_reserve(self.experiment)
        if callable(signal.getsignal(signal.SIGUSR1)):  # Tune's handler (installed when fit runs in the main thread)
            print(f"stopping the sweep: {self.reason}", flush=True)
            os.kill(os.getpid(), signal.SIGUSR1)
        else:
            print(f"warning: {self.reason}; writes may fail", flush=True)


class ResumableASHA(ASHAScheduler):
    """ASHA whose rungs and stop decisions survive a driver restart.

    Ray stores the scheduler only as it was built (inside the Tuner's pickle) and never saves its rungs, so a
    restored sweep would start with empty rungs and judge resumed trials against the few values recorded
    after the restart. `state()` (rungs as [milestone, {trial: value}] in the order the values came, and the
    trials it stopped) is saved with Ray's experiment state by `SchedulerState`, and loaded back on resume. A
    trial it had stopped, resumed from an older checkpoint, is stopped again. A trial whose end the searcher told
    the study after Ray's last save (`ended`, from `TruthfulOptunaSearch.ended_after_save`; a killed driver)
    ends the same way when Ray reruns it: PRUNED at the report it was stopped at, COMPLETE after every report.
    With `rung_value="best"` a trial enters each rung with its best value so far instead of its latest (kept in
    the state too), so a transient dip at a rung does not stop it.
    """

    def __init__(self, rung_value: str = "last", **kwargs: Any):
        super().__init__(**kwargs)
        self.rung_value = rung_value
        self.stopped: set[str] = set()
        self.ended: dict[str, tuple[str, int | None]] = {}
        self.best: dict[str, float] = {}  # per trial, with rung_value="best": its best value so far

    def state(self) -> dict[str, Any]:
        return {"rungs": [[[milestone, dict(recorded)] for milestone, recorded in bracket._rungs]
                          for bracket in self._brackets], "stopped": sorted(self.stopped), "best": dict(self.best)}

    def load(self, state: dict[str, Any]) -> None:
        for bracket, rungs in zip(self._brackets, state["rungs"]):
            for (_, recorded), (_, values) in zip(bracket._rungs, rungs):
                recorded.clear()
                recorded.update(values)
        self.stopped = set(state["stopped"])
        self._num_stopped = len(self.stopped)
        self.best = dict(state.get("best", {}))  # a state saved before rung_value existed has none

    def _rung_result(self, trial: Any, result: dict) -> dict:
        """The result as the rungs see it: with rung_value="best", the metric replaced by the trial's best so far
        (NaN is never best: a diverged trial is stopped by `NonFiniteStopper`)."""
        value = result.get(self._metric)
        if self.rung_value != "best" or not isinstance(value, (int, float)) or math.isnan(value):
            return result
        kept = self.best.get(trial.trial_id)
        if kept is None or self._metric_op * value > self._metric_op * kept:
            self.best[trial.trial_id] = kept = float(value)
        return {**result, self._metric: kept}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if trial.trial_id in self.stopped:  # decided before a restart; resumed from an older checkpoint
            return TrialScheduler.STOP
        state, last_step = self.ended.get(trial.trial_id, (None, None))
        if state == TrialState.PRUNED.name and result.get(self._time_attr, 0) >= (last_step or 0):
            self.stopped.add(trial.trial_id)
            return TrialScheduler.STOP
        action = super().on_trial_result(tune_controller, trial, self._rung_result(trial, result))  # records it
        if state in (TrialState.PRUNED.name, TrialState.COMPLETE.name):  # the study has its end: the rerun runs to it
            return TrialScheduler.CONTINUE
        if action == TrialScheduler.STOP and result.get(self._time_attr, 0) < self._max_t:
            self.stopped.add(trial.trial_id)
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if trial.trial_id in self._trial_info:
            super().on_trial_complete(tune_controller, trial, self._rung_result(trial, result))


class SchedulerState(Callback):
    """Saves a `ResumableASHA`'s state with Ray's experiment state (so rungs and trial states are stored at
    the same moment) and loads it back when the experiment is restored, with the ends the searcher found told
    after Ray's last save (Ray restores the searcher first). Scheduler, searcher and this callback live in the
    Tuner's pickle, which keeps this callback's references to the very objects Ray restores."""

    def __init__(self, scheduler: ResumableASHA, searcher: Any = None):
        self.scheduler = scheduler
        self.searcher = searcher  # a TruthfulOptunaSearch, or None (nothing searched)

    def get_state(self) -> dict[str, Any]:
        return self.scheduler.state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.load(state)
        self.scheduler.ended = dict(getattr(self.searcher, "ended_after_save", {}))


def make_scheduler(kind: str, space: SearchSpace, metric: str, mode: str, max_t: int) -> TrialScheduler:
    """ASHA (rungs kept across restarts with `SchedulerState`) with the space's grace period, reduction factor (in
    reports) and rung value; or FIFO (`none`)."""
    if kind not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {kind!r}")
    if kind == "none":
        return FIFOScheduler()
    return ResumableASHA(metric=metric, mode=mode, time_attr="training_iteration",
                         max_t=max_t, grace_period=min(space.scheduler.grace_period, max_t),
                         reduction_factor=space.scheduler.reduction_factor,
                         rung_value=space.scheduler.rung_value)
