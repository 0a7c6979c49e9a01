"""Searchers: Optuna distributions from a space, the sampler of a sweep (`make_sampler`; the samplers are in
`tuner.samplers`), an OptunaSearch that tells Optuna the truth about diverged (FAIL) and early-stopped (PRUNED)
trials, and the database the study lives in."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from tuner.outcome import Outcome, classify_end, is_finite_number
from tuner.samplers import SOURCE_ATTR, AdaptivePriorSampler, PriorWeightedSampler, TreeSampler
from tuner.space import FloatParam, IntParam, SearchSpace
from tuner.storage import check_store_url, is_storage_full, results_dir
from tuner.validation import PRIOR_RULES, SEARCHERS

STUDY_SCHEMES = ("sqlite", "postgresql", "mysql")


def default_study_storage() -> str:
    """The embedded study store: a sqlite file beside the MLflow store in the results folder."""
    return f"sqlite:///{results_dir() / 'optuna.db'}"


def check_study_storage(url: str) -> None:
    """Refuse (TunerInputError naming --study-storage) a URL Optuna's RDB storage cannot use. Writes nothing."""
    check_store_url(url, "--study-storage", STUDY_SCHEMES, "sqlite:////abs/path/optuna.db")


def study_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at `url` (created on first use), where `optuna.load_study` and optuna-dashboard find
    the sweep's study by the sweep's name."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url)


def _param_key(params: Mapping[str, Any]) -> tuple:
    """Parameters as a hashable key that a value's round trip through a table does not change."""
    def norm(v: Any) -> Any:
        return float(f"{v:.10g}") if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else v
    return tuple(sorted((k, norm(v)) for k, v in params.items()))


def with_sources(trials: pd.DataFrame, storage_url: str, study_name: str) -> pd.DataFrame:
    """`trials` (a trials table) with a `source` column: how the searcher proposed each trial (warm_start, prior,
    incumbent, base, child: the sampler's `SOURCE_ATTR` in the study), '' where the study does not say."""
    try:
        study = optuna.load_study(study_name=study_name, storage=study_storage(storage_url))
    except KeyError:  # no such study (e.g. every parameter pinned)
        return trials.assign(source="")
    sources = {_param_key(t.params): t.user_attrs[SOURCE_ATTR] for t in study.trials if SOURCE_ATTR in t.user_attrs}
    columns = [c for c in trials.columns if c.startswith("param.")]
    keys = [_param_key({c.removeprefix("param."): row[c] for c in columns if pd.notna(row[c])})
            for _, row in trials.iterrows()]
    return trials.assign(source=[sources.get(k, "") for k in keys])


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """Optuna distributions for the tunable parameters of `space`."""
    out: dict[str, BaseDistribution] = {}
    for name, p in space.params.items():
        if isinstance(p, FloatParam):
            out[name] = FloatDistribution(p.low, p.high, log=p.log)
        elif isinstance(p, IntParam):
            out[name] = IntDistribution(p.low, p.high, log=p.log)
        else:
            out[name] = CategoricalDistribution(p.choices)
    return out


def make_sampler(space: SearchSpace, searcher: str, priors: bool, seed: int | None,
                 prior_rule: str = "adaptive") -> BaseSampler:
    """`tree` (the seeds' one-mutation tree; uniform roots and range-sized steps without priors), or `tpe` /
    `random` wrapped in a prior rule unless priors are off: `adaptive` (prior, incumbent and base draws weighed
    by evidence) or `fixed` (prior with probability s/(s+n))."""
    if searcher not in SEARCHERS:
        raise ValueError(f"searcher must be one of {SEARCHERS}, got {searcher!r}")
    if prior_rule not in PRIOR_RULES:
        raise ValueError(f"prior_rule must be one of {PRIOR_RULES}, got {prior_rule!r}")
    if searcher == "tree":
        return TreeSampler(space, seed=seed, priors=priors)
    base = TPESampler(seed=seed) if searcher == "tpe" else RandomSampler(seed=seed)
    if not priors:
        return base
    if prior_rule == "fixed":
        return PriorWeightedSampler(base, space, seed=seed)
    return AdaptivePriorSampler(base, space, seed=seed)


class TruthfulOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna each trial's `Outcome` state: FAIL for errors and non-finite results,
    PRUNED for trials stopped before `max_t` reports, COMPLETE only for trials that ran them all (Ray's own
    class tells COMPLETE with NaN, which Optuna rejects, leaving the trial RUNNING forever, and mixes
    low-fidelity values in as COMPLETE, also for multi-objective sweeps).

    `metric` may be a list (multi-objective; the first is the one the scheduler prunes on); `constraints`
    maps a metric to the upper bound a feasible trial stays under, told through `Trial.set_constraint`."""

    # Ray 2.60's OptunaSearch keeps its study and trials in private fields; this class reads them here and
    # only here. `__init__` fails loudly if a Ray upgrade moved them (tests/test_search.py builds one).
    RAY_PRIVATE_FIELDS = ("_ot_study", "_ot_trials", "_completed_trials", "_metric")

    def __init__(self, *args: Any, max_t: int, constraints: Mapping[str, float] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        missing = [name for name in self.RAY_PRIVATE_FIELDS if not hasattr(self, name)]
        if missing:
            raise RuntimeError(f"ray.tune.search.optuna.OptunaSearch no longer has {missing}: "
                               f"TruthfulOptunaSearch must be updated for this Ray version")
        self.max_t = max_t
        self.constraints = dict(constraints or {})
        self.told: dict[str, str] = {}  # trial_id -> Optuna state name, for inspection
        # ends the study's database could not take (its disk was full): told again at the next chance
        self.untold: dict[str, tuple[Any, str, dict[str, float]]] = {}
        # trials whose end the study took after Ray's last save (state name, last step): Ray reruns them
        self.ended_after_save: dict[str, tuple[str, int | None]] = {}

    @property
    def objectives(self) -> list[str]:
        return list(self._metric) if isinstance(self._metric, (list, tuple)) else [self._metric]

    @property
    def metric(self) -> str:
        """The primary objective: the one every report carries (Ray checks each result for it; the other
        objectives of a multi-objective sweep come with the last report only)."""
        return self.objectives[0]

    def restore(self, checkpoint_path: str) -> None:
        """Ray's restore of a killed driver's searcher, then reconcile it with the study's database, which went on
        after the searcher's last save: a trial the database already has told (it ended after that save) counts
        as told and is kept in `ended_after_save` — Ray re-runs it from an older checkpoint, Optuna cannot reopen it,
        so `ResumableASHA` ends the rerun as it ended (`SchedulerState` hands it over) —, and study trials the saved
        searcher never heard of (asked after its last save; Ray asks for their configurations again) are told
        FAIL and listed in the study's user attribute `lost_with_driver`, so that none stays RUNNING."""
        super().restore(checkpoint_path)
        self.ended_after_save = getattr(self, "ended_after_save", {})  # a state saved before this field existed
        by_number = {t.number: t for t in self._ot_study.get_trials(deepcopy=False)}
        for trial_id, ot_trial in self._ot_trials.items():
            stored = by_number.get(ot_trial.number)
            if trial_id not in self._completed_trials and stored is not None and stored.state.is_finished():
                self._completed_trials.add(trial_id)
                self.told[trial_id] = stored.state.name
                self.ended_after_save[trial_id] = (stored.state.name, stored.last_step)
        known = {t.number for t in self._ot_trials.values()}
        lost = [n for n, t in by_number.items() if t.state == TrialState.RUNNING and n not in known]
        for number in lost:
            self._ot_study.tell(number, state=TrialState.FAIL)
        if lost:
            self._ot_study.set_user_attr("lost_with_driver", lost + self._ot_study.user_attrs.get("lost_with_driver", []))
        self.untold = getattr(self, "untold", {})  # a state saved before this field existed
        self._tell_untold()

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """Ray's suggest; None (Ray asks again later) while the study's database cannot be written."""
        self._tell_untold()
        try:
            return super().suggest(trial_id)
        except Exception as err:
            if not is_storage_full(err):
                raise
            self._ot_trials.pop(trial_id, None)  # if asked, `restore` tells it FAIL as lost
            print(f"warning: the study's database is full; no new trial for now ({err.__class__.__name__})",
                  flush=True)
            return None

    def on_trial_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        if trial_id in self._completed_trials:  # told before a restart (see `restore`)
            return
        if len(self.objectives) == 1 and is_finite_number(result.get(self.metric)):
            try:
                super().on_trial_result(trial_id, dict(result))  # Optuna takes no intermediate values for several
            except Exception as err:  # a full disk costs the study this intermediate value, not the sweep
                if not is_storage_full(err):
                    raise

    def on_trial_complete(self, trial_id: str, result: Mapping[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        result = result or {}
        outcome = classify_end(result, errored=error, metric=self.objectives[0], max_reports=self.max_t)
        violations = {metric: float(result[metric]) - bound for metric, bound in self.constraints.items()
                      if is_finite_number(result.get(metric))}  # <= 0: feasible
        values = None  # PRUNED: Optuna ranks it by its last intermediate value (single objective)
        if outcome is Outcome.FINISHED:
            values = [result.get(m) for m in self.objectives]
            values = values if len(values) > 1 else values[0]
        self.untold[trial_id] = (values, outcome.optuna_state, violations)
        self._tell_untold()

    def _tell_untold(self) -> None:
        """Tell Optuna the ends it has not taken yet; those its database refuses for want of disk space wait."""
        for trial_id, (values, state, violations) in list(self.untold.items()):
            ot_trial = self._ot_trials[trial_id]
            try:
                for metric, violation in violations.items():
                    ot_trial.set_constraint(metric, violation)
                self._ot_study.tell(ot_trial, values, state=TrialState[state])
            except Exception as err:
                if not is_storage_full(err):
                    raise
                print(f"warning: the study's database is full; trial {trial_id} is told later", flush=True)
                return
            del self.untold[trial_id]
            self.told[trial_id] = state
            self._completed_trials.add(trial_id)
