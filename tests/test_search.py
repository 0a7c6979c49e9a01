"""Prior-weighted sampling, warm starts first, and truthful FAIL / PRUNED / COMPLETE tells to Optuna."""

from __future__ import annotations

import math
import pickle

import numpy as np
import optuna
import pytest
from optuna.samplers import TPESampler
from optuna.trial import TrialState

from tuner.plan import check_inputs
from tuner.samplers import (
    AROUND_MODE_ATTR,
    INCUMBENT_ATTR,
    OWN_DRAWS_ATTR,
    SOURCE_ATTR,
    WEIGHTS_ATTR,
    AdaptivePriorSampler,
    TreeSampler,
    incumbent_scale,
    prior_mode,
    stall_length,
)
from tuner.search import (
    PriorWeightedSampler,
    TruthfulOptunaSearch,
    distributions,
    make_sampler,
)
from tuner.space import SearchSpace, load_space
from tuner.validation import TunerInputError

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


OPTIMUM = {"x": 0.7, "lr": 3e-3, "width": 48, "act": "tanh"}


def _synthetic(prior_good: bool) -> SearchSpace:
    """Four parameters with priors centred on `OPTIMUM`, or tightly on a far corner (a misleading prior)."""
    def at(good, bad):
        return good if prior_good else bad
    return SearchSpace.model_validate({
        "name": "synthetic", "family": "none", "description": "a test space", "source": {"seed": "none"},
        "params": {
            "x": {"type": "float", "low": 0, "high": 1, "prior": {"center": at(0.7, 0.05), "spread": 0.1}},
            "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True,
                   "prior": {"center": at(3e-3, 2e-5), "spread": 0.3}},
            "width": {"type": "int", "low": 4, "high": 256, "log": True,
                      "prior": {"center": at(48, 200), "spread": 0.15}},
            "act": {"type": "categorical", "choices": ["relu", "tanh", "sin"],
                    "weights": at([0.1, 0.8, 0.1], [0.8, 0.1, 0.1])}},
        "principles": [{"text": "none", "source": "test"}],
        "scales": {scale: {} for scale in ("smoke", "cpu", "full")}})


def _distance(params: dict) -> float:
    """Larger is better: minus the distance to `OPTIMUM` in range-scaled units, a penalty for the wrong choice."""
    d2 = ((params["x"] - OPTIMUM["x"]) ** 2 + (math.log10(params["lr"] / OPTIMUM["lr"]) / 4) ** 2
          + (math.log10(params["width"] / OPTIMUM["width"]) / 1.8) ** 2)
    return -math.sqrt(d2) - (0.0 if params["act"] == OPTIMUM["act"] else 0.2)


def _adaptive_run(prior_good: bool, seed: int, n: int = 40, patience: float | None = None
                  ) -> tuple[AdaptivePriorSampler, optuna.Study]:
    """`patience=None`: the evidence alone, without the stall rule (tested below)."""
    space = _synthetic(prior_good)
    sampler = AdaptivePriorSampler(TPESampler(seed=seed), space, seed=seed, patience=patience)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(n):
        trial = study.ask(distributions(space))
        study.tell(trial, _distance(trial.params))
    return sampler, study


def test_adaptive_prior_weight_falls_under_a_misleading_prior_and_stays_up_under_a_good_one() -> None:
    for seed in range(3):
        good, good_study = _adaptive_run(prior_good=True, seed=seed)
        bad, bad_study = _adaptive_run(prior_good=False, seed=seed)
        good_weight, bad_weight = good.weights(good_study, 40)[0]["prior"], bad.weights(bad_study, 40)[0]["prior"]
        assert good_weight > 0.3 and bad_weight < 0.18, (seed, good_weight, bad_weight)  # measured: ≥ 0.35, ≤ 0.15
        assert good.prior_decay(40) < 0.1  # not the fixed rule's decay: evidence keeps the good prior up
        # every trial's source is in the study, and a fresh sampler reads the same weights from it (resume)
        assert {t.user_attrs[SOURCE_ATTR] for t in bad_study.trials} == {"prior", "incumbent", "base"}
        fresh = AdaptivePriorSampler(TPESampler(seed=seed), _synthetic(False), seed=seed, patience=None)
        assert fresh.weights(bad_study, 40) == bad.weights(bad_study, 40)
        assert bad_study.trials[-1].user_attrs[WEIGHTS_ATTR]["prior"] < 0.2


def test_a_stalled_search_moves_weight_from_prior_and_incumbent_to_the_model() -> None:
    """The stall rule: while the best value does not improve, the exploiting sources keep only p / (p + stall)
    of their weights; the same study read without the rule gives them their full evidence weights."""
    _, study = _adaptive_run(prior_good=True, seed=0)
    stall = stall_length(study.get_trials(), 1.0, 0.01)
    assert stall >= 20  # the good prior found the optimum's neighbourhood early, then nothing improved
    plain = AdaptivePriorSampler(TPESampler(seed=0), _synthetic(True), seed=0, patience=None).weights(study, 40)[0]
    ruled = AdaptivePriorSampler(TPESampler(seed=0), _synthetic(True), seed=0, patience=10).weights(study, 40)[0]
    keep = 10 / (10 + stall)
    assert ruled["prior"] == pytest.approx(max(0.05, keep * plain["prior"]), rel=0.05)
    assert ruled["base"] > plain["base"] + 0.3
    # an improving search is left alone: the stall counter restarts with every real improvement
    improving = optuna.create_study(direction="maximize")
    for i in range(30):
        improving.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=float(i)))
    assert stall_length(improving.get_trials(), 1.0, 0.01) == 0
    assert stall_length(improving.get_trials(), -1.0, 0.01) == 29


def test_adaptive_startup_asks_do_not_depend_on_what_has_finished() -> None:
    """The first n_startup asks are a pure function of (seed, trial number): asked all at once, or each told
    before the next, trials 0-9 get the same configurations (a seeded sweep resumes to the same trials)."""
    space = load_space("chaotic_10k")
    dist = distributions(space)
    at_once = optuna.create_study(direction="maximize", sampler=make_sampler(space, "tpe", True, seed=7))
    batch = [at_once.ask(dist) for _ in range(10)]
    one_by_one = optuna.create_study(direction="maximize", sampler=make_sampler(space, "tpe", True, seed=7))
    for i in range(10):
        one_by_one.tell(one_by_one.ask(dist), float(i))
    assert [t.params for t in batch] == [t.params for t in one_by_one.trials]
    sources = [t.user_attrs[SOURCE_ATTR] for t in one_by_one.trials]
    assert sources.count("prior") >= 3 and "base" in sources and "incumbent" not in sources


def _trial(number: int, value: float, source: str, parent: int | None = None) -> optuna.trial.FrozenTrial:
    attrs = {SOURCE_ATTR: source, **({INCUMBENT_ATTR: parent} if parent is not None else {})}
    trial = optuna.trial.create_trial(params={}, distributions={}, value=value, user_attrs=attrs)
    trial.number = number
    return trial


def test_incumbent_step_follows_the_one_fifth_success_rule() -> None:
    """A successful incumbent draw multiplies the step by e^0.8, a failed one by e^-0.2 (damping 1): one success in
    five holds it; a run of failures shrinks it to the lower bound; PRUNED counts as a failure."""
    start = [_trial(0, 1.0, "prior")]
    one_in_five = [*start, _trial(1, 2.0, "incumbent", 0), *(_trial(n, 0.5, "incumbent", 1) for n in range(2, 6))]
    assert incumbent_scale(one_in_five, 1.0, 0.25, 1.0, (1 / 64, 4.0)) == pytest.approx(0.25)
    assert incumbent_scale(one_in_five[:2], 1.0, 0.25, 1.0, (1 / 64, 4.0)) == pytest.approx(0.25 * math.exp(0.8))
    assert incumbent_scale(one_in_five[:2], 1.0, 0.25, 2.0, (1 / 64, 4.0)) == pytest.approx(0.25 * math.exp(0.4))
    failures = [*start, *(_trial(n, 0.5, "incumbent", 0) for n in range(1, 40))]
    assert incumbent_scale(failures, 1.0, 0.25, 1.0, (1 / 64, 4.0)) == pytest.approx(0.25 / 64)
    assert incumbent_scale(failures, -1.0, 0.25, 1.0, (1 / 64, 4.0)) == pytest.approx(0.25 * 4)  # minimising
    pruned = optuna.trial.create_trial(state=TrialState.PRUNED, params={}, distributions={},
                                       user_attrs={SOURCE_ATTR: "incumbent", INCUMBENT_ATTR: 0},
                                       intermediate_values={1: 9.0})
    pruned.number = 1
    assert incumbent_scale([*start, pruned], 1.0, 0.25, 1.0, (1 / 64, 4.0)) == pytest.approx(0.25 * math.exp(-0.2))
    # the incumbent's own stall counts incumbent draws only
    mixed = [*start, *(_trial(n, 0.5, "incumbent" if n % 2 else "base", 0) for n in range(1, 9))]
    assert stall_length(mixed, 1.0, 0.01) == 8 and stall_length(mixed, 1.0, 0.01, only="incumbent") == 4


def test_stopped_trials_set_the_scale_of_a_real_improvement() -> None:
    """Under ASHA the COMPLETE trials are mostly one basin's; a step inside it that is tiny against everything the
    search has seen (PRUNED trials' last reports included) is not progress."""
    def pruned(number: int) -> optuna.trial.FrozenTrial:
        trial = optuna.trial.create_trial(state=TrialState.PRUNED, params={}, distributions={},
                                          user_attrs={SOURCE_ATTR: "base"}, intermediate_values={1: 0.0})
        trial.number = number
        return trial

    trials = [_trial(0, 1.0, "prior"), *(pruned(n) for n in range(1, 11)), _trial(11, 1.001, "incumbent", 0)]
    assert stall_length(trials, 1.0, 0.01) == 11              # 0.001 < 0.01 × (1.0 - median 0.0)
    assert stall_length([trials[0], trials[-1]], 1.0, 0.01) == 0   # among COMPLETE trials alone it is progress
    trials.append(_trial(12, 1.02, "base"))
    assert stall_length(trials, 1.0, 0.01) == 0                # 0.019 > 0.01: a real improvement resets it


def test_without_warm_starts_trial_zero_is_the_prior_mode_and_startup_draws_stay_near_it() -> None:
    space = load_space("hartmann6_good")
    sampler = AdaptivePriorSampler(TPESampler(seed=0), space, seed=0)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    for _ in range(10):
        study.tell(study.ask(distributions(space)), 0.0)
    mode = {name: prior_mode(p) for name, p in space.params.items()}
    assert study.trials[0].params == mode == {f"x{i + 1}": c for i, c in enumerate((0.24, 0.12, 0.51, 0.24, 0.35,
                                                                                   0.62))}
    local = [t for t in study.trials if t.user_attrs.get(AROUND_MODE_ATTR)]
    wide = [t for t in study.trials[1:] if t.user_attrs[SOURCE_ATTR] == "prior" and t not in local]
    assert local and wide   # seed 0: both kinds among the startup's prior draws
    distance = {id(t): max(abs(t.params[k] - mode[k]) for k in mode) for t in local + wide}
    assert max(distance[id(t)] for t in local) < 0.25 * 0.1 * 4.5                  # local step: 0.25 spread
    assert max(distance[id(t)] for t in wide) > 0.1                                 # a full-spread prior draw
    # with a warm start, trial 0 is the warm start and no trial is forced onto the mode
    chaotic = load_space("chaotic_10k")
    warm = optuna.create_study(direction="maximize", sampler=make_sampler(chaotic, "tpe", True, seed=0))
    warm.enqueue_trial(dict(chaotic.warm_starts[0].params))
    for _ in range(3):
        warm.tell(warm.ask(distributions(chaotic)), 0.0)
    chaotic_mode = {name: prior_mode(p) for name, p in chaotic.params.items()}
    assert warm.trials[0].user_attrs[SOURCE_ATTR] == "warm_start"
    assert all(t.params != chaotic_mode for t in warm.trials[1:])


class _Spy(optuna.samplers.RandomSampler):
    """A base sampler that records which trial numbers each of its draws could see."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.seen: list[set[int]] = []

    def sample_independent(self, study, trial, param_name, param_distribution):
        self.seen.append({t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()})
        return super().sample_independent(study, trial, param_name, param_distribution)


def test_a_long_stall_makes_the_base_sampler_model_its_own_draws_only() -> None:
    """Stalled for base_own_draws_after trials, the base sampler no longer sees the prior's and incumbent's trials
    (TPE would take the stalled basin as its good set); before that it sees every trial."""
    space = load_space("hartmann3_bad")
    spy = _Spy()
    sampler = AdaptivePriorSampler(spy, space, seed=1)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    for n in range(60):
        trial = study.ask(distributions(space))
        study.tell(trial, -1.0 if n == 0 else 0.0)   # trial 0 (the mode) is never beaten: the stall grows
    base = [t for t in study.trials if t.user_attrs[SOURCE_ATTR] == "base"]
    own = [t for t in base if t.user_attrs.get(OWN_DRAWS_ATTR)]
    assert own and all(t.number >= 11 for t in own)  # trial 11: trials 1-10 finished without improving
    assert all(not t.user_attrs.get(OWN_DRAWS_ATTR) for t in base if t.number < 11)
    base_numbers = {t.number for t in base}
    views = iter(spy.seen)
    for t in base:  # one sample_independent per parameter
        seen = [next(views) for _ in space.params]
        if t.user_attrs[OWN_DRAWS_ATTR]:
            assert seen[0] and seen[0] <= base_numbers
        else:
            assert 0 in seen[0] or t.number == 0
    # Ray saves the searcher, sampler included, while trials run: a pending draw must pickle
    study.ask(distributions(space))
    restored = pickle.loads(pickle.dumps(sampler))
    assert restored._draws.keys() == sampler._draws.keys() == {60}


def test_prior_rules_and_searchers_are_selectable_and_checked() -> None:
    space = load_space("chaotic_10k")
    assert isinstance(make_sampler(space, "tpe", True, 0), AdaptivePriorSampler)
    assert isinstance(make_sampler(space, "tpe", True, 0, prior_rule="fixed"), PriorWeightedSampler)
    assert isinstance(make_sampler(space, "random", False, 0, prior_rule="fixed"), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler(space, "tree", True, 0), TreeSampler)
    with pytest.raises(TunerInputError, match=r"--prior-rule: 'pibo' .* allowed: adaptive, fixed"):
        check_inputs("chaotic_10k", prior_rule="pibo")
    with pytest.raises(TunerInputError, match=r"--searcher: 'bohb' .* allowed: tpe, random, tree"):
        check_inputs("chaotic_10k", searcher="bohb")


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


def test_ends_told_after_the_last_save_are_kept_for_the_rerun(tmp_path) -> None:
    """A killed driver: the study (a database) took trial ends after the searcher's last save. The restored
    searcher counts them as told and keeps how they ended, for the scheduler to end Ray's reruns the same way."""
    from tuner.search import study_storage

    space = load_space("chaotic_10k")

    def searcher() -> TruthfulOptunaSearch:
        return TruthfulOptunaSearch(space=distributions(space), metric="connectivity_R2", mode="max", max_t=4,
                                    sampler=make_sampler(space, "tpe", priors=True, seed=0),
                                    storage=study_storage(f"sqlite:///{tmp_path / 'optuna.db'}"), study_name="s")

    before = searcher()
    for tid in ("pruned", "done", "running"):
        before.suggest(tid)
    before.save(str(tmp_path / "searcher.pkl"))  # Ray's last save
    for step in (1, 2):
        before.on_trial_result("pruned", {"connectivity_R2": 0.1 * step, "training_iteration": step})
    before.on_trial_complete("pruned", {"connectivity_R2": 0.2, "training_iteration": 2})
    before.on_trial_complete("done", {"connectivity_R2": 0.9, "training_iteration": 4})

    after = searcher()
    after.restore(str(tmp_path / "searcher.pkl"))
    assert after.ended_after_save == {"pruned": ("PRUNED", 2), "done": ("COMPLETE", None)}
    assert after.told == {"pruned": "PRUNED", "done": "COMPLETE"}
