"""Multi-objective sweeps: objectives and a budget constraint in the space, Optuna told the vector (and the
constraint) for finished trials only, the Pareto front in the regime table, results/ and MLflow."""

from __future__ import annotations

import glob
import pickle
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tuner.driver import sweep
from tuner.outcome import Outcome
from tuner.space import Objective, load_space, space_files
from tuner.table import pareto_front
from tuner.validation import TunerInputError

OBJECTIVES = [{"metric": "connectivity_R2", "mode": "max"}, {"metric": "test_R2", "mode": "max"}]


def test_pareto_front_on_a_hand_made_table() -> None:
    trials = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e", "f"],
        "status": ["finished", "finished", "finished", "finished", "pruned", "finished"],
        "param.x": [1, 2, 3, 4, 5, 6],
        "metric.r2": [0.9, 0.8, 0.7, 0.95, 0.99, 0.96],
        "metric.loss": [0.5, 0.2, 0.6, 0.4, 0.0, 0.1],
        "metric.minutes": [10, 10, 10, 10, 10, 70],
    })
    objectives = [Objective(metric="r2", mode="max"), Objective(metric="loss", mode="min")]
    # c is beaten by a and b; e was pruned; f is over the 60-minute budget; a is beaten by d (0.95 > 0.9, 0.4 < 0.5)
    front = pareto_front(trials, objectives, {"minutes": 60})
    assert sorted(front["trial_id"]) == ["b", "d"]
    assert pareto_front(trials, objectives, {})["trial_id"].tolist() == ["f"]  # f beats every other


def _space(folder: Path, **changes) -> Path:
    data = yaml.safe_load(space_files()["chaotic_10k"].read_text())
    data.update(changes)
    path = folder / "mo_chaotic.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_first_objective_must_be_the_family_metric(tmp_path: Path) -> None:
    path = _space(tmp_path, objectives=OBJECTIVES[::-1])
    with pytest.raises(TunerInputError, match="objectives\\[0\\].*connectivity_R2"):
        load_space(path)


@pytest.mark.slow
def test_multi_objective_smoke_sweep(tmp_path: Path, results: Path, ray_2gpu) -> None:
    data = yaml.safe_load(space_files()["chaotic_10k"].read_text())
    scales = data["scales"]
    scales["smoke"]["constraints"] = {"training_time_min": 5.0}
    path = _space(tmp_path, objectives=OBJECTIVES, scales=scales)
    out = sweep(str(path), scale="smoke", samples=6, seed=1)
    statuses = dict(zip(out.trials["trial_id"], out.trials["status"]))
    assert "pruned" in statuses.values() and "finished" in statuses.values()

    with open(glob.glob(f"{out.plan.experiment_path}/searcher-state-*.pkl")[0], "rb") as f:
        searcher = pickle.load(f)
    assert searcher["told"] == {t: Outcome[s.upper()].optuna_state for t, s in statuses.items()}
    study = searcher["_ot_study"]
    number_to_trial = {ot.number: trial_id for trial_id, ot in searcher["_ot_trials"].items()}
    for trial in study.trials:  # COMPLETE with the whole vector only for trials that ran every report
        finished = statuses[number_to_trial[trial.number]] == "finished"
        assert (trial.state.name == "COMPLETE") == finished
        assert (trial.values is not None and len(trial.values) == 2) == finished

    front = pd.read_parquet(results / "mo_chaotic" / out.plan.name / "pareto_front.parquet")
    assert set(front["trial_id"]) == {number_to_trial[t.number] for t in study.best_trials}
    assert out.table["Pareto trials"].iloc[0] == len(front) and "Best test_R2" in out.table.columns
    artifacts = {a.path for a in MlflowClient(out.plan.tracking_uri).list_artifacts(out.parent_run_id)}
    assert {"pareto_front.json", "pareto_front.md"} <= artifacts
