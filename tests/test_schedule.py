"""ResumableASHA: decisions kept across a restart, and reruns of trials whose end was told before it."""

from __future__ import annotations

from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from tuner.schedule import ResumableASHA, SchedulerState, make_scheduler
from tuner.space import Scheduler, load_space


def _asha(rung_value: str = "last") -> ResumableASHA:
    return ResumableASHA(time_attr="training_iteration", metric="m", mode="max", max_t=4, grace_period=1,
                         reduction_factor=2, rung_value=rung_value)


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


def test_with_rung_value_best_a_dip_at_a_rung_does_not_stop_a_trial() -> None:
    for rung_value, at_second_rung in (("last", TrialScheduler.STOP), ("best", TrialScheduler.CONTINUE)):
        space = load_space("chaotic_10k")  # the space's scheduler settings, as a sweep builds its ASHA
        space = space.model_copy(update={"scheduler": Scheduler(grace_period=1, reduction_factor=2,
                                                                 rung_value=rung_value)})
        asha = make_scheduler("asha", space, "m", "max", max_t=4)
        _results(asha, "steady", [0.6, 0.6, 0.6, 0.6])
        # ahead at rung 1, a transient dip at rung 2: by its latest value it is in the bottom half, by its best not
        assert _results(asha, "dipping", [0.7, 0.5]) == [TrialScheduler.CONTINUE, at_second_rung], rung_value
        # a trial that is simply worse is stopped under either rule
        assert _results(asha, "worse", [0.5, 0.5]) == [TrialScheduler.STOP, TrialScheduler.STOP], rung_value


def test_a_trials_best_so_far_survives_a_restart() -> None:
    before = _asha("best")
    _results(before, "steady", [0.6, 0.6, 0.6, 0.6])
    dipping = SimpleNamespace(trial_id="dipping")
    before.on_trial_add(None, dipping)
    before.on_trial_result(None, dipping, {"training_iteration": 1, "m": 0.7})
    after = _asha("best")
    SchedulerState(after).set_state(before.state())  # the driver restarted after report 1
    after.on_trial_add(None, dipping)
    assert after.on_trial_result(None, dipping, {"training_iteration": 2, "m": 0.5}) == TrialScheduler.CONTINUE
    assert after.state()["best"] == {"steady": 0.6, "dipping": 0.7}
