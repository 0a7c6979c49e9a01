"""Prior-weighted sampling, warm starts first, and truthful FAIL / PRUNED / COMPLETE tells to Optuna."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.samplers import TPESampler
from optuna.trial import TrialState

from tuner.search import PriorWeightedSampler, TruthfulOptunaSearch, distributions, make_sampler
from tuner.space import load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _ask_many(sampler, space, n: int) -> list[dict]:
    study = optuna.create_study(direction="maximize", sampler=sampler)
    return [study.ask(fixed_distributions=distributions(space)).params for _ in range(n)]


def test_first_trials_follow_the_priors() -> None:
    space = load_space("chaotic_10k").model_copy(update={"prior_strength": 1e12})  # p = s/(s+n) ≈ 1 for all 300
    draws = _ask_many(PriorWeightedSampler(TPESampler(seed=0), space, seed=0), space, 300)
    ratio = np.log10([d["lr_W_ratio"] for d in draws])
    prior = space.params["lr_W_ratio"].prior
    assert abs(ratio.mean() - math.log10(prior.center)) < 0.05
    assert abs(ratio.std() - prior.spread) < 0.05
    assert all(space.params["lr_W_ratio"].low <= d["lr_W_ratio"] <= space.params["lr_W_ratio"].high for d in draws)
    counts = np.array([sum(d["batch_size"] == c for d in draws) for c in (8, 16, 32)]) / len(draws)
    assert np.allclose(counts, space.params["batch_size"].weights, atol=0.08)


def test_uniform_without_priors_is_much_wider() -> None:
    space = load_space("chaotic_10k")
    draws = _ask_many(make_sampler(space, "random", priors=False, seed=0), space, 300)
    ratio = np.log10([d["lr_W_ratio"] for d in draws])
    assert ratio.std() > 0.5  # uniform over 10..3000 in log10: std ≈ 0.71


def test_prior_draws_depend_on_the_trial_number_not_on_timing() -> None:
    """Trial n draws from the prior with p = s/(s+n) whether or not earlier trials have finished."""
    space = load_space("chaotic_10k")
    sampler = PriorWeightedSampler(TPESampler(seed=0), space, seed=0)
    _ask_many(sampler, space, 400)
    from_prior = np.array([sampler._from_prior[n] for n in range(400)])
    expected = np.array([sampler.prior_probability(n) for n in range(400)])
    assert from_prior[:4].sum() >= 3  # p >= 0.57 for the first four
    assert abs(from_prior.sum() - expected.sum()) < 3 * np.sqrt((expected * (1 - expected)).sum())
    again = PriorWeightedSampler(TPESampler(seed=0), space, seed=0)
    _ask_many(again, space, 400)
    assert [again._from_prior[n] for n in range(400)] == from_prior.tolist()


def test_prior_probability_decays_with_the_trial_number() -> None:
    space = load_space("chaotic_10k")
    sampler = PriorWeightedSampler(TPESampler(seed=0), space, seed=0)
    s = space.prior_strength
    assert sampler.prior_probability(0) == 1.0
    assert sampler.prior_probability(int(s)) == pytest.approx(0.5)
    assert sampler.prior_probability(100) < 0.05


def _search(max_t: int = 4) -> TruthfulOptunaSearch:
    space = load_space("chaotic_10k")
    return TruthfulOptunaSearch(space=distributions(space), metric="connectivity_R2", mode="max", max_t=max_t,
                                sampler=make_sampler(space, "tpe", priors=True, seed=0),
                                points_to_evaluate=[dict(w.params) for w in space.warm_starts])


def test_warm_start_is_evaluated_first() -> None:
    space = load_space("chaotic_10k")
    assert _search().suggest("t0") == space.warm_starts[0].params


def test_tells_fail_pruned_complete() -> None:
    search = _search(max_t=4)
    for tid in ("nan", "pruned", "done", "error"):
        search.suggest(tid)
    search.on_trial_result("nan", {"connectivity_R2": 0.3, "training_iteration": 1})
    search.on_trial_result("nan", {"connectivity_R2": float("nan"), "training_iteration": 2})
    search.on_trial_complete("nan", {"connectivity_R2": float("nan"), "training_iteration": 2})
    search.on_trial_result("pruned", {"connectivity_R2": 0.5, "training_iteration": 2})
    search.on_trial_complete("pruned", {"connectivity_R2": 0.5, "training_iteration": 2})
    search.on_trial_complete("done", {"connectivity_R2": 0.99, "training_iteration": 4})
    search.on_trial_complete("error", None, error=True)
    assert search.told == {"nan": "FAIL", "pruned": "PRUNED", "done": "COMPLETE", "error": "FAIL"}
    states = [t.state for t in search._ot_study.trials]
    assert TrialState.RUNNING not in states  # Ray's own OptunaSearch leaves NaN trials RUNNING forever
    assert search._ot_study.best_value == pytest.approx(0.99)


def test_ray_private_fields_are_where_truthful_search_reads_them() -> None:
    """Fails loudly if a Ray upgrade moves the OptunaSearch fields that TruthfulOptunaSearch reads."""
    search = _search()
    for name in TruthfulOptunaSearch.RAY_PRIVATE_FIELDS:
        assert hasattr(search, name), name
    assert isinstance(search._ot_study, optuna.Study)
