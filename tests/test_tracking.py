"""MlflowTrialLogger: batched sends, one run per trial across a resume, nothing lost or doubled after an outage."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from tuner.tracking import MlflowTrialLogger

REPORTS, METRICS = 10, 12


def _logger(uri: str, exp: str, parent: str) -> MlflowTrialLogger:
    return MlflowTrialLogger(uri, exp, parent, metric="m0", max_reports=REPORTS, resolve=dict,
                             classify=lambda m: "converged", run_prefix="t", flush_interval_s=3600)


def _result(step: int) -> dict:
    return {"training_iteration": step, "time_total_s": 1.0, "pid": 7, **{f"m{i}": step + i for i in range(METRICS)}}


@pytest.fixture
def store(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e")
    return uri, client, exp, client.create_run(exp).info.run_id


def test_batched_resumed_and_retried(store) -> None:
    uri, client, exp, parent = store
    trial = SimpleNamespace(trial_id="abc", config={"lr": 0.1}, last_result={})
    first = _logger(uri, exp, parent)
    first.log_trial_start(trial)
    for step in range(1, 5):
        first.log_trial_result(step, trial, _result(step))
    assert first.flush()
    calls_for_four_reports = first.calls
    assert calls_for_four_reports <= 3  # create + params + one metric batch, not 4 x 12 log_metric calls

    # the driver restarts: a new callback, the trial repeats step 4 (restarted from an older checkpoint)
    second = _logger(uri, exp, parent)
    second.log_trial_start(trial)
    real_log_batch, failures = second.client.log_batch, iter([True, False, False, False])

    def flaky_log_batch(*args, **kwargs):  # the tracking server is down for the first send
        if next(failures, False):
            raise ConnectionError("server down")
        return real_log_batch(*args, **kwargs)

    second.client.log_batch = flaky_log_batch
    for step in range(4, REPORTS + 1):
        trial.last_result = _result(step)
        second.log_trial_result(step, trial, _result(step))
    assert not second.flush()  # kept, not lost
    second.log_trial_end(trial)  # flushes again, now the server is back

    runs = [r for r in client.search_runs([exp]) if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params == {"lr": "0.1", "tuned.lr": "0.1"}
    for name in ("m0", f"m{METRICS - 1}"):
        steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, name)]
        assert sorted(steps) == list(range(1, REPORTS + 1))  # complete, none doubled
    assert "pid" not in runs[0].data.metrics and "time_total_s" not in runs[0].data.metrics
