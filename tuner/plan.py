"""The sweep plan: every input validated and every default decided before the first write, and the plan
file that lets `tuner resume` rebuild the same sweep.

Order matters for bad input: every check runs in `plan_sweep` before anything is written (MLflow run,
results folder, Ray experiment folder), so a refused sweep leaves nothing behind; and the checks that need
no cluster (`check_inputs`) run before Ray, MLflow or torch load, so they answer in about a second.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tuner.family import SCALES, Family, get_family
from tuner.space import CategoricalParam, IntParam, SearchSpace, load_space
from tuner.storage import exists, low_space_reason, read_text, results_dir, unwritable_reason, write_text
from tuner.validation import PRIOR_RULES, SCHEDULERS, SEARCHERS, TunerInputError, close_names, parse_set_args

PLAN_FILE = "tuner_sweep.json"


@dataclass(frozen=True)
class SweepPlan:
    """Everything needed to build (or rebuild, on resume) a sweep: a value, stored as JSON beside the experiment."""

    space: dict[str, Any]  # the validated, pinned space at its scale
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
    study_storage: str | None  # Optuna RDB storage URL (the study is named after the sweep); None: in memory
    overrides: dict[str, str] = field(default_factory=dict)
    replicates: int = 0  # further data draws each of the best `replicate_top` configs re-runs on
    replicate_top: int = 1
    max_failures: int = 0  # retries per trial from its last checkpoint (cluster mode: node loss)
    prior_rule: str = "adaptive"  # how tpe/random draw from the priors (tuner.search.make_sampler)

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
        """Reports of a trial that runs to the end (the prior centre's `n_reports`: a cost knob, same for all)."""
        return int(self.settings(self.search_space.prior_centers()).n_reports)

    def settings(self, tuned: Mapping[str, Any]) -> Any:
        """The validated family settings of the trial with tuned parameters `tuned`."""
        return self.search_space.trial_settings(self.base, tuned, self.family)

    def resolve(self, tuned: Mapping[str, Any]) -> dict[str, Any]:
        """Every family setting (defaults included) of the trial with tuned parameters `tuned`."""
        return self.settings(tuned).model_dump()


@dataclass(frozen=True)
class TrackingIds:
    """Where a sweep's MLflow records are: written once, when its parent run is created."""

    experiment_id: str
    parent_run_id: str


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


def ensure_ray(address: str | None) -> None:
    """Join the Ray cluster at `address` (or $RAY_ADDRESS), or start a local Ray."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        local = {} if address else {"runtime_env": {"worker_process_setup_hook":
                                                    "tuner.trial.ignore_terminal_interrupts"}}
        ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=True, **local)


def choose_scale(scale: str | None) -> tuple[str, str]:
    """The scale and the reason: `full` when the Ray cluster has GPUs, else `cpu`, unless given."""
    import ray

    if scale is not None:
        return scale, "chosen with --scale"
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus > 0:
        return "full", f"the Ray cluster has {gpus:g} GPU(s)"
    return "cpu", "the Ray cluster has no GPU"


def _check_gpus(family: Family, scale: str, settings: Any) -> None:
    """Refuse a sweep whose trials need a GPU that the local Ray does not have: they would wait or fail forever."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus > 0:
        return
    if getattr(settings, "device", None) == "cuda":
        raise TunerInputError("--set device=cuda: this Ray has no GPU, so every trial would fail; "
                              "allowed here: device=auto or device=cpu")
    if family.resources[scale].gpu > 0:
        raise TunerInputError(f"--scale {scale}: each {family.name} trial requests {family.resources[scale].gpu:g} "
                              f"GPU at this scale and this Ray has none; use --scale cpu (or smoke)")


@dataclass(frozen=True)
class CheckedInputs:
    """The user's sweep inputs once checked: the space (pinned, warm starts dropped without priors) and the
    `--set` values that are settings rather than pins."""

    space: SearchSpace
    family: Family
    overrides: dict[str, str]  # every --set pair, as given
    settings_overrides: dict[str, str]


def check_inputs(space: str | Path | SearchSpace, *, scale: str | None = None, samples: int | None = None,
                 overrides: Mapping[str, str] | list[str] | None = None, searcher: str = "tpe", priors: bool = True,
                 scheduler: str = "asha", max_concurrent: int | None = None,
                 replicates: int | None = None, prior_rule: str = "adaptive") -> CheckedInputs:
    """Check the space and every option against the family's schema. Loads neither Ray, MLflow nor torch,
    so bad input is answered in about a second."""
    raw = parse_set_args(overrides) if isinstance(overrides, list) else dict(overrides or {})
    sp = space if isinstance(space, SearchSpace) else load_space(space)
    family = get_family(sp.family)
    if scale is not None and scale not in SCALES:
        raise TunerInputError(f"--scale: {scale!r} is not a scale; allowed: {', '.join(SCALES)}")
    if searcher not in SEARCHERS:
        raise TunerInputError(f"--searcher: {searcher!r} is not a searcher; allowed: {', '.join(SEARCHERS)}")
    if prior_rule not in PRIOR_RULES:
        raise TunerInputError(f"--prior-rule: {prior_rule!r} is not a prior rule; allowed: {', '.join(PRIOR_RULES)}")
    if scheduler not in SCHEDULERS:
        raise TunerInputError(f"--scheduler: {scheduler!r} is not a scheduler; allowed: {', '.join(SCHEDULERS)}")
    if samples is not None and samples < 1:
        raise TunerInputError(f"--samples: must be at least 1 (got {samples})")
    if max_concurrent is not None and max_concurrent < 1:
        raise TunerInputError(f"--max-concurrent: must be at least 1 (got {max_concurrent})")
    if replicates is not None and replicates < 0:
        raise TunerInputError(f"--replicates: must be 0 or more (got {replicates})")
    if (sp.replicates if replicates is None else replicates) and family.draw is None:
        raise TunerInputError(f"--replicates: family {family.name!r} names no data-draw setting to vary")
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
    for candidate in [scale] if scale else SCALES:
        scaled = sp.at_scale(candidate)
        for cfg in [scaled.prior_centers()] + [w.params for w in scaled.warm_starts]:
            sp.trial_settings(sp.base_settings(candidate, settings_overrides), cfg, family, where="--set")
    return CheckedInputs(space=sp, family=family, overrides=raw, settings_overrides=settings_overrides)


def plan_sweep(space: str | Path | SearchSpace, *, scale: str | None = None, samples: int | None = None,
               overrides: Mapping[str, str] | list[str] | None = None, searcher: str = "tpe", priors: bool = True,
               scheduler: str = "asha", max_concurrent: int | None = None, seed: int = 0, name: str | None = None,
               storage: str | None = None, tracking_uri: str | None = None, address: str | None = None,
               replicates: int | None = None, study_storage: str | None = None,
               prior_rule: str = "adaptive") -> SweepPlan:
    """Validate every input and decide every default. Writes nothing (it may start Ray)."""
    from tuner.cluster import CLUSTER_MAX_FAILURES, check_cluster_inputs, cluster_reason
    from tuner.search import check_study_storage, default_study_storage
    from tuner.tracking import check_tracking_uri, default_tracking_uri

    inputs = check_inputs(space, scale=scale, samples=samples, overrides=overrides, searcher=searcher, priors=priors,
                          scheduler=scheduler, max_concurrent=max_concurrent, replicates=replicates,
                          prior_rule=prior_rule)
    sp, family, settings_overrides = inputs.space, inputs.family, inputs.settings_overrides
    problem = unwritable_reason(results_dir()) or low_space_reason(results_dir())
    if problem:
        raise TunerInputError(f"results folder (TUNER_RESULTS): {problem}")
    tracking_uri = tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)
    if study_storage is not None:
        check_study_storage(study_storage)

    ensure_ray(address)
    storage = storage or str(results_dir() / "ray")
    problem = None if "://" in storage else unwritable_reason(Path(storage)) or low_space_reason(Path(storage))
    if problem:
        raise TunerInputError(f"--storage: {problem}")
    cluster = cluster_reason(address)
    if cluster:
        check_cluster_inputs(storage, tracking_uri, study_storage, cluster)
    elif study_storage is None:
        study_storage = default_study_storage()
    scale, reason = choose_scale(scale)
    sp = sp.at_scale(scale)
    if not cluster:  # an autoscaling cluster may add GPUs later; a local Ray never will
        _check_gpus(family, scale, sp.trial_settings(sp.base_settings(scale, settings_overrides), sp.prior_centers(),
                                                     family))
    plan = SweepPlan(space=sp.model_dump(mode="json"), scale=scale, scale_reason=reason,
                     base=sp.base_settings(scale, settings_overrides), samples=samples or sp.scales[scale].samples,
                     searcher=searcher, priors=priors, scheduler=scheduler, max_concurrent=max_concurrent, seed=seed,
                     name=name or f"{sp.name}-{scale}-{time.strftime('%Y%m%d-%H%M%S')}",
                     storage=storage, tracking_uri=tracking_uri, study_storage=study_storage,
                     overrides=inputs.overrides,
                     replicates=sp.replicates if replicates is None else replicates, replicate_top=sp.replicate_top,
                     max_failures=CLUSTER_MAX_FAILURES if cluster else 0, prior_rule=prior_rule)
    if exists(plan.experiment_path):
        raise TunerInputError(f"--name: experiment {plan.experiment_path} already exists; "
                              f"continue it with: python -m tuner resume {plan.experiment_path}")
    return plan


# ---- the plan file -------------------------------------------------------------------------------
def write_plan(plan: SweepPlan, ids: TrackingIds) -> None:
    """Store the plan and its MLflow ids beside the Ray experiment."""
    payload = {"plan": asdict(plan), "tracking": asdict(ids)}
    write_text(plan.experiment_path, PLAN_FILE, json.dumps(payload, indent=2, default=str))


def read_plan(experiment_path: str) -> tuple[SweepPlan, TrackingIds]:
    """The plan and MLflow ids stored beside a Ray experiment (local path or URI)."""
    try:
        payload = json.loads(read_text(experiment_path, PLAN_FILE))
    except (FileNotFoundError, OSError):
        raise TunerInputError(f"resume: {experiment_path} holds no {PLAN_FILE}; is it a tuner sweep folder?") from None
    return SweepPlan(**payload["plan"]), TrackingIds(**payload["tracking"])
