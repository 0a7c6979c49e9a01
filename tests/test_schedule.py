"""ResumableASHA: decisions kept across a restart, and reruns of trials whose end was told before it."""

from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from tuner.schedule import ResumableASHA, SchedulerState


def _asha() -> ResumableASHA:
    return ResumableASHA(time_attr="training_iteration", metric="m", mode="max", max_t=4, grace_period=1,
                         reduction_factor=2)


def _results(asha: ResumableASHA, trial_id: str, values: list[float]) -> list[str]:
    trial = SimpleNamespace(trial_id=trial_id)
    asha.on_trial_add(None, trial)
    return [asha.on_trial_result(None, trial, {"training_iteration": i, "m": v}) for i, v in enumerate(values, 1)]


def test_a_rerun_ends_as_the_study_was_told_after_a_killed_driver() -> None:
    asha = _asha()
    searcher = SimpleNamespace(ended_after_save={"told_pruned": ("PRUNED", 3), "told_complete": ("COMPLETE", None)})
    SchedulerState(asha, searcher).set_state(_asha().state())  # the restore: Ray restored the searcher first
    _results(asha, "good", [0.9, 0.9, 0.9, 0.9])
    # a fresh trial this poor is stopped at the first rung ...
    assert _results(asha, "poor", [0.1, 0.1]) == [TrialScheduler.STOP, TrialScheduler.STOP]
    # ... but one the study has as PRUNED at report 3 runs to report 3, and one it has as COMPLETE to the end
    assert _results(asha, "told_pruned", [0.1, 0.1, 0.1]) == [TrialScheduler.CONTINUE] * 2 + [TrialScheduler.STOP]
    assert _results(asha, "told_complete", [0.1] * 4) == [TrialScheduler.CONTINUE] * 4
    assert "told_pruned" in asha.state()["stopped"] and "told_complete" not in asha.state()["stopped"]
