"""A trial's end is named once (tuner.outcome): the searcher, MLflow, the progress line and the trials table agree."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tuner.family import get_family
from tuner.outcome import Outcome, best_trial, classify_end
from tuner.progress import ProgressPrinter
from tuner.search import TruthfulOptunaSearch, distributions, make_sampler
from tuner.space import load_space
from tuner.table import trials_frame
from tuner.tracking import MlflowTrialLogger, start_sweep_run

MAX_REPORTS = 4
METRIC = "connectivity_R2"
# outcome -> (last result, raised?, Optuna state, MLflow status, progress/table label), written out by hand
CASES = {
    "finished": ({METRIC: 0.97, "training_iteration": MAX_REPORTS, "diverged": 0.0}, False,
                 "COMPLETE", "FINISHED", "finished"),
    "pruned": ({METRIC: 0.52, "training_iteration": 2, "diverged": 0.0}, False, "PRUNED", "KILLED", "pruned"),
    "diverged": ({METRIC: math.nan, "training_iteration": 2, "diverged": 1.0}, False, "FAIL", "FAILED", "diverged"),
    "error": ({METRIC: 0.31, "training_iteration": 1, "diverged": 0.0}, True, "FAIL", "FAILED", "error"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_part_names_the_same_outcome(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result, raised, optuna_state, mlflow_status, label = CASES[case]
    space = load_space("chaotic_10k")
    family = get_family(space.family)
    config = dict(space.warm_starts[0].params)
    trial = SimpleNamespace(trial_id=f"t_{case}", config=config, last_result=result, path=str(tmp_path / case))

    assert classify_end(result, errored=raised, metric=METRIC, max_reports=MAX_REPORTS) is Outcome(
        (label, mlflow_status, optuna_state))

    # the searcher tells Optuna
    search = TruthfulOptunaSearch(space=distributions(space), metric=METRIC, mode="max", max_t=MAX_REPORTS,
                                  sampler=make_sampler(space, "tpe", priors=True, seed=0))
    search.suggest(trial.trial_id)
    search.on_trial_complete(trial.trial_id, None if raised else result, error=raised)
    assert [t.state.name for t in search._ot_study.trials] == [optuna_state]

    # the trial's MLflow run
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id, parent = start_sweep_run(uri, "signal", "sweep", {})
    logger = MlflowTrialLogger(uri, experiment_id, parent, metric=METRIC, max_reports=MAX_REPORTS, resolve=dict,
                               classify=family.classify, flush_interval_s=3600)
    logger.log_trial_start(trial)
    logger.log_trial_result(1, trial, {**result, "training_iteration": 1})
    logger.log_trial_end(trial, failed=raised)
    assert logger.flush()
    run = MlflowClient(uri).get_run(logger.run_id(trial.trial_id))
    assert run.info.status == mlflow_status
    assert run.data.tags["pruned"] == str(case == "pruned").lower()
    assert run.data.tags["diverged"] == str(case == "diverged").lower()
    assert ("error" in run.data.tags) == (case == "error")

    # the progress line
    printer = ProgressPrinter(METRIC, MAX_REPORTS, total=1)
    if raised:
        printer.on_trial_error(0, [], trial)
    else:
        printer.on_trial_complete(0, [], trial)
    assert f"trial {trial.trial_id} {label}" in capsys.readouterr().out

    # the trials table
    grid = [SimpleNamespace(metrics={**result, "trial_id": trial.trial_id, "time_total_s": 1.0},
                            error=RuntimeError("boom") if raised else None, config=config, path=trial.path)]
    table = trials_frame(grid, family, MAX_REPORTS, resolve=dict)
    assert table["status"].tolist() == [label]


def test_a_trial_that_never_started_is_an_error_row_without_params() -> None:
    """A worker that died before the trial's first report leaves Ray no result, hence no config."""
    space = load_space("chaotic_10k")
    family = get_family(space.family)
    started = SimpleNamespace(metrics={**CASES["finished"][0], "trial_id": "a"}, error=None,
                              config=dict(space.warm_starts[0].params), path="/x/a")
    never = SimpleNamespace(metrics={}, error=RuntimeError("worker died"), config=None, path="/x/b")
    table = trials_frame([started, never], family, MAX_REPORTS, resolve=lambda c: space.resolve({}, c, family))
    assert table["status"].tolist() == ["finished", "error"] and table["trial_id"].tolist() == ["a", "b"]
    assert table.loc[1, ["param.lr", "setting.lr_W", f"metric.{METRIC}"]].isna().all()
    assert best_trial(table, METRIC, "max")["trial_id"] == "a"


def test_a_full_run_without_its_metric_is_an_error_not_a_success() -> None:
    assert classify_end({"training_iteration": MAX_REPORTS}, errored=False, metric=METRIC,
                        max_reports=MAX_REPORTS) is Outcome.ERROR


def test_best_trial_skips_non_finite_values_and_follows_the_mode() -> None:
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], f"metric.{METRIC}": [0.5, math.nan, 0.9]})
    assert best_trial(trials, METRIC, "max")["trial_id"] == "c"
    assert best_trial(trials, METRIC, "min")["trial_id"] == "a"
    assert best_trial(trials.iloc[[1]], METRIC, "max") is None


def test_progress_summary_says_how_far_and_how_good() -> None:
    printer = ProgressPrinter(METRIC, MAX_REPORTS, total=4, mode="max", interval_s=30)
    for trial_id, result, raised in (("a", CASES["finished"][0], False), ("b", CASES["pruned"][0], False)):
        trial = SimpleNamespace(trial_id=trial_id, config={}, last_result=result, path="/x")
        printer.on_trial_start(0, [], trial)
        printer.on_trial_result(0, [], trial, result)
        printer.on_trial_complete(0, [], trial)
    printer.on_trial_start(0, [], SimpleNamespace(trial_id="c", config={}, path="/x"))
    line = printer.summary(printer.started + 120)
    assert "2/4 ended (1 finished, 1 pruned), 1 running" in line
    assert f"best {METRIC} 0.97" in line and "2m00s elapsed, ~2m00s left" in line
