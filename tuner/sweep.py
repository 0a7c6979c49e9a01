"""Sweeps on Ray Tune: plan (validate everything, write nothing), build the Tuner, run, tabulate.

Order matters for bad input: every check runs in `plan_sweep` before the first write (MLflow run,
results folder, Ray experiment folder), so a refused sweep leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from pyarrow import fs as pafs
from ray import tune

from tuner.cluster import CLUSTER_MAX_FAILURES, check_cluster_inputs, cluster_reason
from tuner.family import SCALES, Family, get_family
from tuner.progress import ProgressPrinter
from tuner.schedule import SCHEDULERS, NonFiniteStopper, make_scheduler
from tuner.search import SEARCHERS, TruthfulOptunaSearch, distributions, make_sampler
from tuner.settings import TunerInputError, close_names, parse_set_args, validate_settings
from tuner.space import CategoricalParam, IntParam, SearchSpace, load_space
from tuner.table import regime_row, to_markdown
from tuner.tracking import MlflowTrialLogger, call_with_retry, check_tracking_uri, tracking_wait_s

PLAN_FILE = "tuner_sweep.json"
ROW_ARTIFACT = "regime_row.json"


def results_dir() -> Path:
    """Where tables (and, by default, the MLflow store and Ray experiments) go: ./results."""
    return Path(os.environ.get("TUNER_RESULTS", "results")).absolute()


def default_tracking_uri() -> str:
    return f"sqlite:///{results_dir() / 'mlflow.db'}"


@dataclass
class SweepPlan:
    """Everything needed to build (or rebuild, on resume) a sweep. Stored as JSON beside the experiment."""

    space: dict[str, Any]  # the validated, pinned space
    scale: str
    scale_reason: str
    base: dict[str, Any]  # fixed + scale knobs + user overrides
    samples: int
    searcher: str
    priors: bool
    scheduler: str
    max_concurrent: int | None
    seed: int
    name: str
    storage: str
    tracking_uri: str
    overrides: dict[str, str] = field(default_factory=dict)
    parent_run_id: str = ""
    experiment_id: str = ""
    max_failures: int = 0  # retries per trial from its last checkpoint (cluster mode: node loss)

    @cached_property
    def search_space(self) -> SearchSpace:
        return SearchSpace.model_validate(self.space)

    @cached_property
    def family(self) -> Family:
        return get_family(self.space["family"])

    @property
    def experiment_path(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"

    @cached_property
    def max_reports(self) -> int:
        return int(self.family.settings.model_validate(self.resolve(self.search_space.prior_centers())).n_reports)

    def resolve(self, tuned: Mapping[str, Any]) -> dict[str, Any]:
        """Every family setting (defaults included) of the trial with tuned parameters `tuned`."""
        family = self.family
        return family.settings.model_validate(self.search_space.resolve(self.base, tuned, family)).model_dump()


# ---- planning: validation only ------------------------------------------------------------------
def _coerce_pin(space: SearchSpace, key: str, raw: str) -> Any:
    """A `--set` value for a tunable parameter, typed and checked against its range."""
    p = space.params[key]
    if isinstance(p, CategoricalParam):
        for choice in p.choices:
            if str(choice).lower() == raw.lower():
                return choice
        raise TunerInputError(f"--set {key}: {raw!r} is not one of the choices {p.choices}")
    try:
        value: Any = int(raw) if isinstance(p, IntParam) else float(raw)
    except ValueError:
        raise TunerInputError(f"--set {key}: {raw!r} is not a number") from None
    if not p.low <= value <= p.high:
        raise TunerInputError(f"--set {key}: {value} is outside the space's range [{p.low}, {p.high}]")
    return value


def _ensure_ray(address: str | None) -> None:
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 logging_level="WARNING", log_to_driver=True)


def choose_scale(scale: str | None) -> tuple[str, str]:
    """The scale and the reason: `full` when the Ray cluster has GPUs, else `cpu`, unless given."""
    if scale is not None:
        return scale, "chosen with --scale"
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus > 0:
        return "full", f"the Ray cluster has {gpus:g} GPU(s)"
    return "cpu", "the Ray cluster has no GPU"


def plan_sweep(space: str | Path | SearchSpace, *, scale: str | None = None, samples: int | None = None,
               overrides: Mapping[str, str] | list[str] | None = None, searcher: str = "tpe", priors: bool = True,
               scheduler: str = "asha", max_concurrent: int | None = None, seed: int = 0, name: str | None = None,
               storage: str | None = None, tracking_uri: str | None = None, address: str | None = None) -> SweepPlan:
    """Validate every input and decide every default. Writes nothing (it may start Ray)."""
    sp = space if isinstance(space, SearchSpace) else load_space(space)
    family = get_family(sp.family)
    if scale is not None and scale not in SCALES:
        raise TunerInputError(f"--scale: {scale!r} is not a scale; allowed: {', '.join(SCALES)}")
    if searcher not in SEARCHERS:
        raise TunerInputError(f"--searcher: {searcher!r} is not a searcher; allowed: {', '.join(SEARCHERS)}")
    if scheduler not in SCHEDULERS:
        raise TunerInputError(f"--scheduler: {scheduler!r} is not a scheduler; allowed: {', '.join(SCHEDULERS)}")
    if samples is not None and samples < 1:
        raise TunerInputError(f"--samples: must be at least 1 (got {samples})")
    if max_concurrent is not None and max_concurrent < 1:
        raise TunerInputError(f"--max-concurrent: must be at least 1 (got {max_concurrent})")
    raw = parse_set_args(overrides) if isinstance(overrides, list) else dict(overrides or {})
    fields = set(family.settings.model_fields)
    for key in raw:
        if key not in fields and key not in sp.params:
            raise TunerInputError(f"--set: unknown key {key!r}.{close_names(key, fields | set(sp.params))} "
                                  f"Known {family.name} settings: {', '.join(sorted(fields))}")
    pins = {k: _coerce_pin(sp, k, v) for k, v in raw.items() if k in sp.params}
    settings_overrides = {k: v for k, v in raw.items() if k not in sp.params}
    sp = sp.pin(pins)
    if not priors:
        sp = sp.model_copy(update={"warm_starts": []})
    for candidate in [scale] if scale else SCALES:  # settings errors surface before Ray starts
        scaled = sp.at_scale(candidate)
        for cfg in [scaled.prior_centers()] + [w.params for w in scaled.warm_starts]:
            validate_settings(family.settings, sp.resolve(sp.base_settings(candidate, settings_overrides), cfg, family),
                              where="--set")
    tracking_uri = tracking_uri or default_tracking_uri()
    try:
        check_tracking_uri(tracking_uri)
    except ConnectionError as err:
        raise TunerInputError(f"--tracking-uri: {err}") from None

    _ensure_ray(address)
    storage = storage or str(results_dir() / "ray")
    cluster = cluster_reason(address)
    if cluster:
        check_cluster_inputs(storage, tracking_uri, cluster)
    scale, reason = choose_scale(scale)
    sp = sp.at_scale(scale)
    plan = SweepPlan(space=sp.model_dump(mode="json"), scale=scale, scale_reason=reason,
                     base=sp.base_settings(scale, settings_overrides), samples=samples or sp.scales[scale].samples,
                     searcher=searcher, priors=priors, scheduler=scheduler, max_concurrent=max_concurrent, seed=seed,
                     name=name or f"{sp.name}-{scale}-{time.strftime('%Y%m%d-%H%M%S')}",
                     storage=storage, tracking_uri=tracking_uri, overrides=raw,
                     max_failures=CLUSTER_MAX_FAILURES if cluster else 0)
    fs, path = pafs.FileSystem.from_uri(plan.experiment_path if "://" in plan.storage
                                        else str(Path(plan.experiment_path).absolute()))
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        raise TunerInputError(f"--name: experiment {plan.experiment_path} already exists; "
                              f"continue it with: python -m tuner resume {plan.experiment_path}")
    return plan


# ---- building --------------------------------------------------------------------------------------
class RaySession:
    """The `Session` a family sees inside a Ray trial: reports and checkpoints go through ray.tune."""

    def __init__(self) -> None:
        ckpt = tune.get_checkpoint()
        self._checkpoint = Path(ckpt.to_directory()) if ckpt is not None else None

    @property
    def checkpoint(self) -> Path | None:
        return self._checkpoint

    def report(self, metrics: Mapping[str, float], save: Any = None) -> None:
        result = {**metrics, "ray_gpus": float(len(ray.get_gpu_ids()))}  # GPUs Ray assigned to this trial
        if save is None:
            tune.report(result)
            return
        with tempfile.TemporaryDirectory() as d:
            save(Path(d))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))


def make_trainable(plan: SweepPlan) -> Any:
    """The Ray function trainable: resolve the trial's settings, run the family, with its resources."""
    family_name, space_data, base = plan.space["family"], plan.space, plan.base

    def trial(config: dict[str, Any]) -> None:
        logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per report
        family = get_family(family_name)
        space = SearchSpace.model_validate(space_data)
        settings = family.settings.model_validate(space.resolve(base, config, family))
        family.run(settings, RaySession())

    trial.__name__ = family_name
    resources = plan.family.resources[plan.scale].as_dict()
    return tune.with_resources(trial, resources)


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _start_tracking(plan: SweepPlan) -> None:
    """Create the family's experiment and the sweep's parent run (the first write of a sweep)."""
    artifacts = None  # a server decides; beside a sqlite file, not in ./mlruns of whatever the cwd is
    if plan.tracking_uri.startswith("sqlite:///"):
        store = Path(plan.tracking_uri.removeprefix("sqlite:///")).parent
        store.mkdir(parents=True, exist_ok=True)
        artifacts = (store / "mlartifacts" / plan.family.name).as_uri()
    client = MlflowClient(plan.tracking_uri)
    exp = client.get_experiment_by_name(plan.family.name)
    plan.experiment_id = exp.experiment_id if exp else client.create_experiment(plan.family.name, artifacts)
    run = client.create_run(plan.experiment_id, run_name=plan.name, tags={
        "tuner.kind": "sweep", "space": plan.space["name"], "scale": plan.scale, "seed": str(plan.seed),
        "searcher": plan.searcher, "priors": str(plan.priors).lower(), "scheduler": plan.scheduler,
        "git_commit": _git_commit(), "experiment_path": plan.experiment_path,
        "mlflow.note.content": plan.space["description"]})
    plan.parent_run_id = run.info.run_id


def _write_plan(plan: SweepPlan) -> None:
    fs, path = pafs.FileSystem.from_uri(plan.experiment_path if "://" in plan.storage
                                        else str(Path(plan.experiment_path).absolute()))
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{PLAN_FILE}") as out:
        out.write(json.dumps(asdict(plan), indent=2, default=str).encode())


def read_plan(experiment_path: str) -> SweepPlan:
    """The plan stored beside a Ray experiment (local path or URI)."""
    target = experiment_path if "://" in experiment_path else str(Path(experiment_path).absolute())
    fs, path = pafs.FileSystem.from_uri(target)
    try:
        with fs.open_input_stream(f"{path.rstrip('/')}/{PLAN_FILE}") as f:
            return SweepPlan(**json.loads(f.read().decode()))
    except (FileNotFoundError, OSError):
        raise TunerInputError(f"resume: {experiment_path} holds no {PLAN_FILE}; is it a tuner sweep folder?") from None


def _callbacks(plan: SweepPlan) -> list[Any]:
    family = plan.family
    return [
        MlflowTrialLogger(plan.tracking_uri, plan.experiment_id, plan.parent_run_id, metric=family.metric,
                          max_reports=plan.max_reports, resolve=plan.resolve, classify=family.classify,
                          run_prefix=plan.space["name"], wait_s=tracking_wait_s()),
        ProgressPrinter(family.metric, plan.max_reports, plan.samples),
    ]


def _tuner_from_plan(plan: SweepPlan) -> tune.Tuner:
    family, space = plan.family, plan.search_space
    metric, mode, max_t = family.metric, family.mode, plan.max_reports
    if space.params:
        search_alg = TruthfulOptunaSearch(
            space=distributions(space), metric=metric, mode=mode, max_t=max_t,
            sampler=make_sampler(space, plan.searcher, plan.priors, plan.seed),
            points_to_evaluate=[dict(w.params) for w in space.warm_starts][:plan.samples] or None)
    else:
        search_alg = None  # everything pinned: repeat the one configuration
    return tune.Tuner(
        make_trainable(plan),
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=make_scheduler(plan.scheduler, space, metric, mode, max_t),
            num_samples=plan.samples, max_concurrent_trials=plan.max_concurrent, reuse_actors=True,
            trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=plan.name, storage_path=plan.storage, stop=NonFiniteStopper(metric), verbose=0,
            callbacks=_callbacks(plan), failure_config=tune.FailureConfig(max_failures=plan.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None)))  # all: see _tidy_storage


def _environment() -> None:
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files per trial
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # we checkpoint each report
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # without the per-trial CSV/JSON files it warns once per trial; results come from the trials themselves
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # experiment state stored every 2 s: a resume loses little
    # MLflow's HTTP client would retry for minutes inside the Tune loop; the trial logger buffers and retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def build(space: str | Path | SearchSpace, **options: Any) -> tuple[tune.Tuner, SweepPlan]:
    """Plan, then write the parent run and the plan file, then build the Tuner."""
    _environment()
    plan = plan_sweep(space, **options)
    print(f"scale: {plan.scale} ({plan.scale_reason})", flush=True)
    call_with_retry(lambda: _start_tracking(plan), "MLflow: creating the sweep's parent run", tracking_wait_s())
    _write_plan(plan)
    return _tuner_from_plan(plan), plan


def build_tuner(space: str | Path | SearchSpace, **options: Any) -> tune.Tuner:
    """A configured `ray.tune.Tuner` for `space` (same options as `sweep`), open to customization.

    Run it with `fit(tuner)`, then `finish(results, experiment_path, interrupted)` writes the regime table."""
    return build(space, **options)[0]


# ---- finishing -------------------------------------------------------------------------------------
@dataclass
class SweepOutcome:
    results: tune.ResultGrid
    table: pd.DataFrame
    trials: pd.DataFrame
    parent_run_id: str
    table_path: Path
    plan: SweepPlan
    interrupted: bool = False

    @property
    def best(self) -> dict[str, Any]:
        return self.table.iloc[0].to_dict()


def trials_frame(results: tune.ResultGrid, plan: SweepPlan) -> pd.DataFrame:
    """One row per trial: status, outcome, tuned params, resolved settings, last metrics."""
    family = plan.family
    rows = []
    for r in results:
        m = dict(r.metrics or {})
        value = m.get(family.metric)
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        if r.error is not None:
            status = "error"
        elif not finite or m.get("diverged", 0):
            status = "diverged"
        elif m.get("training_iteration", 0) < plan.max_reports:
            status = "pruned"
        else:
            status = "finished"
        metrics = {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        row = {"trial_id": m.get("trial_id", r.path.rsplit("/", 1)[-1] if r.path else ""), "status": status,
               "outcome": family.classify(metrics) if metrics else "error",
               "reports": m.get("training_iteration", 0), "time_total_s": m.get("time_total_s", 0.0)}
        row.update({f"param.{k}": v for k, v in r.config.items()})
        row.update({f"setting.{k}": v for k, v in plan.resolve(r.config).items()})
        row.update({f"metric.{k}": v for k, v in metrics.items()})
        rows.append(row)
    return pd.DataFrame(rows)


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


def _log_parent(plan: SweepPlan, table: pd.DataFrame, metrics: list[Metric]) -> None:
    """The regime row, its markdown and the summary metrics on the parent run, then end it FINISHED.
    A parent run already FINISHED (a resumed sweep that had ended) is left as it is."""
    client = MlflowClient(plan.tracking_uri)
    if client.get_run(plan.parent_run_id).info.status == "FINISHED":
        return
    client.log_table(plan.parent_run_id, table.astype(str), ROW_ARTIFACT)
    client.log_text(plan.parent_run_id, to_markdown(table), "regime_table.md")
    client.log_batch(plan.parent_run_id, metrics=metrics)
    client.set_terminated(plan.parent_run_id, "FINISHED")


def _tidy_storage(experiment_path: str, trial_ids: set[str]) -> None:
    """Keep each trial's last checkpoint only, and drop the folders of lost trials (started after the last
    experiment state a killed driver stored). While a sweep runs, every checkpoint is kept: Ray deletes an
    old one before the experiment state that stops pointing at it is stored, so after a killed driver a
    trial could otherwise have to resume from a checkpoint that is gone."""
    fs, root = pafs.FileSystem.from_uri(experiment_path if "://" in experiment_path
                                        else str(Path(experiment_path).absolute()))
    for folder in fs.get_file_info(pafs.FileSelector(root)):
        if folder.type != pafs.FileType.Directory:
            continue
        saved = sorted(c.path for c in fs.get_file_info(pafs.FileSelector(folder.path))
                       if c.base_name.startswith("checkpoint_"))
        if folder.base_name not in trial_ids:
            if saved:  # a lost trial's folder
                fs.delete_dir(folder.path)
            continue
        for path in saved[:-1]:
            fs.delete_dir(path)


def finish(results: tune.ResultGrid, experiment_path: str, interrupted: bool = False) -> SweepOutcome:
    """Tabulate a fitted sweep: regime row to results/<space>/<sweep>/ and to the MLflow parent run.
    An interrupted sweep (or one with trials still missing) is left open for `resume`."""
    plan = read_plan(experiment_path)
    family, space = plan.family, plan.search_space
    trials = trials_frame(results, plan)
    row = regime_row(space, family, trials, sweep=plan.name, scale=plan.scale, base=plan.base)
    table = pd.DataFrame([row])
    out = results_dir() / space.name / plan.name
    interrupted = interrupted or len(results) < plan.samples
    if not interrupted:
        out.mkdir(parents=True, exist_ok=True)
        table.to_parquet(out / "regime_table.parquet")
        (out / "regime_table.md").write_text(to_markdown(table) + "\n")
        trials.to_parquet(out / "trials.parquet")
        _tidy_storage(plan.experiment_path, set(trials["trial_id"]))
        finite = pd.to_numeric(trials[f"metric.{family.metric}"], errors="coerce")
        best = finite.max() if family.mode == "max" else finite.min()
        summary = {"n_trials": len(trials),
                   f"{family.success}_share": float((trials["outcome"] == family.success).mean()),
                   "compute_min": float(trials["time_total_s"].sum()) / 60}
        if math.isfinite(best):
            summary[f"best_{family.metric}"] = float(best)
        stamp = int(time.time() * 1000)  # fixed, so that a retried send stores nothing twice
        metrics = [Metric(k, v, stamp, 0) for k, v in summary.items()]
        try:
            call_with_retry(lambda: _log_parent(plan, table, metrics), "MLflow: logging the regime table",
                            tracking_wait_s())
        except Exception as err:  # the sweep is done and tabulated in `out`; only MLflow is missing it
            print(f"warning: MLflow did not take the regime table ({err}). It is in {out}; once the server is "
                  f"back, send it with: python -m tuner resume {plan.experiment_path}", flush=True)
    return SweepOutcome(results=results, table=table, trials=trials, parent_run_id=plan.parent_run_id,
                        table_path=out / "regime_table.md", plan=plan, interrupted=interrupted)


def sweep(space: str | Path | SearchSpace, **options: Any) -> SweepOutcome:
    """Run a sweep end to end. Options: scale, samples, overrides (["k=v"] or dict), searcher
    ("tpe"|"random"), priors, scheduler ("asha"|"none"), max_concurrent, seed, name, storage,
    tracking_uri, address. Returns the ResultGrid, the regime table, the trials and the parent run id."""
    tuner, plan = build(space, **options)
    results, interrupted = fit(tuner)
    return finish(results, plan.experiment_path, interrupted)


def resume(experiment_path: str, address: str | None = None) -> SweepOutcome:
    """Continue an interrupted sweep from its Ray experiment folder (local path or URI)."""
    _environment()
    plan = read_plan(experiment_path)
    _ensure_ray(address)
    cluster = cluster_reason(address)
    if cluster:
        check_cluster_inputs(plan.storage, plan.tracking_uri, cluster)
    if not tune.Tuner.can_restore(plan.experiment_path):
        raise TunerInputError(f"resume: {experiment_path} has no restorable Ray Tune state")
    tuner = tune.Tuner.restore(plan.experiment_path, trainable=make_trainable(plan), resume_unfinished=True,
                               resume_errored=True)
    results, interrupted = fit(tuner)
    return finish(results, plan.experiment_path, interrupted)
