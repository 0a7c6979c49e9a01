"""MLflow tracking for sweeps: a parent run per sweep, one nested child run per trial.

`MlflowTrialLogger` is a driver-side Ray Tune callback. Compared with Ray's MLflowLoggerCallback it
- buffers metrics and sends them with `log_batch` (one call per flush, not one per metric);
- logs the resolved settings once, as params, in one batch;
- keys child runs by a `tuner.trial_id` tag, so a resumed sweep reuses the run instead of
  creating a duplicate, and never logs a step twice (a trial restarted from an older checkpoint
  repeats its reports; trials are seeded, so the repeats are the same values);
- ends each run FINISHED, FAILED (error or diverged) or KILLED with tag `pruned=true`;
- keeps what it could not send (server down) and sends it at the next flush.
"""

from __future__ import annotations

import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune.logger import LoggerCallback

log = logging.getLogger(__name__)

TRIAL_ID_TAG = "tuner.trial_id"
PARENT_TAG = "mlflow.parentRunId"
# Keys Ray adds to every result; they are bookkeeping, not measurements.
RAY_KEYS = frozenset({"training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "time_since_restore",
                      "iterations_since_restore", "timesteps_total", "episodes_total", "timesteps_since_restore",
                      "done", "pid", "hostname", "node_ip", "date", "experiment_id", "trial_id", "should_checkpoint",
                      "checkpoint_dir_name", "config", "experiment_tag"})
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for log_batch
MAX_PARAMS_PER_BATCH = 100


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Raise ConnectionError with a readable message if an http(s) tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            if response.status != 200:
                raise ConnectionError(f"MLflow server {uri} answered HTTP {response.status} on /health")
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(f"cannot reach the MLflow tracking server {uri}: {getattr(err, 'reason', err)}") from None


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The user metrics of a Ray result (Ray's bookkeeping keys and non-numbers dropped)."""
    return {k: float(v) for k, v in result.items()
            if k not in RAY_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}


class MlflowTrialLogger(LoggerCallback):
    """Driver-side callback: one child run per trial under `parent_run_id`, metrics in batches."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, *, metric: str, max_reports: int,
                 resolve: Callable[[Mapping[str, Any]], Mapping[str, Any]],
                 classify: Callable[[Mapping[str, float]], str], run_prefix: str, flush_interval_s: float = 5.0):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.metric = metric
        self.max_reports = max_reports
        self.resolve = resolve
        self.classify = classify
        self.run_prefix = run_prefix
        self.flush_interval_s = flush_interval_s
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] | None = None  # trial_id -> run_id
        self._pending: dict[str, list[Metric]] = {}
        self._unsent_ends: dict[str, tuple[str, list[RunTag]]] = {}  # run ends the server did not take yet
        self._last_step: dict[str, int] = {}  # trial_id -> last step logged
        self._last_flush = time.monotonic()
        self.calls = 0  # requests sent to the tracking store (benchmarks read this)

    def __getstate__(self) -> dict[str, Any]:  # the client holds a DB engine / HTTP session: not picklable
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def _known_runs(self) -> dict[str, str]:
        if self._runs is None:
            runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'",
                                           max_results=50000)
            self._runs = {r.data.tags[TRIAL_ID_TAG]: r.info.run_id for r in runs if TRIAL_ID_TAG in r.data.tags}
        return self._runs

    def run_id(self, trial_id: str) -> str | None:
        return self._known_runs().get(trial_id)

    # ---- Ray callback hooks ---------------------------------------------------------------------
    def log_trial_start(self, trial: Any) -> None:
        runs = self._known_runs()
        if trial.trial_id in runs:  # resumed trial: reuse its run, no params again, no step twice
            run_id = runs[trial.trial_id]
            self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, self.metric)
            self._last_step[trial.trial_id] = max((m.step for m in history), default=0)
            self.calls += 2
            return
        run = self.client.create_run(self.experiment_id, run_name=f"{self.run_prefix}-{trial.trial_id}",
                                     tags={PARENT_TAG: self.parent_run_id, TRIAL_ID_TAG: trial.trial_id})
        runs[trial.trial_id] = run.info.run_id
        tuned = dict(trial.config)
        params = [Param(k, str(v)) for k, v in {**self.resolve(tuned), **{f"tuned.{k}": v for k, v in tuned.items()}}.items()]
        for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run.info.run_id, params=params[i:i + MAX_PARAMS_PER_BATCH])
        self.calls += 1 + math.ceil(len(params) / MAX_PARAMS_PER_BATCH)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        step = int(result.get("training_iteration", iteration))
        if step <= self._last_step.get(trial.trial_id, 0):  # a restarted trial repeating logged reports
            return
        self._last_step[trial.trial_id] = step
        now = int(time.time() * 1000)
        self._pending.setdefault(trial.trial_id, []).extend(
            Metric(k, v, now, step) for k, v in numeric_metrics(result).items())
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        last = trial.last_result or {}
        metrics = numeric_metrics(last)
        diverged = metrics.get("diverged", 0.0) > 0 or (self.metric in metrics and not math.isfinite(metrics[self.metric]))
        pruned = not failed and not diverged and int(last.get("training_iteration", 0)) < self.max_reports
        status = "FAILED" if failed or diverged else "KILLED" if pruned else "FINISHED"
        tags = [RunTag("outcome", self.classify(metrics) if metrics else "error"),
                RunTag("pruned", str(pruned).lower()), RunTag("diverged", str(diverged).lower())]
        if failed:
            tags.append(RunTag("error", "true"))
        self._unsent_ends[trial.trial_id] = (status, tags)
        self.flush()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()

    # ---- sending ----------------------------------------------------------------------------------
    def flush(self) -> bool:
        """Send buffered metrics and run ends. What fails stays buffered for the next flush."""
        self._last_flush = time.monotonic()
        try:
            runs = self._known_runs()
            for trial_id in list(self._pending):
                batch = self._pending[trial_id]
                while batch:  # drop each chunk once sent, so a retry never sends it twice
                    self.client.log_batch(runs[trial_id], metrics=batch[:MAX_METRICS_PER_BATCH])
                    del batch[:MAX_METRICS_PER_BATCH]
                    self.calls += 1
                del self._pending[trial_id]
            for trial_id in list(self._unsent_ends):
                status, tags = self._unsent_ends[trial_id]
                self.client.log_batch(runs[trial_id], tags=tags)
                self.client.set_terminated(runs[trial_id], status=status)
                self.calls += 2
                del self._unsent_ends[trial_id]
        except Exception as err:  # server down or busy: keep everything, retry at the next flush
            log.warning("MLflow flush failed, will retry: %s", err)
            return False
        return True

