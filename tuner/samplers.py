"""Optuna samplers that use a space's priors: the fixed s/(s+n) rule, an adaptive rule that weighs prior,
incumbent and model draws by the evidence in the study, and the seeds' one-mutation tree search.

Every decision the adaptive and tree samplers take is written to the trial's user attributes
(`SOURCE_ATTR`, ...), and read back from the study, never from sampler state: a new sampler over the same
stored study (a resumed sweep) carries on where the old one stopped. Their own randomness (the tree's
configurations; the adaptive rule's choice of source and its prior and incumbent draws, not the base sampler's)
comes from a generator seeded by (seed, trial number), not from a stream that depends on how many asks came
before.
"""

from __future__ import annotations

import ast
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tuner.space import CategoricalParam, FloatParam, IntParam, SearchSpace

Param = FloatParam | IntParam | CategoricalParam

# trial user attributes written by the samplers
SOURCE_ATTR = "source"  # warm_start, then prior | incumbent | base (adaptive) or prior | child (tree)
WEIGHTS_ATTR = "source_weights"  # adaptive: the source probabilities this trial was drawn with
INCUMBENT_ATTR = "incumbent"  # adaptive: number of the trial an incumbent draw perturbed
STEP_ATTR = "incumbent_step"  # adaptive: the step of an incumbent draw, in prior spreads
AROUND_MODE_ATTR = "around_mode"  # adaptive: a startup prior draw made locally around the prior's mode
OWN_DRAWS_ATTR = "base_own_draws"  # adaptive: a base draw modelled on the base sampler's own draws only
PARENT_ATTR = "parent"  # tree: number of the parent trial
MUTATED_ATTR = "mutated"  # tree: the one parameter the child changed
ROLE_ATTR = "role"  # tree: exploit | explore | principle-test

SOURCES = ("prior", "incumbent", "base")
ROLES = ("exploit", "exploit", "explore", "principle-test")  # the seeds' four parallel slots, by trial number


# ---- one parameter: units, prior draws, perturbations -----------------------------------------------
def _units(p: FloatParam | IntParam, value: float) -> float:
    """A value in the parameter's search units: log10 for log-scaled parameters."""
    return math.log10(value) if p.log else float(value)


def _from_units(p: FloatParam | IntParam, x: float) -> float | int:
    value = min(max(10.0**x if p.log else x, p.low), p.high)
    return round(value) if isinstance(p, IntParam) else float(value)


def _bounds(p: FloatParam | IntParam) -> tuple[float, float]:
    return _units(p, p.low), _units(p, p.high)


def step_scale(p: FloatParam | IntParam, use_prior: bool = True) -> float:
    """The natural step of a numeric parameter, in its units: the prior's spread, else a quarter of the range."""
    if use_prior and p.prior is not None:
        return p.prior.spread
    lo, hi = _bounds(p)
    return (hi - lo) / 4


def _choice_weights(p: CategoricalParam, use_prior: bool) -> np.ndarray:
    w = np.asarray(p.weights if (use_prior and p.weights) else [1.0] * len(p.choices), dtype=float)
    return w / w.sum()


def prior_draw(p: Param, rng: np.random.Generator, use_prior: bool = True) -> Any:
    """One value from the parameter's prior: categorical by weight; numeric normal around the centre (log10 units
    for log parameters), truncated to the bounds by resampling; uniform over the bounds without a prior."""
    if isinstance(p, CategoricalParam):
        return p.choices[int(rng.choice(len(p.choices), p=_choice_weights(p, use_prior)))]
    lo, hi = _bounds(p)
    if not use_prior or p.prior is None:
        return _from_units(p, rng.uniform(lo, hi))
    mu = _units(p, p.prior.center)
    for _ in range(100):
        x = rng.normal(mu, p.prior.spread)
        if lo <= x <= hi:
            break
    else:
        x = min(max(x, lo), hi)
    return _from_units(p, x)


def perturb(p: Param, value: Any, rng: np.random.Generator, scale: float, use_prior: bool = True,
            flip_probability: float = 1.0) -> Any:
    """`value` moved by a normal step of `scale` × the parameter's `step_scale` in its units, truncated to the
    bounds by resampling; a categorical flips, with `flip_probability`, to another choice drawn by weight."""
    if isinstance(p, CategoricalParam):
        others = [i for i, c in enumerate(p.choices) if c != value]
        if not others or rng.random() >= flip_probability:
            return value
        w = _choice_weights(p, use_prior)[others]
        w = w / w.sum() if w.sum() > 0 else np.full(len(others), 1 / len(others))
        return p.choices[others[int(rng.choice(len(others), p=w))]]
    lo, hi = _bounds(p)
    sd = scale * step_scale(p, use_prior)
    x0 = _units(p, value)
    for _ in range(100):
        x = rng.normal(x0, sd)
        if lo <= x <= hi:
            break
    else:
        x = min(max(x, lo), hi)
    return _from_units(p, x)


def mutate(p: Param, value: Any, rng: np.random.Generator, step: float, use_prior: bool = True) -> Any:
    """A different value: a normal step of sd `step` in the parameter's units, clipped to the bounds (int: rounded,
    at least one unit); a categorical flips to another choice, by weight if `use_prior`. `value` itself only when
    the parameter has a single choice."""
    if isinstance(p, CategoricalParam):
        return perturb(p, value, rng, 1.0, use_prior, flip_probability=1.0)
    lo, hi = _bounds(p)
    x0 = _units(p, value)
    for _ in range(20):
        moved = _from_units(p, min(max(x0 + rng.normal(0.0, step), lo), hi))
        if moved != value:
            return moved
    if isinstance(p, IntParam):  # steps below one unit: move by one, inward at a bound
        return value + 1 if value < p.high else value - 1
    return _from_units(p, rng.uniform(lo, hi))


def mutable(space: SearchSpace) -> list[str]:
    """Parameters a child can change: all but single-choice categoricals."""
    return [n for n, p in space.params.items() if not (isinstance(p, CategoricalParam) and len(p.choices) < 2)]


def principle_params(space: SearchSpace) -> list[str]:
    """Tunable parameters a principle of the space names, as a word or a word's stem before `_` (`omega_f` names
    omega), directly or through a derived setting it names (`lr_W = lr * lr_W_ratio`: lr and lr_W_ratio)."""
    text = " ".join(p.text for p in space.principles)
    named = {n for n in [*space.params, *space.derived] if re.search(rf"(?<!\w){re.escape(n)}(?![^\W_])", text)}
    for setting, expr in space.derived.items():
        if setting in named:
            named |= {node.id for node in ast.walk(ast.parse(expr, mode="eval")) if isinstance(node, ast.Name)}
    movable = set(mutable(space))
    return [n for n in space.params if n in named and n in movable]


# ---- the study: ranking and per-trial randomness ------------------------------------------------------
def _sign(study: optuna.Study) -> float:
    """+1 when larger is better for the first (the pruned-on) objective."""
    return 1.0 if study.directions[0] == StudyDirection.MAXIMIZE else -1.0


def _last_report(trial: FrozenTrial) -> float | None:
    """A PRUNED trial's last intermediate value: where ASHA stopped it; None without reports."""
    return trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None


def _rank_key(trial: FrozenTrial, sign: float) -> tuple[int, float]:
    if trial.state == TrialState.COMPLETE and trial.values:
        return 0, -sign * trial.values[0]
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        return 1, -sign * _last_report(trial)
    return 2, 0.0


def ranked(trials: Sequence[FrozenTrial], sign: float) -> list[FrozenTrial]:
    """Finished trials, best first: COMPLETE by value, then PRUNED by their last intermediate value (ASHA stopped
    them as worse than their rung's peers, so none outranks a trial that ran every report), then FAIL."""
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    return sorted(done, key=lambda t: (*_rank_key(t, sign), t.number))


def _lineage_root(trial: FrozenTrial, by_number: Mapping[int, FrozenTrial]) -> str | None:
    """The source that found the region of an incumbent draw: follow the incumbents it perturbed back to the first
    draw that was not an incumbent draw (a warm start counts as the prior's)."""
    seen = set()
    while trial.user_attrs.get(SOURCE_ATTR) == "incumbent" and trial.number not in seen:
        seen.add(trial.number)
        parent = by_number.get(trial.user_attrs.get(INCUMBENT_ATTR))
        if parent is None:
            return None
        trial = parent
    source = trial.user_attrs.get(SOURCE_ATTR)
    return "prior" if source == "warm_start" else source


def incumbent_scale(trials: Sequence[FrozenTrial], sign: float, initial: float, damping: float,
                    bounds: tuple[float, float]) -> float:
    """The step of the next incumbent draw (a multiple of the prior spread), adapted by the 1/5 success rule of
    the (1+1)-ES: replaying the finished incumbent draws in number order, a draw that beat the trial it perturbed
    multiplies the step by exp(0.8 / damping), any other (worse, PRUNED, FAIL) by exp(-0.2 / damping), so the
    step holds where one draw in five succeeds, grows on a slope and shrinks near an optimum. Clipped to
    `bounds` × `initial`."""
    by_number = {t.number: t for t in trials}
    log_scale, (low, high) = 0.0, (math.log(bounds[0]), math.log(bounds[1]))
    for t in sorted(trials, key=lambda t: t.number):
        if t.user_attrs.get(SOURCE_ATTR) != "incumbent" or not t.state.is_finished():
            continue
        parent = by_number.get(t.user_attrs.get(INCUMBENT_ATTR))
        won = (t.state == TrialState.COMPLETE and parent is not None and parent.state == TrialState.COMPLETE
               and sign * (t.values[0] - parent.values[0]) > 0)
        log_scale = min(max(log_scale + (0.8 if won else -0.2) / damping, low), high)
    return initial * math.exp(log_scale)


def prior_mode(p: Param) -> Any:
    """The prior's most likely value: its centre, the heaviest choice, the middle of the range without a prior."""
    if isinstance(p, CategoricalParam):
        return p.choices[int(np.argmax(_choice_weights(p, True)))]
    if p.prior is not None:
        return _from_units(p, _units(p, p.prior.center))
    lo, hi = _bounds(p)
    return _from_units(p, (lo + hi) / 2)


def stall_length(trials: Sequence[FrozenTrial], sign: float, tolerance: float, only: str | None = None) -> int:
    """Finished trials since the best COMPLETE value last improved by more than `tolerance` × (median - best), the
    median over every value seen so far: COMPLETE values and the last report of PRUNED trials (trials in number
    order). The PRUNED count because under ASHA the COMPLETE trials are mostly one basin's: their median sits next
    to the best, and every step of a local search inside that basin would count as progress. With `only`, only the
    trials of that source count."""
    best, values, stall = None, [], 0
    for t in sorted(trials, key=lambda t: t.number):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            continue
        stall += only is None or t.user_attrs.get(SOURCE_ATTR) == only
        if t.state == TrialState.PRUNED and t.intermediate_values:
            values.append(sign * _last_report(t))
        if t.state != TrialState.COMPLETE or not t.values:
            continue
        v = sign * t.values[0]
        if best is None or v - best > tolerance * (best - float(np.median(values))):
            stall = 0
        best = v if best is None else max(best, v)
        values.append(v)
    return stall


def is_warm_start(trial: FrozenTrial) -> bool:
    """Enqueued with fixed parameters (Ray's OptunaSearch enqueues the warm starts)."""
    return "fixed_params" in trial.system_attrs


class _TrialSeeded(BaseSampler):
    """A sampler whose randomness for trial n comes from a generator seeded by (seed, n): independent of the
    order in which trials are asked and of what the sampler saw before."""

    def __init__(self, seed: int | None):
        self._seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else seed

    def reseed_rng(self) -> None:
        self._seed = int(np.random.SeedSequence().entropy % 2**63)

    def _rng(self, trial: FrozenTrial) -> np.random.Generator:
        return np.random.default_rng([self._seed, trial.number])

    @staticmethod
    def _record(study: optuna.Study, trial: FrozenTrial, attrs: Mapping[str, Any]) -> None:
        for key, value in attrs.items():
            study._storage.set_trial_user_attr(trial._trial_id, key, value)


# ---- the fixed rule ------------------------------------------------------------------------------
class PriorWeightedSampler(BaseSampler):
    """πBO-style prior weighting over any base sampler (the fixed rule, `--prior-rule fixed`).

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
            return prior_draw(self._params[param_name], self._rng)
        return self._base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._base.after_trial(study, trial, state, values)


# ---- the adaptive prior sampler --------------------------------------------------------------------
@dataclass
class _Draw:
    """How one trial is drawn: its source, its generator, for local draws the configuration it perturbs and the
    step, and for base draws whether the base sampler sees only its own draws (`_OwnDraws`)."""

    source: str
    rng: np.random.Generator
    centre: dict[str, Any] | None = None
    scale: float = 0.0
    own_draws: bool = False


class AdaptivePriorSampler(_TrialSeeded):
    """Each trial comes from one of three sources: a draw from the space's priors, a draw around the incumbent
    (the best trial that ran every report; each numeric parameter moved by a normal step of `scale` × its prior
    spread, each categorical flipped with probability `flip_probability`), or the base sampler (TPE).

    **Startup.** The first `n_startup` trials (by number, warm starts included) are a pure function of (seed,
    trial number), so a seeded sweep asks the same configurations after an interrupt and resume, however its
    parallel trials finish: prior with probability d(n) = s / (s + n) (`prior_strength` s), base otherwise.
    With `mode_first`, trial 0 — when it is not a warm start, i.e. the space has none — is the prior's mode
    (`prior_mode`), as PriorBand evaluates the default configuration first; a share `startup_local` of the other
    startup prior draws are local draws around that mode (step `local_scale`), the startup's stand-in for
    incumbent draws.

    **After startup**, for trial n:

        w_prior = d(n) + (1 - d(n)) · e_prior,   w_src = (1 - d(n)) · e_src  (incumbent, base)

    d(n) is πBO's decaying faith in the prior; e_src is the evidence, PriorBand's idea: the share of
    rate_src = (hits_src + κ·q) / (n_src + κ) over the available sources, where n_src counts the finished
    trials a source produced, hits_src those among the current top fraction q (at least `min_top` trials) of
    all finished trials ranked by `ranked` (PRUNED below COMPLETE, FAIL last), and κ pseudo-trials at the
    neutral rate q keep a source with little evidence near neutral. Warm starts count for no source, but an
    incumbent draw also counts for the source that found its region (`_lineage_root`; a warm start's region is
    the prior's), so that a good prior is not crowded out of the top by the incumbent draws it made possible.
    Every available source keeps at least `min_weight`. The incumbent source is available once the incumbent is
    not a warm start, or after `incumbent_after` finished trials.

    **Stalls.** A deceptive prior, confident on a good local optimum, keeps its weight by evidence alone: its
    draws land in the top until something better is found. So the exploiting sources keep only part of their
    weight, the rest going to the base sampler: the prior keeps p / (p + stall), where stall (`stall_length`)
    counts the finished trials since the best value last improved by more than `tolerance` × (median - best)
    and p = `patience`; the incumbent keeps p_i / (p_i + stall_i), stall_i counting only the incumbent draws
    since that improvement (p_i = `incumbent_patience`; None: the prior's rule), so that a local search which
    still improves keeps going while one that has converged in its basin hands over. Once stall reaches
    `base_own_draws_after`, the base sampler models only its own draws (`_OwnDraws`): TPE fitted on every trial
    would take the stalled basin's trials as its good set and search there. `patience=None` turns the stall
    rules off.

    **Steps.** An incumbent draw's step starts at `local_scale` and adapts by the (1+1)-ES success rule
    (`incumbent_scale`, damping `step_damping`; None keeps it fixed), so that a region's optimum is refined
    instead of circled at the prior's spread.

    The defaults were chosen on the Hartmann good / medium / bad priors against plain TPE and PriorBand
    (`benchmarks/samplers_synthetic.py`, notes/issue14.md).
    """

    def __init__(self, base: BaseSampler, space: SearchSpace, seed: int | None = None, *, n_startup: int = 10,
                 top_fraction: float = 0.2, min_top: int = 3, pseudo_trials: float = 2.0, min_weight: float = 0.05,
                 incumbent_after: int = 5, local_scale: float = 0.25, flip_probability: float = 0.2,
                 patience: float | None = 5.0, tolerance: float = 0.01, incumbent_patience: float | None = 5.0,
                 base_own_draws_after: float | None = 10.0, step_damping: float | None = 1.0,
                 step_bounds: tuple[float, float] = (1 / 64, 4.0), mode_first: bool = True,
                 startup_local: float = 0.5):
        super().__init__(seed)
        self._base = base
        self._params = dict(space.params)
        self._mode = {name: prior_mode(p) for name, p in self._params.items()}
        self._strength = space.prior_strength
        self.n_startup, self.top_fraction, self.min_top = n_startup, top_fraction, min_top
        self.pseudo_trials, self.min_weight, self.incumbent_after = pseudo_trials, min_weight, incumbent_after
        self.local_scale, self.flip_probability = local_scale, flip_probability
        self.patience, self.tolerance, self.incumbent_patience = patience, tolerance, incumbent_patience
        self.base_own_draws_after = base_own_draws_after
        self.step_damping, self.step_bounds = step_damping, step_bounds
        self.mode_first, self.startup_local = mode_first, startup_local
        self._draws: dict[int, _Draw] = {}

    def prior_decay(self, n: int) -> float:
        """πBO-style faith in the prior at trial n: s / (s + n)."""
        return self._strength / (self._strength + n)

    def reseed_rng(self) -> None:
        super().reseed_rng()
        self._base.reseed_rng()

    def weights(self, study: optuna.Study, number: int) -> tuple[dict[str, float], FrozenTrial | None]:
        """The source probabilities of trial `number`, and the incumbent, from the study alone."""
        d = self.prior_decay(number)
        trials = study.get_trials(deepcopy=False)
        order = ranked(trials, _sign(study))
        if number < self.n_startup or not order:
            return {"prior": d, "incumbent": 0.0, "base": 1.0 - d}, None
        best = order[0] if order[0].state == TrialState.COMPLETE else None
        available = ["prior", "base"]
        if best is not None and (not is_warm_start(best) or len(order) >= self.incumbent_after):
            available.insert(1, "incumbent")
        top = {t.number for t in order[:max(self.min_top, math.ceil(self.top_fraction * len(order)))]}
        by_number = {t.number: t for t in order}
        produced, hits = Counter(), Counter()
        for t in order:
            credited = {t.user_attrs.get(SOURCE_ATTR), _lineage_root(t, by_number)}
            produced.update(credited)
            hits.update(credited if t.number in top else ())
        kq = self.pseudo_trials * self.top_fraction
        rate = {s: (hits[s] + kq) / (produced[s] + self.pseudo_trials) for s in available}
        w = dict.fromkeys(SOURCES, 0.0)
        for s in available:
            w[s] = (d if s == "prior" else 0.0) + (1 - d) * rate[s] / sum(rate.values())
        if self.patience is not None:
            stall = stall_length(trials, _sign(study), self.tolerance)
            keep = {"prior": self.patience / (self.patience + stall)}
            if self.incumbent_patience is None:
                keep["incumbent"] = keep["prior"]
            else:
                local = stall_length(trials, _sign(study), self.tolerance, only="incumbent")
                keep["incumbent"] = self.incumbent_patience / (self.incumbent_patience + local)
            for s, share in keep.items():
                w["base"] += (1 - share) * w[s]
                w[s] *= share
        for s in available:
            w[s] = max(self.min_weight, w[s])
        total = sum(w.values())
        return {s: v / total for s, v in w.items()}, best if "incumbent" in available else None

    def _own_draws_only(self, study: optuna.Study, number: int) -> bool:
        """Whether the base sampler sees only its own draws: once the search has stalled long enough."""
        if self.patience is None or self.base_own_draws_after is None or number < self.n_startup:
            return False
        return stall_length(study.get_trials(deepcopy=False), _sign(study), self.tolerance) >= self.base_own_draws_after

    def _base_view(self, study: optuna.Study, trial: FrozenTrial) -> optuna.Study | _OwnDraws:
        draw = self._draws.get(trial.number)
        return _OwnDraws(study) if draw is not None and draw.own_draws else study

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._base.before_trial(study, trial)
        if is_warm_start(trial):
            self._record(study, trial, {SOURCE_ATTR: "warm_start"})
            return
        rng = self._rng(trial)
        weights, incumbent = self.weights(study, trial.number)
        source = SOURCES[int(rng.choice(len(SOURCES), p=[weights[s] for s in SOURCES]))]
        attrs: dict[str, Any] = {WEIGHTS_ATTR: {s: round(w, 4) for s, w in weights.items()}}
        draw = _Draw(source, rng)
        if self.mode_first and trial.number == 0:
            draw = _Draw("prior", rng, centre=self._mode)                       # the mode itself: no step
        elif self.mode_first and source == "prior" and trial.number < self.n_startup \
                and rng.random() < self.startup_local:
            draw = _Draw("prior", rng, centre=self._mode, scale=self.local_scale)
            attrs[AROUND_MODE_ATTR] = True
        elif source == "incumbent":
            scale = self.local_scale
            if self.step_damping is not None:
                scale = incumbent_scale(study.get_trials(deepcopy=False), _sign(study), self.local_scale,
                                        self.step_damping, self.step_bounds)
            draw = _Draw("incumbent", rng, centre=dict(incumbent.params), scale=scale)
            attrs.update({INCUMBENT_ATTR: incumbent.number, STEP_ATTR: round(scale, 6)})
        elif source == "base":
            draw = _Draw("base", rng, own_draws=self._own_draws_only(study, trial.number))
            attrs[OWN_DRAWS_ATTR] = draw.own_draws
        attrs[SOURCE_ATTR] = draw.source
        self._record(study, trial, attrs)
        self._draws[trial.number] = draw

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._base.infer_relative_search_space(self._base_view(study, trial), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        draw = self._draws.get(trial.number)
        if draw is not None and draw.source != "base":
            return {}
        return self._base.sample_relative(self._base_view(study, trial), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        draw = self._draws.get(trial.number)
        p = self._params.get(param_name)
        if draw is not None and p is not None and draw.source != "base":
            if draw.centre is not None and param_name in draw.centre:
                if not draw.scale:
                    return draw.centre[param_name]
                return perturb(p, draw.centre[param_name], draw.rng, draw.scale,
                               flip_probability=self.flip_probability)
            return prior_draw(p, draw.rng)
        return self._base.sample_independent(self._base_view(study, trial), trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._draws.pop(trial.number, None)
        self._base.after_trial(study, trial, state, values)


class _OwnDraws:
    """The study as the base sampler sees it while stalled: only its own draws (and unfinished trials)."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _keep(self, t: FrozenTrial) -> bool:
        return t.user_attrs.get(SOURCE_ATTR) == "base" or not t.state.is_finished()

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list[FrozenTrial]:
        return [t for t in self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
                if self._keep(t)]

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states) if self._keep(t)]

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


# ---- the seeds' tree search ------------------------------------------------------------------------
class TreeSampler(_TrialSeeded):
    """The seeds' exploration tree as an Optuna sampler.

    Nodes are finished trials (warm starts are roots); before any trial has finished, configurations are
    drawn from the priors. Otherwise a child is its parent's configuration with exactly one parameter mutated
    (`mutate`: a normal step of the prior's spread in the parameter's units, clipped; categoricals flip by
    weight), never a configuration the study already holds. The parent is chosen by the PUCT-like score of the
    seeds' code (`compute_ucb_scores`):

        UCB(u) = v(u) + c · √N / (1 + V(u))

    v(u) is the first objective min-max normalised over the COMPLETE nodes (1 = best, the direction from the
    study; PRUNED nodes 0; FAIL nodes are never parents), N the number of nodes, V(u) = 1 + u's descendants
    (running ones included, so that parallel slots spread over parents) and c = `exploration`. The seeds use
    c = 1.414 on raw R², whose values differ by hundredths; on v in [0, 1] that explores far too much: on
    Hartmann-3/6 (`benchmarks/samplers_synthetic.py`, notes/issue14_samplers.md) c = 0.05 and 0.1 solve the
    most seeds, 0.5 and 1.414 the fewest. The default 0.1 keeps a little more exploration for noisy metrics.

    Roles cycle with the trial number like the seeds' four slots: exploit, exploit (highest UCB, a step of half
    the prior's spread on a random parameter), explore (the least-visited node, best first, a step of a quarter
    of the range — not the prior's spread, so that a misleading prior's neighbourhood can be left — on the
    parameter mutated least so far) and principle-test (highest UCB, a step of the prior's spread on a
    parameter a principle names; explore when none does). Parent, mutated parameter and role go to the
    trial's user attributes.
    """

    def __init__(self, space: SearchSpace, seed: int | None = None, *, exploration: float = 0.1, priors: bool = True,
                 max_tries: int = 20):
        super().__init__(seed)
        self._params = dict(space.params)
        self._mutable = mutable(space)
        self._principled = principle_params(space)
        self.exploration, self.priors, self.max_tries = exploration, priors, max_tries
        self._planned: dict[int, dict[str, Any]] = {}

    def ucb_scores(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> dict[int, tuple[float, float, int]]:
        """(UCB, normalised value, visits V) of every node that may be a parent, by trial number."""
        sign = _sign(study)
        nodes = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
        values = {t.number: sign * t.values[0] for t in nodes if t.state == TrialState.COMPLETE and t.values}
        lo, hi = (min(values.values()), max(values.values())) if values else (0.0, 0.0)
        parent_of = {t.number: t.user_attrs.get(PARENT_ATTR) for t in trials}
        visits = Counter({t.number: 1 for t in nodes})
        for child, parent in parent_of.items():
            seen, node = {child}, parent
            while node is not None and node not in seen:
                visits[node] += 1
                seen.add(node)
                node = parent_of.get(node)
        bonus = self.exploration * math.sqrt(len(nodes))
        out = {}
        for t in nodes:
            if t.state == TrialState.FAIL:
                continue
            if t.number not in values:  # PRUNED
                v = 0.0
            else:
                v = (values[t.number] - lo) / (hi - lo) if hi > lo else 1.0
            out[t.number] = (v + bonus / (1 + visits[t.number]), v, visits[t.number])
        return out

    def _plan_child(self, study: optuna.Study, trial: FrozenTrial, rng: np.random.Generator
                    ) -> dict[str, Any] | None:
        trials = study.get_trials(deepcopy=False)
        scores = self.ucb_scores(study, [t for t in trials if t.number != trial.number])
        if not scores or not self._mutable:
            return None
        by_number = {t.number: t for t in trials}
        role = ROLES[trial.number % len(ROLES)]
        if role == "principle-test" and not self._principled:
            role = "explore"
        if role == "explore":
            parent = min(scores, key=lambda n: (scores[n][2], -scores[n][1], n))
            counts = Counter(t.user_attrs.get(MUTATED_ATTR) for t in trials)
            least = min(counts[n] for n in self._mutable)
            candidates = [n for n in self._mutable if counts[n] == least]
        else:
            parent = max(scores, key=lambda n: (scores[n][0], -n))
            candidates = self._principled if role == "principle-test" else self._mutable
        known = {_config_key(t.params) for t in trials if t.params}
        base = dict(by_number[parent].params)
        for _ in range(self.max_tries):
            name = candidates[int(rng.integers(len(candidates)))]
            child = {**base, name: mutate(self._params[name], base[name], rng, self._step(name, role), self.priors)}
            if _config_key(child) not in known:
                break
        self._record(study, trial, {SOURCE_ATTR: "child", PARENT_ATTR: parent, MUTATED_ATTR: name, ROLE_ATTR: role})
        return child

    def _step(self, name: str, role: str) -> float:
        """The sd of a numeric mutation, in the parameter's units: half the prior's spread to exploit, the spread
        to test a principle, a quarter of the range to explore."""
        p = self._params[name]
        if isinstance(p, CategoricalParam):
            return 0.0
        if role == "explore":
            return step_scale(p, use_prior=False)
        return (0.5 if role == "exploit" else 1.0) * step_scale(p, self.priors)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if is_warm_start(trial):
            self._record(study, trial, {SOURCE_ATTR: "warm_start"})
            return
        rng = self._rng(trial)
        child = self._plan_child(study, trial, rng)
        if child is None:
            child = {n: prior_draw(p, rng, self.priors) for n, p in self._params.items()}
            self._record(study, trial, {SOURCE_ATTR: "prior"})
        self._planned[trial.number] = child

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        planned = self._planned.get(trial.number, {})
        if param_name in planned:
            return planned[param_name]
        # a parameter a warm start leaves out
        return prior_draw(self._params[param_name], self._rng(trial), self.priors)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._planned.pop(trial.number, None)


def _config_key(params: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))
