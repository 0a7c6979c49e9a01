"""MlflowTrialLogger: batched sends, one run per trial across a resume, nothing lost or doubled after an outage."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from tuner.tracking import MlflowTrialLogger

REPORTS, METRICS = 10, 12


def _logger(uri: str, exp: str, parent: str) -> MlflowTrialLogger:
    return MlflowTrialLogger(uri, exp, parent, metric="m0", max_reports=REPORTS, resolve=dict,
                             classify=lambda m: "converged", flush_interval_s=3600)


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
    calls = second.calls
    second.log_trial_end(trial)  # backing off: buffered, no request
    assert second.calls == calls and second.unsent > 0
    assert second.flush()  # the server is back

    runs = [r for r in client.search_runs([exp]) if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params == {"lr": "0.1", "tuned.lr": "0.1"}
    for name in ("m0", f"m{METRICS - 1}"):
        steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, name)]
        assert sorted(steps) == list(range(1, REPORTS + 1))  # complete, none doubled
    assert "pid" not in runs[0].data.metrics and "time_total_s" not in runs[0].data.metrics


def _history(client: MlflowClient, exp: str, parent: str, name: str = "m0") -> list[list[int]]:
    runs = [r for r in client.search_runs([exp]) if r.data.tags.get("mlflow.parentRunId") == parent]
    return [[m.step for m in client.get_metric_history(r.info.run_id, name)] for r in runs]


def test_killed_driver_loses_nothing_and_doubles_nothing(store) -> None:
    """The buffer rides in Ray's experiment state: a driver killed while the server is down resends it."""
    uri, client, exp, parent = store
    trial = SimpleNamespace(trial_id="abc", config={"lr": 0.1}, last_result={})
    first = _logger(uri, exp, parent)
    first.log_trial_start(trial)
    first.client.log_batch = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("server down"))
    for step in range(1, 6):
        first.log_trial_result(step, trial, _result(step))
    assert not first.flush()
    snapshot = pickle.loads(pickle.dumps(first.get_state()))  # saved with the experiment, then SIGKILL

    # the new driver restores the snapshot; the trial restarts from its checkpoint at step 3
    second = _logger(uri, exp, parent)
    second.set_state(snapshot)
    second.log_trial_start(trial)
    for step in range(4, REPORTS + 1):
        trial.last_result = _result(step)
        second.log_trial_result(step, trial, _result(step))
    second.log_trial_end(trial)
    assert second.flush() and second.unsent == 0
    assert _history(client, exp, parent) == [list(range(1, REPORTS + 1))]

    # a stale snapshot (taken before data that was then sent) is sent again: stored once
    third = _logger(uri, exp, parent)
    third.set_state(snapshot)
    assert third.flush()
    assert _history(client, exp, parent) == [list(range(1, REPORTS + 1))]
    assert _history(client, exp, parent, f"m{METRICS - 1}") == [list(range(1, REPORTS + 1))]
