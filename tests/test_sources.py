"""How the searcher proposed each trial: read back from the study into the trials table, marked in the report."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd

from tuner.report import search_history
from tuner.samplers import SOURCE_ATTR
from tuner.search import with_sources


def test_sources_come_from_the_study_and_are_marked_in_the_search_history(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    proposed = [({"lr": 1e-4, "batch_size": 32}, "warm_start"), ({"lr": 3.3e-5, "batch_size": 8}, "prior"),
                ({"lr": 2.1e-4, "batch_size": 16}, "base"), ({"lr": 1.2e-4, "batch_size": 32}, "incumbent")]
    for params, source in proposed:
        study.enqueue_trial(params)
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
                           "batch_size": optuna.distributions.CategoricalDistribution([8, 16, 32])})
        trial.set_user_attr(SOURCE_ATTR, source)
        study.tell(trial, 0.5)
    # the trials table in Ray's order (not the study's), values through parquet's float round trip, one unknown
    trials = pd.DataFrame([{"trial_id": f"t{i}", "status": "finished", "metric.R2": 0.1 * i,
                            "param.lr": float(repr(params["lr"])), "param.batch_size": params["batch_size"]}
                           for i, (params, _) in enumerate(reversed(proposed))]
                          + [{"trial_id": "t9", "status": "finished", "metric.R2": 0.9, "param.lr": 5e-4,
                              "param.batch_size": 8}])
    table = with_sources(trials, url, "s")
    assert table["source"].tolist() == ["incumbent", "base", "prior", "warm_start", ""]
    assert with_sources(trials, url, "no-such-study")["source"].tolist() == [""] * 5

    figure = search_history(table, "R2", "max", warm=[])
    marked = {trace.name: list(trace.x) for trace in figure.data}
    assert marked["prior draw"] == [3] and marked["warm start"] == [4] and marked["around the best"] == [1]
