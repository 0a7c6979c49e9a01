"""The driver side of a sweep on Ray Tune: build (plan, parent run, plan file, Tuner) → fit → finish (tables,
MLflow parent run)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from mlflow.entities import Metric
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from tuner.cluster import check_cluster_inputs, cluster_reason
from tuner.outcome import best_trial, is_finite_number
from tuner.plan import SweepPlan, TrackingIds, ensure_ray, plan_sweep, read_plan, write_plan
from tuner.principles import Verdict, counts, principles_markdown, verdict_frame, verdicts
from tuner.progress import ProgressPrinter
from tuner.report import write_report
from tuner.schedule import NonFiniteStopper, ResumableASHA, SchedulerState, StorageGuard, make_scheduler
from tuner.search import TruthfulOptunaSearch, distributions, make_sampler, study_storage, with_sources
from tuner.space import SearchSpace
from tuner.storage import is_storage_full, low_space_reason, prune_checkpoints, repair_state, results_dir
from tuner.table import pareto_front, regime_row, to_markdown, trials_frame
from tuner.tracking import (
    MlflowTrialLogger,
    call_with_retry,
    default_tracking_uri,
    end_sweep_run,
    log_principles,
    log_report,
    mark_interrupted,
    metric_histories,
    parent_run_experiment_path,
    reopen_sweep_run,
    start_sweep_run,
    tracking_wait_s,
)
from tuner.trial import make_trainable
from tuner.validation import TunerInputError


# ---- building --------------------------------------------------------------------------------------
def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _local_folders(plan: SweepPlan) -> list[Path]:
    """The local folders a sweep writes to: results (tables, default stores) and its Ray storage."""
    return [results_dir()] + ([] if "://" in plan.storage else [Path(plan.storage)])


def _trial_callbacks(plan: SweepPlan, ids: TrackingIds, total: int, replicate: bool = False) -> list[Any]:
    """The storage guard, the trial logger (MLflow child runs) and the progress printer of one of the sweep's
    Ray experiments."""
    family = plan.family
    experiment = f"{plan.experiment_path}-replicates" if replicate else plan.experiment_path
    return [StorageGuard(_local_folders(plan), None if "://" in experiment else Path(experiment)),
            MlflowTrialLogger(plan.tracking_uri, ids.experiment_id, ids.parent_run_id, metric=family.metric,
                              max_reports=plan.max_reports, resolve=plan.resolve, classify=family.classify,
                              wait_s=tracking_wait_s(), replicate=replicate),
            ProgressPrinter(family.metric, plan.max_reports, total, family.mode)]


def _trainable(plan: SweepPlan) -> Any:
    return make_trainable(plan.space, plan.base, plan.family.resources[plan.scale].as_dict())


def _tuner_from_plan(plan: SweepPlan, ids: TrackingIds) -> tune.Tuner:
    family, space = plan.family, plan.search_space
    metric, mode, max_t = family.metric, family.mode, plan.max_reports
    objectives = space.objectives_of(family)
    scheduler = make_scheduler(plan.scheduler, space, metric, mode, max_t)
    if space.params:
        many = len(objectives) > 1
        search_alg = TruthfulOptunaSearch(
            space=distributions(space), max_t=max_t, constraints=space.scales[plan.scale].constraints,
            metric=[o.metric for o in objectives] if many else metric,
            mode=[o.mode for o in objectives] if many else mode,
            sampler=make_sampler(space, plan.searcher, plan.priors, plan.seed, plan.prior_rule),
            storage=study_storage(plan.study_storage) if plan.study_storage else None, study_name=plan.name,
            points_to_evaluate=[dict(w.params) for w in space.warm_starts][:plan.samples] or None)
    else:
        search_alg = None  # everything pinned: repeat the one configuration
    # rungs saved with Ray's state
    kept = [SchedulerState(scheduler, search_alg)] if isinstance(scheduler, ResumableASHA) else []
    return tune.Tuner(
        _trainable(plan),
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler,
            num_samples=plan.samples, max_concurrent_trials=plan.max_concurrent, reuse_actors=True,
            trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=plan.name, storage_path=plan.storage, stop=NonFiniteStopper(metric), verbose=0,
            callbacks=kept + _trial_callbacks(plan, ids, plan.samples),
            failure_config=tune.FailureConfig(max_failures=plan.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None)))  # all: see storage.prune_checkpoints


class _OneLineWhenDiskFull(logging.Filter):
    """Ray's and MLflow's log lines for a write that found the disk full, without their tracebacks: the sweep
    says once why it stops (`StorageGuard`); a page of stack per failed write would bury that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and is_storage_full(record.exc_info[1]):
            record.msg = f"{record.getMessage()} {str(record.exc_info[1]).splitlines()[0]}"
            record.args, record.exc_info, record.exc_text, record.stack_info = None, None, None, None
        elif "Traceback" in str(record.msg) and is_storage_full(OSError(str(record.msg))):  # a traceback as text
            lines = [line for line in record.getMessage().splitlines() if line.strip()]
            record.msg, record.args = f"{lines[0]} {lines[-1]}", None
        return True


# the loggers that print a traceback for each write refused by a full disk
DISK_FULL_LOGGERS = ("ray.tune.execution.experiment_state", "ray.train._internal.syncer", "mlflow.store.db.utils")


def _environment() -> None:
    for name in DISK_FULL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLineWhenDiskFull) for f in logger.filters):
            logger.addFilter(_OneLineWhenDiskFull())
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files per trial
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # we checkpoint each report
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # without the per-trial CSV/JSON files it warns once per trial; results come from the trials themselves
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # Ray's note that a local cluster uses token authentication would stand before our first line
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # replicates pass their configs as points over constant defaults, which it warns about once per point
    logging.getLogger("ray.tune.search.variant_generator").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # experiment state stored every 2 s: a resume loses little
    # MLflow's HTTP client would retry for minutes inside the Tune loop; the trial logger buffers and retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


@dataclass(frozen=True)
class Sweep:
    """A built sweep: the configured Tuner (open to customization), its plan and its MLflow ids."""

    tuner: tune.Tuner
    plan: SweepPlan
    ids: TrackingIds


def build(space: str | Path | SearchSpace, *, run_tags: Mapping[str, str] | None = None, **options: Any) -> Sweep:
    """Plan (validation only), then write the parent run (with `run_tags` added, e.g. a campaign's parent) and
    the plan file, then build the Tuner. Options as for `sweep`."""
    _environment()
    plan = plan_sweep(space, **options)
    print(f"scale: {plan.scale} ({plan.scale_reason})", flush=True)
    tags = {"space": plan.space["name"], "scale": plan.scale, "seed": str(plan.seed), "searcher": plan.searcher,
            "priors": str(plan.priors).lower(), "prior_rule": plan.prior_rule, "scheduler": plan.scheduler,
            "git_commit": _git_commit(),
            "experiment_path": plan.experiment_path, "mlflow.note.content": plan.space["description"],
            **(run_tags or {})}
    params = {"scale": plan.scale, "samples": plan.samples, **{f"fixed.{k}": v for k, v in plan.space["fixed"].items()},
              **{f"set.{k}": v for k, v in plan.overrides.items()}}
    experiment_id, run_id = call_with_retry(
        lambda: start_sweep_run(plan.tracking_uri, plan.family.name, plan.name, tags, params),
        "MLflow: creating the sweep's parent run", tracking_wait_s())
    ids = TrackingIds(experiment_id=experiment_id, parent_run_id=run_id)
    write_plan(plan, ids)
    return Sweep(tuner=_tuner_from_plan(plan, ids), plan=plan, ids=ids)


# ---- fitting ---------------------------------------------------------------------------------------
def _sentinel_sigint(sig: int, frame: Any) -> None:
    signal.default_int_handler(sig, frame)


def fit(tuner: tune.Tuner) -> tuple[tune.ResultGrid, bool]:
    """`tuner.fit()`, and whether Ctrl-C cut it short. During fit Ray swaps in its own SIGINT handler and,
    on Ctrl-C, puts back the one it found: finding our sentinel back afterwards means Ray caught one."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _sentinel_sigint) if in_main else None
    try:
        results = tuner.fit()
    finally:
        caught = in_main and signal.getsignal(signal.SIGINT) is _sentinel_sigint
        if in_main:
            signal.signal(signal.SIGINT, previous)
    return results, caught


# ---- finishing -------------------------------------------------------------------------------------
@dataclass
class SweepOutcome:
    """What a sweep produced. An interrupted sweep has no tables yet (`table`, `trials` None): resume it.
    `failure` says why a sweep that ended produced no result (no trial reported a finite metric)."""

    results: tune.ResultGrid
    table: pd.DataFrame | None
    trials: pd.DataFrame | None
    parent_run_id: str
    table_path: Path
    plan: SweepPlan
    interrupted: bool = False
    stopped_for: str | None = None  # why an interrupted sweep stopped, when not for a Ctrl-C (a disk running full)
    failure: str | None = None
    replicates: pd.DataFrame | None = None  # the replicate phase's trials (best configs on further draws)


def _interrupted(results: tune.ResultGrid, plan: SweepPlan, ids: TrackingIds, out: Path) -> SweepOutcome:
    """A sweep cut short: its runs are marked interrupted (not left RUNNING); `resume` continues it."""
    try:  # briefly: a user who pressed Ctrl-C should not wait for a tracking server that is down
        call_with_retry(lambda: mark_interrupted(plan.tracking_uri, ids.experiment_id, ids.parent_run_id),
                        "MLflow: marking the sweep interrupted", min(10.0, tracking_wait_s()))
    except Exception as err:
        print(f"warning: MLflow did not take the interruption ({err}); resume reopens the runs", flush=True)
    low_space = next((r for r in map(low_space_reason, _local_folders(plan)) if r), None)
    return SweepOutcome(results=results, table=None, trials=None, parent_run_id=ids.parent_run_id,
                        table_path=out / "regime_table.md", plan=plan, interrupted=True, stopped_for=low_space)


def replicate_configs(plan: SweepPlan, trials: pd.DataFrame) -> list[dict[str, Any]]:
    """The best `replicate_top` trials' parameters, each on `replicates` further data draws (draw + 1, + 2, ...)."""
    family = plan.family
    column = f"metric.{family.metric}"
    finite = trials[np.isfinite(pd.to_numeric(trials[column], errors="coerce"))]
    top = finite.sort_values(column, ascending=family.mode == "min").head(plan.replicate_top)
    names = [c for c in trials.columns if c.startswith("param.")]
    configs = []
    for _, row in top.iterrows():
        tuned = {c.removeprefix("param."): getattr(row[c], "item", lambda v=row[c]: v)() for c in names}
        draw = plan.resolve(tuned)[family.draw]
        configs += [{**tuned, family.draw: draw + i} for i in range(1, plan.replicates + 1)]
    return configs


def _replicate(plan: SweepPlan, ids: TrackingIds, trials: pd.DataFrame) -> tuple[tune.ResultGrid, bool]:
    """Re-run the best configs on further data draws as a second Ray experiment beside the sweep's (child runs
    tagged replicate=true); a restarted driver continues it."""
    family, path = plan.family, f"{plan.experiment_path}-replicates"
    _repair(path)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=_trainable(plan), resume_unfinished=True, resume_errored=False)
    else:
        configs = replicate_configs(plan, trials)
        print(f"replicates: the best {plan.replicate_top} config(s) on {plan.replicates} further draws of "
              f"{family.draw}", flush=True)
        tuner = tune.Tuner(
            _trainable(plan), param_space=dict(configs[0]),
            tune_config=tune.TuneConfig(search_alg=BasicVariantGenerator(points_to_evaluate=configs),
                                        num_samples=len(configs), max_concurrent_trials=plan.max_concurrent,
                                        reuse_actors=True, trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(
                name=path.rsplit("/", 1)[-1], storage_path=plan.storage, stop=NonFiniteStopper(family.metric),
                verbose=0, failure_config=tune.FailureConfig(max_failures=plan.max_failures),
                callbacks=_trial_callbacks(plan, ids, len(configs), replicate=True)))
    return fit(tuner)


def finish(results: tune.ResultGrid, plan: SweepPlan, ids: TrackingIds, interrupted: bool = False) -> SweepOutcome:
    """Tabulate a fitted sweep (after its replicate phase, if any): regime row to results/<space>/<sweep>/ and
    to the MLflow parent run, which ends FINISHED, or FAILED when no trial produced the metric. An interrupted
    sweep (or one with trials still missing) is left open for `resume`."""
    family, space = plan.family, plan.search_space
    out = results_dir() / space.name / plan.name
    if interrupted or len(results) < plan.samples:
        return _interrupted(results, plan, ids, out)
    trials = trials_frame(results, family, plan.max_reports, plan.resolve)
    if plan.study_storage:
        trials = with_sources(trials, plan.study_storage, plan.name)
    best = best_trial(trials, family.metric, family.mode)
    replicates = None
    if plan.replicates and best is not None:
        replicate_results, cut = _replicate(plan, ids, trials)
        if cut:
            return _interrupted(results, plan, ids, out)
        replicates = trials_frame(replicate_results, family, plan.max_reports, plan.resolve)
    table = pd.DataFrame([regime_row(space, family, trials, sweep=plan.name, scale=plan.scale, base=plan.base,
                                     replicates=replicates, overrides=plan.overrides)])
    out.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out / "regime_table.parquet")
    (out / "regime_table.md").write_text(to_markdown(table) + "\n")
    trials.to_parquet(out / "trials.parquet")
    if replicates is not None:
        replicates.to_parquet(out / "replicates.parquet")
    extra_tables = {}
    objectives = space.objectives_of(family)
    if len(objectives) > 1:
        pareto = pareto_front(trials, objectives, space.scales[plan.scale].constraints)
        pareto.to_parquet(out / "pareto_front.parquet")
        (out / "pareto_front.md").write_text(to_markdown(pareto) + "\n")
        extra_tables["pareto_front"] = (pareto, to_markdown(pareto))
    prune_checkpoints(plan.experiment_path, set(trials["trial_id"]))
    judged = verdicts(space, trials.assign(scale=plan.scale), family)
    principles_md = principles_markdown(space, judged, f"{plan.name}: {space.name} at scale {plan.scale}")
    (out / "principles.md").write_text(principles_md)
    report = write_sweep_report(plan, ids, table, trials, judged)
    summary = {"n_trials": len(trials),
               f"{family.success}_share": float((trials["outcome"] == family.success).mean()),
               "compute_min": float(trials["time_total_s"].sum()) / 60}
    failure = None if best is not None else table["Key finding"].iloc[0]
    best_params = {}
    if best is not None:
        summary[f"best_{family.metric}"] = float(best[f"metric.{family.metric}"])
        summary |= {f"best.{c.removeprefix('metric.')}": float(best[c]) for c in trials.columns
                    if c.startswith("metric.") and is_finite_number(best[c])}
        best_params = {f"best.{c.removeprefix('param.')}": best[c] for c in trials.columns if c.startswith("param.")}
    stamp = int(time.time() * 1000)  # fixed, so that a retried send stores nothing twice
    metrics = [Metric(k, v, stamp, 0) for k, v in summary.items()]
    try:
        call_with_retry(lambda: (log_report(plan.tracking_uri, ids.parent_run_id, report),
                                 log_principles(plan.tracking_uri, ids.parent_run_id,
                                                [v.model_dump() for v in judged], verdict_frame(judged),
                                                principles_md, counts(judged)),
                                 end_sweep_run(plan.tracking_uri, ids.parent_run_id, table, to_markdown(table),
                                               metrics, failure, extra_tables, best_params)),
                        "MLflow: logging the regime table and the report", tracking_wait_s())
    except Exception as err:  # the sweep is done and tabulated in `out`; only MLflow is missing it
        print(f"warning: MLflow did not take the regime table ({err}). It is in {out}; once the server is "
              f"back, send it with: python -m tuner resume {plan.experiment_path}", flush=True)
    return SweepOutcome(results=results, table=table, trials=trials, parent_run_id=ids.parent_run_id,
                        table_path=out / "regime_table.md", plan=plan, failure=failure, replicates=replicates)


def write_sweep_report(plan: SweepPlan, ids: TrackingIds, table: pd.DataFrame, trials: pd.DataFrame,
                       judged: list[Verdict] | None = None) -> Path:
    """results/<space>/<sweep>/report.html from the sweep's tables, its trials' learning curves (from MLflow;
    without them when the tracking server cannot be reached) and the verdicts on its principles (`judged`, else
    judged here)."""
    family, space = plan.family, plan.search_space
    if judged is None:
        judged = verdicts(space, trials.assign(scale=plan.scale), family)
    try:
        histories = metric_histories(plan.tracking_uri, ids.experiment_id, ids.parent_run_id, family.metric)
    except Exception as err:  # the page is still worth having; it says what is missing
        print(f"warning: learning curves left out of the report, MLflow did not answer ({err})", flush=True)
        histories = pd.DataFrame(columns=["trial_id", "step", "value"])
    return write_report(results_dir() / space.name / plan.name / "report.html",
                        title=f"{plan.name}: {space.name} at scale {plan.scale}", space=space, metric=family.metric,
                        mode=family.mode, objectives=space.objectives_of(family),
                        constraints=space.scales[plan.scale].constraints, table=table, trials=trials,
                        histories=histories, verdicts=judged)


def regenerate_report(path_or_run: str, tracking_uri: str | None = None) -> Path:
    """`tuner report`: rebuild a finished sweep's report from its Ray experiment folder (or its MLflow parent
    run id), write it beside its tables and log it to the parent run again."""
    location = path_or_run
    if "://" not in path_or_run and not Path(path_or_run).exists():  # a parent run id
        location = parent_run_experiment_path(tracking_uri or default_tracking_uri(), path_or_run)
    plan, ids = read_plan(location)
    folder = results_dir() / plan.search_space.name / plan.name
    if not (folder / "trials.parquet").exists():
        raise TunerInputError(f"report: {folder} holds no trials.parquet; has the sweep finished? "
                              f"(python -m tuner resume {plan.experiment_path})")
    table, trials = pd.read_parquet(folder / "regime_table.parquet"), pd.read_parquet(folder / "trials.parquet")
    path = write_sweep_report(plan, ids, table, trials)
    call_with_retry(lambda: log_report(plan.tracking_uri, ids.parent_run_id, path), "MLflow: logging the report",
                    tracking_wait_s())
    return path


def _fit_and_finish(tuner: tune.Tuner, plan: SweepPlan, ids: TrackingIds) -> SweepOutcome:
    """Fit, then finish; a Ctrl-C while finishing leaves the sweep interrupted (resume finishes it)."""
    results, interrupted = fit(tuner)
    try:
        return finish(results, plan, ids, interrupted)
    except KeyboardInterrupt:
        return finish(results, plan, ids, interrupted=True)


def sweep(space: str | Path | SearchSpace, **options: Any) -> SweepOutcome:
    """Run a sweep end to end. Options: scale, samples, overrides (["k=v"] or dict), searcher
    ("tpe"|"random"|"tree"), priors, prior_rule ("adaptive"|"fixed"), scheduler ("asha"|"none"), max_concurrent,
    seed, name, storage, tracking_uri, address, replicates, run_tags (added to the parent run). Returns the ResultGrid, the regime table, the trials and the parent run id."""
    built = build(space, **options)
    return _fit_and_finish(built.tuner, built.plan, built.ids)


def _repair(experiment: str) -> None:
    """Before a restore: put back the last complete save of a local experiment's Ray state when a full disk
    truncated it (the set `StorageGuard` kept); refuse to resume from one that cannot be put back."""
    if "://" in experiment or not Path(experiment).is_dir():
        return
    repaired, broken = repair_state(Path(experiment))
    if repaired:
        print(f"resume: Ray's state was cut short by a full disk; using its last complete save "
              f"({', '.join(repaired)}): trials asked after it are asked again", flush=True)
    if broken:
        raise TunerInputError(f"resume: {experiment}: {', '.join(broken)} cut short (a full disk?) and no complete "
                              f"copy kept; the trials' checkpoints and MLflow runs are intact, but Ray cannot "
                              f"continue this experiment")


def resume(experiment_path: str, address: str | None = None) -> SweepOutcome:
    """Continue an interrupted sweep from its Ray experiment folder (local path or URI)."""
    _environment()
    plan, ids = read_plan(experiment_path)
    problem = next((r for r in map(low_space_reason, _local_folders(plan)) if r), None)
    if problem:
        raise TunerInputError(f"resume: {problem}; free space first")
    _repair(plan.experiment_path)
    ensure_ray(address)
    cluster = cluster_reason(address)
    if cluster:
        check_cluster_inputs(plan.storage, plan.tracking_uri, plan.study_storage, cluster)
    if not tune.Tuner.can_restore(plan.experiment_path):
        raise TunerInputError(f"resume: {experiment_path} has no restorable Ray Tune state")
    # errored trials stay errored: a resume continues what was cut short, it does not re-run failures
    tuner = tune.Tuner.restore(plan.experiment_path, trainable=_trainable(plan), resume_unfinished=True,
                               resume_errored=False)
    call_with_retry(lambda: reopen_sweep_run(plan.tracking_uri, ids.parent_run_id), "MLflow: reopening the sweep",
                    tracking_wait_s())
    return _fit_and_finish(tuner, plan, ids)
