"""Searchers: Optuna distributions from a space, a prior-weighted sampler, an OptunaSearch that tells Optuna
the truth about diverged (FAIL) and early-stopped (PRUNED) trials, and the database the study lives in."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search.optuna import OptunaSearch

from tuner.outcome import Outcome, classify_end, is_finite_number
from tuner.space import CategoricalParam, FloatParam, IntParam, SearchSpace
from tuner.storage import check_store_url, results_dir
from tuner.validation import SEARCHERS

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


class PriorWeightedSampler(BaseSampler):
    """πBO-style prior weighting over any base sampler.

    Trial n (its number in the study: warm starts count) draws every parameter from the space's priors
    with probability ``strength / (strength + n)``, otherwise from the base sampler. Early trials thus
    follow the recorded principles; as evidence accumulates the base sampler (TPE) takes over. Counting
    trials rather than finished ones keeps a seeded sweep's draws independent of when trials end, so an
    interrupted and resumed sweep asks for the same configurations as an uninterrupted one.
    """

    def __init__(self, base: BaseSampler, space: SearchSpace, seed: int | None = None):
        self._base = base
        self._params = dict(space.params)
        self._strength = space.prior_strength
        self._rng = np.random.default_rng(seed)
        self._from_prior: dict[int, bool] = {}

    def prior_probability(self, n: int) -> float:
        return self._strength / (self._strength + n)

    def reseed_rng(self) -> None:
        self._base.reseed_rng()
        self._rng = np.random.default_rng()

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._from_prior[trial.number] = bool(self._rng.random() < self.prior_probability(trial.number))
        self._base.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if self._from_prior.get(trial.number):
            return {}
        return self._base.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if self._from_prior.get(trial.number) and param_name in self._params:
            return self._draw(self._params[param_name])
        return self._base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        self._base.after_trial(study, trial, state, values)

    def _draw(self, p: FloatParam | IntParam | CategoricalParam) -> Any:
        if isinstance(p, CategoricalParam):
            w = np.asarray(p.weights or [1.0] * len(p.choices), dtype=float)
            return p.choices[int(self._rng.choice(len(p.choices), p=w / w.sum()))]
        if p.prior is None:  # no belief: uniform over the bounds (in log space if log-scaled)
            lo, hi = (math.log10(p.low), math.log10(p.high)) if p.log else (p.low, p.high)
            x = self._rng.uniform(lo, hi)
        else:  # normal around the centre, truncated to the bounds by resampling
            lo, hi = (math.log10(p.low), math.log10(p.high)) if p.log else (p.low, p.high)
            mu = math.log10(p.prior.center) if p.log else p.prior.center
            for _ in range(100):
                x = self._rng.normal(mu, p.prior.spread)
                if lo <= x <= hi:
                    break
            else:
                x = min(max(x, lo), hi)
        value = 10.0**x if p.log else x
        value = min(max(value, p.low), p.high)
        return int(round(value)) if isinstance(p, IntParam) else float(value)


def make_sampler(space: SearchSpace, searcher: str, priors: bool, seed: int | None) -> BaseSampler:
    """`tpe` or `random`, wrapped in the prior weighting unless priors are off."""
    if searcher not in SEARCHERS:
        raise ValueError(f"searcher must be one of {SEARCHERS}, got {searcher!r}")
    base = TPESampler(seed=seed) if searcher == "tpe" else RandomSampler(seed=seed)
    return PriorWeightedSampler(base, space, seed=seed) if priors else base


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
        as told — Ray re-runs it from its checkpoint, and Optuna cannot reopen it —, and study trials the saved
        searcher never heard of (asked after its last save; Ray asks for their configurations again) are told
        FAIL and listed in the study's user attribute `lost_with_driver`, so that none stays RUNNING."""
        super().restore(checkpoint_path)
        by_number = {t.number: t for t in self._ot_study.get_trials(deepcopy=False)}
        for trial_id, ot_trial in self._ot_trials.items():
            stored = by_number.get(ot_trial.number)
            if trial_id not in self._completed_trials and stored is not None and stored.state.is_finished():
                self._completed_trials.add(trial_id)
                self.told[trial_id] = stored.state.name
        known = {t.number for t in self._ot_trials.values()}
        lost = [n for n, t in by_number.items() if t.state == TrialState.RUNNING and n not in known]
        for number in lost:
            self._ot_study.tell(number, state=TrialState.FAIL)
        if lost:
            self._ot_study.set_user_attr("lost_with_driver", lost + self._ot_study.user_attrs.get("lost_with_driver", []))

    def on_trial_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        if trial_id in self._completed_trials:  # told before a restart (see `restore`)
            return
        if len(self.objectives) == 1 and is_finite_number(result.get(self.metric)):
            super().on_trial_result(trial_id, dict(result))  # Optuna takes no intermediate values for several

    def on_trial_complete(self, trial_id: str, result: Mapping[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        result = result or {}
        outcome = classify_end(result, errored=error, metric=self.objectives[0], max_reports=self.max_t)
        ot_trial = self._ot_trials[trial_id]
        for metric, bound in self.constraints.items():
            if is_finite_number(result.get(metric)):
                ot_trial.set_constraint(metric, float(result[metric]) - bound)  # <= 0: feasible
        values = None  # PRUNED: Optuna ranks it by its last intermediate value (single objective)
        if outcome is Outcome.FINISHED:
            values = [result.get(m) for m in self.objectives]
            values = values if len(values) > 1 else values[0]
        self._ot_study.tell(ot_trial, values, state=TrialState[outcome.optuna_state])
        self.told[trial_id] = outcome.optuna_state
        self._completed_trials.add(trial_id)
