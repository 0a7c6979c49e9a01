"""Every MLflow call of the project: a parent run per sweep, one nested child run per trial, and the
cross-sweep table read back. Functions take plain values (URIs, tags, tables), never the sweep plan.

`MlflowTrialLogger` is a driver-side Ray Tune callback. Compared with Ray's MLflowLoggerCallback it
- buffers metrics and sends them with `log_batch` (one call per flush, not one per metric);
- logs the resolved settings once, as params, in one batch;
- keys child runs by a `tuner.trial_id` tag, so a resumed sweep reuses the run instead of
  creating a duplicate, and never logs a step twice (a trial restarted from an older checkpoint
  repeats its reports; trials are seeded, so the repeats are the same values);
- ends each run FINISHED, FAILED (error or diverged) or KILLED with tag `pruned=true`;
- never blocks or breaks the sweep when the server is down: run creation, params, metrics and run
  ends are buffered, retried with back-off, and the buffer is saved with Ray's experiment state
  (`get_state`), so even a killed driver's unsent data is sent by `tuner resume`. A resend carries the
  original timestamps, which MLflow's SQL store ignores when already stored: nothing is logged twice;
- after such a resume, deletes the runs of trials the stored state never knew (one run per trial).
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray.tune.logger import LoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS, DONE, EXPERIMENT_TAG, SHOULD_CHECKPOINT, TRIAL_ID

from tuner.outcome import Outcome, classify_end
from tuner.progress import short_config
from tuner.storage import check_store_url, is_storage_full, results_dir
from tuner.validation import TunerInputError

log = logging.getLogger(__name__)

TRIAL_ID_TAG = "tuner.trial_id"
PARENT_TAG = "mlflow.parentRunId"
# Keys Ray adds to every result: bookkeeping, not measurements.
RAY_KEYS = frozenset(AUTO_RESULT_KEYS) | {DONE, TRIAL_ID, EXPERIMENT_TAG, SHOULD_CHECKPOINT}
ROW_ARTIFACT = "regime_row.json"  # the sweep's regime row on its parent run, read back by `tuner table`
TABLE_MARKDOWN = "regime_table.md"
SWEEP_KIND_TAG = "tuner.kind"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3's UI: runs view for model development, traces for GenAI
INTERRUPTED_TAG = "interrupted"
REPLICATE_TAG = "replicate"
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for log_batch
MAX_PARAMS_PER_BATCH = 100
MAX_BACKOFF_S = 60.0
T = TypeVar("T")


def default_tracking_uri() -> str:
    """The embedded store: a sqlite file in the results folder."""
    return f"sqlite:///{results_dir() / 'mlflow.db'}"


TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "file")


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Refuse (TunerInputError naming --tracking-uri) a URI MLflow cannot use: an unknown scheme, a sqlite file
    in a folder that cannot be written, or an http(s) server that does not answer. Writes nothing."""
    scheme = check_store_url(uri, "--tracking-uri", TRACKING_SCHEMES, "sqlite:////abs/path/mlflow.db")
    if scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            if response.status != 200:
                raise TunerInputError(f"--tracking-uri: MLflow server {uri} answered HTTP {response.status} on /health")
    except (urllib.error.URLError, OSError) as err:
        raise TunerInputError(f"--tracking-uri: cannot reach the MLflow tracking server {uri}: "
                              f"{getattr(err, 'reason', err)}") from None


def is_transient(err: BaseException) -> bool:
    """Whether an error may go away by itself (server down or busy, a locked sqlite file), so a retry may help.
    Anything else (a bad URI, a full or read-only disk, a bug) is not retried."""
    if is_storage_full(err):  # MLflow calls sqlite's "disk is full" TEMPORARILY_UNAVAILABLE; it lasts
        return False
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (ConnectionError, TimeoutError, requests.ConnectionError, requests.Timeout)):
            return True
        if isinstance(seen, MlflowException) and seen.error_code in ("TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED"):
            return True
        if "database is locked" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def tracking_wait_s() -> float:
    """How long the end of a sweep waits for an unreachable tracking server: $TUNER_MLFLOW_WAIT_S, default 300."""
    return float(os.environ.get("TUNER_MLFLOW_WAIT_S", "300"))


def call_with_retry(fn: Callable[[], T], what: str, wait_s: float) -> T:
    """`fn()`, retried with back-off for up to `wait_s` seconds while it fails transiently (tracking server down)."""
    deadline, delay = time.monotonic() + wait_s, 1.0
    while True:
        try:
            return fn()
        except Exception as err:
            if not is_transient(err) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed, retrying in %.0f s: %s", what, delay, err)
            time.sleep(delay)
            delay = min(2 * delay, MAX_BACKOFF_S)


def start_sweep_run(tracking_uri: str, experiment: str, run_name: str, tags: Mapping[str, str],
                    params: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """Create (or find) the experiment and the sweep's parent run with `params`: (experiment_id, run_id).

    The experiment is marked as model development, so MLflow's UI opens it on its runs (not on traces).
    Beside a sqlite store, artifacts go to `<store>/mlartifacts/<experiment>`, not to ./mlruns of the cwd."""
    artifacts = None  # a server decides
    if tracking_uri.startswith("sqlite:///"):
        store = Path(tracking_uri.removeprefix("sqlite:///")).parent
        store.mkdir(parents=True, exist_ok=True)
        artifacts = (store / "mlartifacts" / experiment).as_uri()
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    experiment_id = exp.experiment_id if exp else client.create_experiment(experiment, artifacts)
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
    run = client.create_run(experiment_id, run_name=run_name, tags={SWEEP_KIND_TAG: "sweep", **tags})
    _log_params(client, run.info.run_id, params or {})
    return experiment_id, run.info.run_id


def _log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> int:
    """Log params in batches of MLflow's limit; returns the number of requests."""
    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])
    return -(-len(items) // MAX_PARAMS_PER_BATCH)


def end_sweep_run(tracking_uri: str, run_id: str, table: pd.DataFrame, markdown: str, metrics: list[Metric],
                  failure: str | None = None, extra_tables: Mapping[str, tuple[pd.DataFrame, str]] | None = None,
                  params: Mapping[str, Any] | None = None) -> None:
    """The regime row (as an MLflow table and as markdown), any extra tables (name -> (table, markdown), logged
    as name.json and name.md) and the summary metrics on the parent run, then end it FINISHED, or FAILED with
    tag `failure_reason` when `failure` says why the sweep produced no result. A run already ended (a resumed
    sweep that had ended) is left as it is."""
    client = MlflowClient(tracking_uri)
    if client.get_run(run_id).info.status != "RUNNING":
        return
    client.log_table(run_id, table.astype(str), ROW_ARTIFACT)
    client.log_text(run_id, markdown, TABLE_MARKDOWN)
    for name, (extra, extra_markdown) in (extra_tables or {}).items():
        client.log_table(run_id, extra.astype(str), f"{name}.json")
        client.log_text(run_id, extra_markdown, f"{name}.md")
    client.log_batch(run_id, metrics=metrics, tags=[RunTag("failure_reason", failure)] if failure else [])
    _log_params(client, run_id, params or {})
    client.set_terminated(run_id, "FAILED" if failure else "FINISHED")


def mark_interrupted(tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
    """After Ctrl-C: end the parent run and its still-running child runs KILLED with tag `interrupted=true`,
    so that no run is left RUNNING. `reopen_sweep_run` and the trial logger reopen them on resume."""
    client = MlflowClient(tracking_uri)
    running = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and "
                                                                "attributes.status = 'RUNNING'", max_results=50000)
    for run_id in [r.info.run_id for r in running] + [parent_run_id]:
        client.set_tag(run_id, INTERRUPTED_TAG, "true")
        client.set_terminated(run_id, "KILLED")


def reopen_sweep_run(tracking_uri: str, parent_run_id: str) -> None:
    """On resume: a parent run ended by `mark_interrupted` runs again."""
    client = MlflowClient(tracking_uri)
    run = client.get_run(parent_run_id)
    if run.data.tags.get(INTERRUPTED_TAG) == "true" and run.info.status == "KILLED":
        client.set_tag(parent_run_id, INTERRUPTED_TAG, "false")
        client.update_run(parent_run_id, status="RUNNING")


def metric_histories(tracking_uri: str, experiment_id: str, parent_run_id: str, metric: str) -> pd.DataFrame:
    """Every report of `metric` of the sweep's trials (replicates excluded): trial_id, step, value."""
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              max_results=50000)
    rows = [{"trial_id": run.data.tags[TRIAL_ID_TAG], "step": m.step, "value": m.value}
            for run in runs if run.data.tags.get(REPLICATE_TAG) != "true"
            for m in client.get_metric_history(run.info.run_id, metric)]
    return pd.DataFrame(rows, columns=["trial_id", "step", "value"])


def log_report(tracking_uri: str, run_id: str, path: Path) -> None:
    """The sweep's report page as an artifact of its parent run (MLflow's artifact view shows HTML)."""
    MlflowClient(tracking_uri).log_artifact(run_id, str(path))


def parent_run_experiment_path(tracking_uri: str, run_id: str) -> str:
    """The Ray experiment a sweep's parent run belongs to (its `experiment_path` tag)."""
    return MlflowClient(tracking_uri).get_run(run_id).data.tags["experiment_path"]


def regime_rows(tracking_uri: str, experiment: str) -> pd.DataFrame | None:
    """The regime rows of every finished sweep of `experiment`, oldest first (None when there are none)."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = [] if exp is None else client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{SWEEP_KIND_TAG}` = 'sweep' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"])
    rows = []
    for run in runs:
        payload = json.loads(Path(client.download_artifacts(run.info.run_id, ROW_ARTIFACT)).read_text())
        rows.append(pd.DataFrame(payload["data"], columns=payload["columns"]))
    return pd.concat(rows, ignore_index=True) if rows else None


PRINCIPLES_JSON = "principles.json"  # the verdicts on a sweep's claims, with their evidence
PRINCIPLES_TABLE = "principles_table.json"  # the same as an MLflow table
PRINCIPLES_MARKDOWN = "principles.md"


def log_principles(tracking_uri: str, run_id: str, payload: list[dict[str, Any]], table: pd.DataFrame,
                   markdown: str, counts: Mapping[str, int]) -> None:
    """The verdicts on a sweep's principles on its parent run: the JSON payload, an MLflow table, the markdown, and
    per status a tag `principles.<status>` and a metric `principles_<status>`. A run already ended is left as it is;
    a retry does not log the table twice."""
    client = MlflowClient(tracking_uri)
    if client.get_run(run_id).info.status != "RUNNING":
        return
    client.log_dict(run_id, {"verdicts": payload}, PRINCIPLES_JSON)
    client.log_text(run_id, markdown, PRINCIPLES_MARKDOWN)
    if PRINCIPLES_TABLE not in {a.path for a in client.list_artifacts(run_id)}:  # log_table appends to a table
        client.log_table(run_id, table.astype(str), PRINCIPLES_TABLE)
    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"principles_{s}", float(n), stamp, 0) for s, n in counts.items()],
                     tags=[RunTag(f"principles.{s}", str(n)) for s, n in counts.items()])


CAMPAIGN_TAG = "tuner.campaign"  # on a campaign's parent run and on each of its sweeps' parent runs: its name
CARRIED_TAG = "tuner.carried"  # on a campaign sweep's parent run: the warm starts carried from earlier sweeps (JSON)


def start_campaign_run(tracking_uri: str, experiment: str, name: str, params: Mapping[str, Any]) -> tuple[str, str]:
    """A campaign's parent run (tag `tuner.kind=campaign`): (experiment_id, run_id). Its sweeps' parent runs name it
    as their `mlflow.parentRunId`, so MLflow's runs table nests campaign > sweeps > trials."""
    return start_sweep_run(tracking_uri, experiment, name, {SWEEP_KIND_TAG: "campaign", CAMPAIGN_TAG: name}, params)


def end_campaign_run(tracking_uri: str, run_id: str, texts: Mapping[str, str]) -> None:
    """Log `texts` (artifact name -> content: the regime table, the working memory) to the campaign's run and end
    it FINISHED (an interrupted one is reopened first)."""
    reopen_sweep_run(tracking_uri, run_id)
    client = MlflowClient(tracking_uri)
    for name, text in texts.items():
        client.log_text(run_id, text, name)
    client.set_terminated(run_id, "FINISHED")


def sweep_verdict_counts(tracking_uri: str, experiment: str) -> dict[str, dict[str, int]]:
    """Per finished sweep (run name): the verdict counts its run logged (`log_principles`' tags), by status."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = [] if exp is None else client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{SWEEP_KIND_TAG}` = 'sweep' and attributes.status = 'FINISHED'",
        max_results=50000)
    return {run.info.run_name: {k.removeprefix("principles."): int(v) for k, v in sorted(run.data.tags.items())
                                if k.startswith("principles.")} for run in runs}


def parse_param(text: str) -> Any:
    """An MLflow param (always a string) back to its value: bool, None, int, float, else the string."""
    special = {"True": True, "False": False, "None": None, "true": True, "false": False}
    if text in special:
        return special[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _trial_status(run: Any) -> str | None:
    """How a child run ended, as an `Outcome` label (None while it runs or after an interruption)."""
    tags, status = run.data.tags, run.info.status
    if status == "FINISHED":
        return Outcome.FINISHED.label
    if status == "KILLED" and tags.get("pruned") == "true" and tags.get(INTERRUPTED_TAG) != "true":
        return Outcome.PRUNED.label
    if status == "FAILED":
        return Outcome.DIVERGED.label if tags.get("diverged") == "true" else Outcome.ERROR.label
    return None


def family_trials(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Every ended trial of every sweep of `experiment` (replicates left out), one row per trial in the layout of
    `tuner.table.trials_frame` (status, outcome, param.*, setting.*, metric.* with each metric's last value) plus
    the sweep's name, space and scale, its `--set` values (override.*) and the trial's run time in `minutes`, in the
    order the trials started. Empty when there are none."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = [] if exp is None else client.search_runs([exp.experiment_id], max_results=50000,
                                                     order_by=["attributes.start_time ASC"])
    sweeps = {r.info.run_id: r for r in runs if r.data.tags.get(SWEEP_KIND_TAG) == "sweep"}
    rows = []
    for run in runs:
        parent = sweeps.get(run.data.tags.get(PARENT_TAG, ""))
        status = _trial_status(run)
        if parent is None or status is None or run.data.tags.get(REPLICATE_TAG) == "true":
            continue
        row: dict[str, Any] = {"sweep": parent.info.run_name, "space": parent.data.tags.get("space"),
                               "scale": parent.data.tags.get("scale"), "trial_id": run.data.tags.get(TRIAL_ID_TAG),
                               "status": status, "outcome": run.data.tags.get("outcome", "error"),
                               "minutes": (run.info.end_time - run.info.start_time) / 60000 if run.info.end_time else None}
        row |= {f"override.{k.removeprefix('set.')}": parse_param(v) for k, v in parent.data.params.items()
                if k.startswith("set.")}
        for key, value in run.data.params.items():
            name = key.removeprefix("tuned.")
            row[f"param.{name}" if key.startswith("tuned.") else f"setting.{key}"] = parse_param(value)
        row |= {f"metric.{k}": v for k, v in run.data.metrics.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The user metrics of a Ray result (Ray's bookkeeping keys and non-numbers dropped)."""
    return {k: float(v) for k, v in result.items()
            if k not in RAY_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}


class MlflowTrialLogger(LoggerCallback):
    """Driver-side callback: one child run per trial under `parent_run_id`, metrics in batches.

    Every hook only buffers and then flushes when due; a failed flush keeps everything and backs off
    (`flush_interval_s` doubling up to a minute). At the end of the experiment it retries for up to `wait_s`.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, *, metric: str, max_reports: int,
                 resolve: Callable[[Mapping[str, Any]], Mapping[str, Any]],
                 classify: Callable[[Mapping[str, float]], str], flush_interval_s: float = 5.0,
                 wait_s: float = 300.0, replicate: bool = False):
        self.tracking_uri = tracking_uri
        self.replicate = replicate  # the runs of a sweep's replicate phase (tag replicate=true), kept apart
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.metric = metric
        self.max_reports = max_reports
        self.resolve = resolve
        self.classify = classify
        self.flush_interval_s = flush_interval_s
        self.wait_s = wait_s
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] | None = None  # trial_id -> run_id, as the server knows them
        self._starts: dict[str, dict[str, Any]] = {}  # trials not yet attached to their run -> tuned config
        self._pending: dict[str, list[Metric]] = {}
        self._ends: dict[str, tuple[str, list[RunTag]]] = {}  # run ends not sent yet
        self._last_step: dict[str, int] = {}  # trial_id -> last step buffered or sent
        self._backoff_s = 0.0  # > 0 while the server is failing
        self._next_flush = time.monotonic() + flush_interval_s
        self.calls = 0  # requests sent to the tracking store (benchmarks read this)

    def __getstate__(self) -> dict[str, Any]:  # the client holds a DB engine / HTTP session: not picklable
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    # ---- saved with Ray's experiment state: what a killed driver had not sent yet ----------------
    def get_state(self) -> dict[str, Any]:
        return {"starts": self._starts, "pending": self._pending, "ends": self._ends}

    def set_state(self, state: dict[str, Any]) -> None:
        self._starts, self._pending, self._ends = state["starts"], state["pending"], state["ends"]
        for trial_id, metrics in self._pending.items():
            self._last_step[trial_id] = max(m.step for m in metrics) if metrics else 0

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def _known_runs(self) -> dict[str, str]:
        if self._runs is None:
            runs = self.client.search_runs([self.experiment_id], max_results=50000,
                                           filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'")
            self._runs = {r.data.tags[TRIAL_ID_TAG]: r.info.run_id for r in runs if TRIAL_ID_TAG in r.data.tags
                          and (r.data.tags.get(REPLICATE_TAG) == "true") == self.replicate}
        return self._runs

    def run_id(self, trial_id: str) -> str | None:
        return self._known_runs().get(trial_id)

    # ---- Ray callback hooks ---------------------------------------------------------------------
    def log_trial_start(self, trial: Any) -> None:
        self._starts[trial.trial_id] = dict(trial.config)
        self._flush_unless_backing_off()

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        step = int(result.get("training_iteration", iteration))
        if step <= self._last_step.get(trial.trial_id, 0):  # a restarted trial repeating logged reports
            return
        self._last_step[trial.trial_id] = step
        now = int(time.time() * 1000)
        self._pending.setdefault(trial.trial_id, []).extend(
            Metric(k, v, now, step) for k, v in numeric_metrics(result).items())
        if time.monotonic() >= self._next_flush:
            self.flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        last = trial.last_result or {}
        metrics = numeric_metrics(last)
        outcome = classify_end(last, errored=failed, metric=self.metric, max_reports=self.max_reports)
        tags = {"outcome": self.classify(metrics) if metrics else "error", **outcome.mlflow_tags()}
        self._ends[trial.trial_id] = (outcome.mlflow_status, [RunTag(k, v) for k, v in tags.items()])
        self._flush_unless_backing_off()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        deadline, known = time.monotonic() + self.wait_s, {t.trial_id for t in trials}
        while not (self.flush() and self._drop_lost_runs(known)) and time.monotonic() < deadline:
            time.sleep(min(self._backoff_s, 5.0))  # the sweep is over: only this is left to do
        if self.unsent:
            log.warning("MLflow: %d items not sent; `python -m tuner resume` on this sweep sends them", self.unsent)

    def _drop_lost_runs(self, known: set[str]) -> bool:
        """Delete the runs of trials Ray does not know: started after the last experiment state a killed
        driver stored, they are not part of the resumed sweep (its searcher never heard of them)."""
        try:
            for trial_id, run_id in list(self._known_runs().items()):
                if trial_id not in known:
                    self.client.delete_run(run_id)
                    del self._runs[trial_id]
                    self.calls += 1
        except Exception as err:
            self._backoff_s = max(self._backoff_s, self.flush_interval_s)
            log.warning("MLflow: deleting the runs of lost trials failed, will retry: %s", err)
            return False
        return True

    # ---- sending ----------------------------------------------------------------------------------
    @property
    def unsent(self) -> int:
        """Buffered items not yet accepted by the server (run starts, metric values, run ends)."""
        return len(self._starts) + sum(map(len, self._pending.values())) + len(self._ends)

    def _flush_unless_backing_off(self) -> None:
        if not self._backoff_s or time.monotonic() >= self._next_flush:
            self.flush()

    def _attach(self, runs: dict[str, str], trial_id: str, config: dict[str, Any]) -> None:
        """Create the trial's run (or reuse it after a restart), log its params (idempotent)."""
        run_id = runs.get(trial_id)
        if run_id is None:
            run_id = runs[trial_id] = self.client.create_run(
                self.experiment_id, run_name=f"{short_config(config)} ({trial_id})",
                tags={PARENT_TAG: self.parent_run_id, TRIAL_ID_TAG: trial_id,
                      REPLICATE_TAG: str(self.replicate).lower()}).info.run_id
            self.calls += 1
        else:  # a restarted trial repeats reports from its checkpoint on: continue after the last one sent
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, INTERRUPTED_TAG, "false")
            sent = max((m.step for m in self.client.get_metric_history(run_id, self.metric)), default=0)
            self._pending[trial_id] = [m for m in self._pending.get(trial_id, []) if m.step > sent]
            self._last_step[trial_id] = max(sent, self._last_step.get(trial_id, 0))
            self.calls += 3
        values = {**self.resolve(config), **{f"tuned.{k}": v for k, v in config.items()}}
        self.calls += _log_params(self.client, run_id, values)

    def flush(self) -> bool:
        """Send what is buffered. What fails stays buffered, and the next flush waits longer."""
        if not self.unsent:
            return True
        try:
            runs = self._known_runs()
            for trial_id in list(self._starts):
                self._attach(runs, trial_id, self._starts[trial_id])
                del self._starts[trial_id]
            for trial_id in list(self._pending):
                batch = self._pending[trial_id]
                while batch:  # drop each chunk once sent, so a retry never sends it twice
                    self.client.log_batch(runs[trial_id], metrics=batch[:MAX_METRICS_PER_BATCH])
                    del batch[:MAX_METRICS_PER_BATCH]
                    self.calls += 1
                del self._pending[trial_id]
            for trial_id in list(self._ends):
                status, tags = self._ends[trial_id]
                self.client.log_batch(runs[trial_id], tags=tags)
                self.client.set_terminated(runs[trial_id], status=status)
                self.calls += 2
                del self._ends[trial_id]
        except Exception as err:  # server down or busy: keep everything, retry later
            self._runs = None  # a run created before the error is found again by its tag, not created twice
            self._backoff_s = min(max(2 * self._backoff_s, self.flush_interval_s), MAX_BACKOFF_S)
            self._next_flush = time.monotonic() + self._backoff_s
            log.warning("MLflow flush failed, %d items kept, next try in %.0f s: %s", self.unsent, self._backoff_s, err)
            return False
        self._backoff_s = 0.0
        self._next_flush = time.monotonic() + self.flush_interval_s
        return True
