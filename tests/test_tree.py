"""`--searcher tree`: the seeds' UCB tree of finished trials, one mutation per child, as an Optuna sampler."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from tuner.samplers import MUTATED_ATTR, PARENT_ATTR, ROLE_ATTR, ROLES, SOURCE_ATTR, TreeSampler, principle_params
from tuner.search import distributions
from tuner.space import CategoricalParam, SearchSpace, load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

WARM_START = {"x": 0.5, "lr": 1e-3, "width": 32, "act": "relu"}


def _space() -> SearchSpace:
    return SearchSpace.model_validate({
        "name": "synthetic", "family": "none", "description": "a test space", "source": {"seed": "none"},
        "params": {
            "x": {"type": "float", "low": 0.0, "high": 1.0, "prior": {"center": 0.5, "spread": 0.1}},
            "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True, "prior": {"center": 1e-3, "spread": 0.3}},
            "width": {"type": "int", "low": 4, "high": 256, "log": True, "prior": {"center": 32, "spread": 0.2}},
            "act": {"type": "categorical", "choices": ["relu", "tanh", "sin"], "weights": [0.6, 0.3, 0.1]}},
        "warm_starts": [{"params": WARM_START, "source": "test"}],
        "principles": [{"text": "lr_W = lr * ratio matters most; width_nnr above 32", "source": "test"}],
        "scales": {scale: {} for scale in ("smoke", "cpu", "full")}})


def _objective(trial: optuna.Trial) -> float:
    """Larger is better; lr > 0.02 diverges (FAIL), x < 0.15 is stopped early (PRUNED at its second report)."""
    p = trial.params
    if p["lr"] > 0.02:
        raise ValueError("diverged")
    value = -abs(p["x"] - 0.3) - abs(math.log10(p["lr"] / 3e-3)) / 4 - abs(math.log2(p["width"] / 64)) / 8
    if p["x"] < 0.15:
        trial.report(value - 1.0, 1)
        trial.report(value - 0.5, 2)
        raise optuna.TrialPruned()
    return value + (0.1 if p["act"] == "tanh" else 0.0)


def _optimize(study: optuna.Study, space: SearchSpace, n: int) -> None:
    for _ in range(n):
        trial = study.ask(distributions(space))
        try:
            study.tell(trial, _objective(trial))
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except ValueError:
            study.tell(trial, state=TrialState.FAIL)


def _study(space: SearchSpace, seed: int, storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=TreeSampler(space, seed=seed), storage=storage,
                                study_name="tree", load_if_exists=True)
    if not study.trials:
        study.enqueue_trial(dict(WARM_START))  # as Ray's OptunaSearch enqueues the warm starts
    return study


def _differing(a: dict, b: dict) -> set[str]:
    return {k for k in a if a[k] != b[k]}


def test_every_child_mutates_exactly_one_parameter_within_bounds() -> None:
    space = _space()
    study = _study(space, seed=0)
    _optimize(study, space, 1)
    optimum = {"x": 0.3, "lr": 3e-3, "width": 64, "act": "tanh"}  # a failed node that would be the best parent
    study.add_trial(create_trial(state=TrialState.FAIL, params=optimum, distributions=distributions(space)))
    _optimize(study, space, 120)
    trials = study.trials
    by_number = {t.number: t for t in trials}
    assert trials[0].user_attrs[SOURCE_ATTR] == "warm_start" and trials[0].params == WARM_START
    children = [t for t in trials if t.user_attrs.get(SOURCE_ATTR) == "child"]
    assert len(children) == len(trials) - 2  # the warm start finished first: every later trial is a child
    for child in children:
        parent = by_number[child.user_attrs[PARENT_ATTR]]
        assert parent.number < child.number and parent.state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert _differing(child.params, parent.params) == {child.user_attrs[MUTATED_ATTR]}
        for name, value in child.params.items():
            assert space.params[name].contains(value), (name, value)
        assert isinstance(child.params["width"], int)
    assert [c.user_attrs[ROLE_ATTR] for c in children] == [ROLES[c.number % 4] for c in children]
    assert set(ROLES) == {"exploit", "explore", "principle-test"}
    assert {c.user_attrs[MUTATED_ATTR] for c in children if c.user_attrs[ROLE_ATTR] == "principle-test"} == {
        "lr", "width"}
    configs = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(configs)) == len(configs)  # never a configuration the study already holds
    states = {t.state for t in trials}
    assert {TrialState.PRUNED, TrialState.FAIL} <= states, "the objective's PRUNED and FAIL branches were not hit"
    assert study.best_value > -0.1  # it climbs: the optimum is 0.1, the warm start -0.74


def test_ucb_counts_descendants_normalises_by_direction_and_never_picks_a_failed_node() -> None:
    space = _space()
    study = optuna.create_study(direction="minimize")
    dist = {"x": FloatDistribution(0.0, 1.0)}

    def add(state: TrialState, value: float | None, parent: int | None, x: float) -> None:
        attrs = {} if parent is None else {PARENT_ATTR: parent}
        study.add_trial(create_trial(state=state, value=value, params={"x": x}, distributions=dist, user_attrs=attrs,
                                     intermediate_values={1: 5.0} if state == TrialState.PRUNED else None))

    add(TrialState.COMPLETE, 1.0, None, 0.1)  # 0: best (minimize)
    add(TrialState.COMPLETE, 3.0, 0, 0.2)  # 1: worst complete
    add(TrialState.PRUNED, None, 0, 0.3)  # 2
    add(TrialState.FAIL, None, 1, 0.4)  # 3
    scores = TreeSampler(space, seed=0, exploration=0.5).ucb_scores(study, study.trials)
    bonus = 0.5 * math.sqrt(4)
    assert set(scores) == {0, 1, 2}
    assert scores[0] == pytest.approx((1.0 + bonus / (1 + 4), 1.0, 4))  # V = 1 + 3 descendants
    assert scores[1] == pytest.approx((0.0 + bonus / (1 + 2), 0.0, 2))
    assert scores[2] == pytest.approx((0.0 + bonus / (1 + 1), 0.0, 1))


def test_a_new_sampler_over_the_stored_study_continues_the_tree() -> None:
    space = _space()
    storage = optuna.storages.InMemoryStorage()
    first = _study(space, seed=5, storage=storage)
    _optimize(first, space, 20)
    resumed = optuna.load_study(study_name="tree", storage=storage, sampler=TreeSampler(space, seed=5))
    _optimize(resumed, space, 20)

    trials = resumed.trials
    finished_before = {tuple(sorted(t.params.items())) for t in trials[:20]}
    later = trials[20:]
    assert all(PARENT_ATTR in t.user_attrs for t in later)
    assert any(t.user_attrs[PARENT_ATTR] < 20 for t in later)  # it grows the old tree, not a new one
    assert not finished_before & {tuple(sorted(t.params.items())) for t in later}
    uninterrupted = _study(space, seed=5)
    _optimize(uninterrupted, space, 40)
    assert [t.params for t in uninterrupted.trials] == [t.params for t in trials]  # the same sweep
    other_seed = _study(space, seed=6)
    _optimize(other_seed, space, 40)
    assert [t.params for t in other_seed.trials] != [t.params for t in trials]


def test_principle_params_are_the_parameters_principles_name() -> None:
    assert principle_params(_space()) == ["lr", "width"]  # `width_nnr` names width; nothing names x or act
    space = load_space("chaotic_10k")  # a principle names the derived lr_W = lr * lr_W_ratio
    assert {"lr", "lr_W_ratio"} <= set(principle_params(space)) <= set(space.params)
    assert isinstance(space.params["batch_size"], CategoricalParam)


@pytest.mark.slow
def test_smoke_sweep_with_the_tree_searcher_writes_the_regime_table(results: Path, ray_2gpu) -> None:
    from tuner.cli import main as cli

    assert cli(["sweep", "--space", "chaotic_10k", "--scale", "smoke", "--samples", "6", "--max-concurrent", "2",
                "--searcher", "tree", "--name", "tree-smoke"]) == 0
    assert (results / "chaotic_10k" / "tree-smoke" / "regime_table.md").read_text().count("|") > 10
    study = optuna.load_study(study_name="tree-smoke", storage=f"sqlite:///{results / 'optuna.db'}")
    by_number = {t.number: t for t in study.trials}
    children = [t for t in study.trials if t.user_attrs.get(SOURCE_ATTR) == "child"]
    assert children, [t.user_attrs for t in study.trials]
    for child in children:
        assert _differing(child.params, by_number[child.user_attrs[PARENT_ATTR]].params) == {
            child.user_attrs[MUTATED_ATTR]}
