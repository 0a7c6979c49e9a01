"""Verdicts on a space's checkable principles: each claim (`tuner.claims`) is confirmed, contradicted, untested or
inconclusive on a trials table, with the evidence (trial counts, values, the trials that decide it) and, when it is
not decided, the trial that would decide it.

The trials table is `tuner.table.trials_frame`'s (one row per trial: `status`, `outcome`, `trial_id`, `param.*`,
`setting.*`, `metric.*`), optionally with a `scale` column, or the same rows pooled over a family's sweeps from
MLflow (`tuner.tracking.family_trials`). A claim's quantity is read from `param.NAME`, else `setting.NAME`, else the
space's fixed value, and an expression is evaluated per trial.

- **untested**: no trial can speak to the claim: none of this space has run (at the claim's scales), or the space
  (at the trials' scales) cannot produce the trials the claim needs: the parameter is pinned or its range does not
  reach one side, a `where` condition is excluded, the claim speaks of another scale, or the family reports no
  such metric;
- **inconclusive**: more trials of this space could decide it (fewer than the claim's minimum evidence, or a
  split top-k, or overlapping importances);
- **confirmed** / **contradicted**: the evidence the claim asks for is there, and says so.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from tuner.claims import (
    METRIC_PREFIX,
    Beats,
    Ceiling,
    Drives,
    FailsBeyond,
    Interval,
    Match,
    MetricIn,
    OptimumIn,
    Reachable,
    SucceedsWithin,
    describe_match,
    expression_names,
)
from tuner.family import SCALES, Family, get_family
from tuner.outcome import Outcome, best_trial
from tuner.space import CategoricalParam, IntParam, SearchSpace, evaluate
from tuner.table import fmt, importance_spread

Status = Literal["confirmed", "contradicted", "untested", "inconclusive"]
STATUSES: tuple[Status, ...] = ("confirmed", "contradicted", "untested", "inconclusive")
SHOWN_TRIALS = 5  # deciding trial ids shown in tables (all of them are in the JSON)


class Verdict(BaseModel):
    """One claim judged on trials."""

    space: str
    index: int  # the principle's position in the space file
    principle: str
    source: str
    kind: str
    claim: str  # the claim in words
    status: Status
    evidence: str
    counts: dict[str, int] = {}
    trials: list[str] = []  # the trials that decide it
    decide: str = ""  # for untested / inconclusive: the trial (or sweep) that would decide it


@dataclass(frozen=True)
class _Judgement:
    status: Status
    evidence: str
    counts: dict[str, int]
    trials: list[str]
    decide: str = ""


# ---- reading quantities off the trials ---------------------------------------------------------------
def _measured(value: Any) -> str:
    """A metric value in evidence: 6 significant digits (R² near 1 must not read as 1)."""
    return f"{float(value):.6g}"


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _column(space: SearchSpace, trials: pd.DataFrame, name: str) -> pd.Series:
    """A parameter or setting per trial: the tuned value, else the resolved setting, else the space's fixed value,
    else its derived expression."""
    out = pd.Series([None] * len(trials), index=trials.index, dtype=object)
    for column in (f"param.{name}", f"setting.{name}"):
        if column in trials:
            out = out.where(out.notna(), trials[column].astype(object))
    if name in space.fixed:
        out = out.where(out.notna(), space.fixed[name])
    if out.isna().any() and name in space.derived:
        out = out.where(out.notna(), quantity(space, trials, space.derived[name]).astype(object))
    return out


def quantity(space: SearchSpace, trials: pd.DataFrame, expr: str) -> pd.Series:
    """The claim's parameter (its raw values) or expression (floats, NaN where it cannot be computed) per trial."""
    names = expression_names(expr)
    if names == {expr.strip()}:
        return _column(space, trials, expr.strip())
    columns = {n: _column(space, trials, n) for n in names}

    def one(index: Any) -> float:
        try:
            return float(evaluate(expr, {n: _plain(c[index]) for n, c in columns.items()}))
        except (ArithmeticError, ValueError, TypeError, KeyError):
            return math.nan

    return pd.Series([one(i) for i in trials.index], index=trials.index, dtype=float)


def _equal(a: Any, b: Any) -> bool:
    a, b = _plain(a), _plain(b)
    if a is None or b is None:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)
    return str(a) == str(b)


def _in_interval(value: Any, interval: Interval) -> bool:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (interval.low is None or value >= interval.low) and (interval.high is None or value <= interval.high)


def matches(values: pd.Series, match: Match) -> pd.Series:
    """Which values match a claim's value: in a range, among a list, or equal to one value."""
    if isinstance(match, Interval):
        return values.map(lambda v: _in_interval(v, match)).astype(bool)
    wanted = match if isinstance(match, list) else [match]
    return values.map(lambda v: any(_equal(v, w) for w in wanted)).astype(bool)


# ---- what the space can produce ---------------------------------------------------------------------
@dataclass(frozen=True)
class Domain:
    """The values a quantity can take in a space: a continuous [min, max], or a finite set."""

    values: tuple[Any, ...]
    continuous: bool

    def can_match(self, match: Match) -> bool:
        if self.continuous and isinstance(match, Interval):
            lo, hi = min(self.values), max(self.values)
            return (match.low is None or hi >= match.low) and (match.high is None or lo <= match.high)
        if self.continuous:
            wanted = match if isinstance(match, list) else [match]
            return any(_in_interval(w, Interval(low=min(self.values), high=max(self.values))) for w in wanted)
        return bool(matches(pd.Series(self.values, dtype=object), match).any())

    def can_miss(self, interval: Interval) -> bool:
        if self.continuous:
            lo, hi = min(self.values), max(self.values)
            return (interval.low is not None and lo < interval.low) or \
                (interval.high is not None and hi > interval.high)
        return not bool(matches(pd.Series(self.values, dtype=object), interval).all())

    def __str__(self) -> str:
        if self.continuous:
            return f"[{fmt(min(self.values))}, {fmt(max(self.values))}]"
        if len(self.values) == 1:
            return f"fixed at {self.values[0]}"
        return "{" + ", ".join(fmt(v) for v in self.values) + "}"


def _name_values(spaces: Sequence[SearchSpace], name: str) -> tuple[list[Any], bool] | None:
    """The candidate values of a parameter or fixed setting over the spaces (range ends for a numeric one)."""
    values: list[Any] = []
    continuous = False
    for space in spaces:
        if name in space.params:
            p = space.params[name]
            if isinstance(p, CategoricalParam):
                values += p.choices
            else:
                values += [p.low, p.high]
                continuous = continuous or not isinstance(p, IntParam) or p.high - p.low > 1
        elif name in space.fixed:
            values.append(space.fixed[name])
        else:
            return None
    return values, continuous


def domain(spaces: Sequence[SearchSpace], expr: str) -> Domain | None:
    """The values `expr` can take over `spaces` (one per scale the trials ran at): a parameter's range or choices,
    a fixed value, or an expression (a derived setting's too) evaluated at the corners of its parameters' ranges.
    None when it cannot be bounded."""
    space = spaces[0]
    expr = space.derived.get(expr.strip(), expr)
    names = expression_names(expr)
    if names == {expr.strip()}:
        found = _name_values(spaces, expr.strip())
        return None if found is None else Domain(tuple(dict.fromkeys(found[0])), found[1])
    bases = sorted({b for n in names for b in (expression_names(space.derived[n]) if n in space.derived else {n})})
    found = {b: _name_values(spaces, b) for b in bases}
    if any(f is None for f in found.values()):
        return None
    corners = []
    for combo in itertools.product(*(dict.fromkeys(found[b][0]) for b in bases)):
        values = dict(zip(bases, combo))
        try:
            values |= {k: evaluate(e, values) for k, e in space.derived.items() if k in names}
            corners.append(float(evaluate(expr, values)))
        except (ArithmeticError, ValueError, TypeError, KeyError):
            return None
    return Domain(tuple(sorted(set(corners))), any(f[1] for f in found.values())) if corners else None


def _example(spaces: Sequence[SearchSpace], name: str, wanted: Interval | Match, outside: bool = False) -> str:
    """' (e.g. --set NAME=V)' for a tuned parameter: a value of its range that matches `wanted` (or, with
    `outside`, lies outside the interval `wanted`); '' when none is at hand."""
    p = spaces[0].params.get(name)
    if p is None:
        return ""
    if isinstance(p, CategoricalParam):
        pool = pd.Series(p.choices, dtype=object)
        hits = ~matches(pool, wanted) if outside else matches(pool, wanted)
        return f" (e.g. --set {name}={pool[hits].iloc[0]})" if hits.any() else ""
    pieces = []
    if outside and isinstance(wanted, Interval):
        if wanted.low is not None and p.low < wanted.low:
            pieces.append((p.low, min(wanted.low, p.high)))
        if wanted.high is not None and p.high > wanted.high:
            pieces.append((max(wanted.high, p.low), p.high))
    elif isinstance(wanted, Interval):
        lo, hi = max(p.low, wanted.low if wanted.low is not None else p.low), \
            min(p.high, wanted.high if wanted.high is not None else p.high)
        pieces = [(lo, hi)] if lo <= hi else []
    elif not outside:
        options = wanted if isinstance(wanted, list) else [wanted]
        pieces = [(v, v) for v in options if _in_interval(v, Interval(low=p.low, high=p.high))]
    if not pieces:
        return ""
    width = (lambda a, b: math.log(b / a)) if p.log else (lambda a, b: b - a)
    lo, hi = max(pieces, key=lambda ab: width(*ab))
    value = math.sqrt(lo * hi) if p.log else (lo + hi) / 2
    return f" (e.g. --set {name}={round(value) if isinstance(p, IntParam) else fmt(value)})"


# ---- the claims ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Context:
    """The trials a claim looks at (its scales and `where` applied) and how to judge them."""

    space: SearchSpace
    spaces: tuple[SearchSpace, ...]  # the space at each scale the trials ran at, for domains
    family: Family
    trials: pd.DataFrame
    metric: str
    mode: str

    @property
    def metric_values(self) -> pd.Series:
        column = f"metric.{self.metric}"
        if column not in self.trials:
            return pd.Series(np.nan, index=self.trials.index, dtype=float)
        return pd.to_numeric(self.trials[column], errors="coerce")

    def finished(self) -> pd.DataFrame:
        """Trials that ran every report with a finite metric."""
        ok = (self.trials["status"] == Outcome.FINISHED.label) & np.isfinite(self.metric_values)
        return self.trials[ok]

    def ended(self) -> pd.DataFrame:
        """Trials that finished, diverged or raised (pruned ones are left out: they were stopped, not ended)."""
        return self.trials[self.trials["status"] != Outcome.PRUNED.label]

    def value_of(self, row_id: Any) -> str:
        return _measured(self.metric_values[row_id])

    def sorted_best_first(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame.loc[self.metric_values[frame.index].sort_values(ascending=self.mode == "min").index]

    def better(self, a: float, b: float) -> float:
        """How much better a is than b (positive: better)."""
        return a - b if self.mode == "max" else b - a


def _ids(frame: pd.DataFrame) -> list[str]:
    return [str(t) for t in frame["trial_id"]]


def _more(needed: int, have: int, what: str) -> str:
    return f"{needed - have} more {what} (have {have} of {needed})"


def _untested_range(param: str, dom: Domain, need: str) -> _Judgement:
    return _Judgement("untested", f"{param} is {dom} in this space: no trial can have {need}", {}, [],
                      f"trials with {need}, from a space (or scale) whose {param} allows it")


def _optimum_in(ctx: _Context, claim: OptimumIn) -> _Judgement:
    inside_range = Interval(low=claim.low, high=claim.high)
    dom = domain(ctx.spaces, claim.param)
    if dom is not None and not dom.can_match(inside_range):
        return _untested_range(claim.param, dom, f"{claim.param} in {inside_range}")
    if dom is not None and not dom.can_miss(inside_range):
        return _untested_range(claim.param, dom, f"{claim.param} outside {inside_range}")
    done = ctx.finished()
    values = quantity(ctx.space, done, claim.param)
    done, values = done[values.notna()], values[values.notna()]
    inside = matches(values, inside_range)
    n, n_in = len(done), int(inside.sum())
    counts = {"finished": n, "inside": n_in, "outside": n - n_in}
    missing = []
    if n < claim.min_finished:
        missing.append(_more(claim.min_finished, n, "finished trials"))
    if n_in < claim.min_each_side:
        missing.append(_more(claim.min_each_side, n_in, f"finished trials with {claim.param} in {inside_range}")
                       + _example(ctx.spaces, claim.param, inside_range))
    if n - n_in < claim.min_each_side:
        missing.append(_more(claim.min_each_side, n - n_in, f"finished trials with {claim.param} outside "
                                                            f"{inside_range}")
                       + _example(ctx.spaces, claim.param, inside_range, outside=True))
    if missing:
        return _Judgement("inconclusive", f"{n} finished trials, {n_in} inside {inside_range}", counts, [],
                          "run " + "; ".join(missing))
    top = ctx.sorted_best_first(done).head(claim.top_k)
    top_in = int(inside[top.index].sum())
    shown = ", ".join(f"{fmt(_plain(values[i]))} ({ctx.value_of(i)})" for i in top.index)
    evidence = (f"top {len(top)} of {n} finished trials have {claim.param} = {shown} ({ctx.metric}); "
                f"{top_in} inside {inside_range}")
    counts["top_inside"] = top_in
    if 2 * top_in > len(top):
        return _Judgement("confirmed", evidence, counts, _ids(top))
    if top_in == 0:
        return _Judgement("contradicted", evidence, counts, _ids(top))
    return _Judgement("inconclusive", evidence, counts, _ids(top),
                      f"more finished trials near the optimum, inside and outside {inside_range}: the top "
                      f"{len(top)} split {top_in} in, {len(top) - top_in} out")


def _failing(ctx: _Context, frame: pd.DataFrame, extra: Iterable[str]) -> pd.Series:
    broken = frame["status"].isin([Outcome.DIVERGED.label, Outcome.ERROR.label])
    return broken | frame["outcome"].isin(list(extra))


def _fails_beyond(ctx: _Context, claim: FailsBeyond) -> _Judgement:
    beyond_range = Interval(high=claim.below) if claim.below is not None else Interval(low=claim.above)
    bound = claim.below if claim.below is not None else claim.above
    side = f"< {bound:g}" if claim.below is not None else f"> {bound:g}"
    dom = domain(ctx.spaces, claim.param)
    if dom is not None and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in dom.values):
        lo, hi = min(dom.values), max(dom.values)
        reach_beyond = lo < bound if claim.below is not None else hi > bound
        reach_within = hi >= bound if claim.below is not None else lo <= bound
        if not (reach_beyond and reach_within):
            need = f"{claim.param} {side}" if not reach_beyond else f"{claim.param} on the other side of {bound:g}"
            return _untested_range(claim.param, dom, need)
    ended = ctx.ended()
    values = pd.to_numeric(quantity(ctx.space, ended, claim.param), errors="coerce")
    ended, values = ended[values.notna()], values[values.notna()]
    beyond = (values < bound) if claim.below is not None else (values > bound)
    failing = _failing(ctx, ended, claim.failing)
    n_b, n_w = int(beyond.sum()), int((~beyond).sum())
    f_b, f_w = int((failing & beyond).sum()), int((failing & ~beyond).sum())
    pruned = int((ctx.trials["status"] == Outcome.PRUNED.label).sum())
    counts = {"beyond": n_b, "failing_beyond": f_b, "within": n_w, "failing_within": f_w, "pruned_left_out": pruned}
    what = ", ".join(["diverged", "error", *claim.failing])
    if n_b < claim.min_each_side or n_w < claim.min_each_side:
        missing = []
        if n_b < claim.min_each_side:
            missing.append(_more(claim.min_each_side, n_b, f"ended trials with {claim.param} {side}")
                           + _example(ctx.spaces, claim.param, beyond_range))
        if n_w < claim.min_each_side:
            missing.append(_more(claim.min_each_side, n_w, f"ended trials on the other side of {bound:g}")
                           + _example(ctx.spaces, claim.param, beyond_range, outside=True))
        return _Judgement("inconclusive", f"{n_b} ended trials beyond, {n_w} within ({pruned} pruned left out)",
                          counts, [], "run " + "; ".join(missing))
    rate_b, rate_w = f_b / n_b, f_w / n_w
    evidence = (f"{f_b}/{n_b} trials with {claim.param} {side} fail ({rate_b:.0%}) vs {f_w}/{n_w} within "
                f"({rate_w:.0%}); failing = {what}; {pruned} pruned left out")
    if rate_b >= claim.min_rate and rate_b > rate_w:
        return _Judgement("confirmed", evidence, counts, _ids(ended[failing & beyond]))
    survivors = ended[~failing & beyond]
    return _Judgement("contradicted", evidence, counts, _ids(survivors if len(survivors) else ended[failing & ~beyond]))


def _succeeds_within(ctx: _Context, claim: SucceedsWithin) -> _Judgement:
    inside_range = Interval(low=claim.low, high=claim.high)
    dom = domain(ctx.spaces, claim.param)
    if dom is not None and not dom.can_match(inside_range):
        return _untested_range(claim.param, dom, f"{claim.param} in {inside_range}")
    ended = ctx.ended()
    ended = ended[matches(quantity(ctx.space, ended, claim.param), inside_range)]
    success = (ended["status"] == Outcome.FINISHED.label) & (ended["outcome"] == ctx.family.success)
    n, n_ok = len(ended), int(success.sum())
    counts = {"ended_inside": n, ctx.family.success: n_ok}
    if n < claim.min_trials:
        return _Judgement("inconclusive", f"{n} ended trials with {claim.param} in {inside_range}", counts, [],
                          "run " + _more(claim.min_trials, n, f"trials with {claim.param} in {inside_range}")
                          + _example(ctx.spaces, claim.param, inside_range))
    evidence = f"{n_ok}/{n} ended trials with {claim.param} in {inside_range} are {ctx.family.success}"
    if n_ok / n >= claim.min_rate:
        return _Judgement("confirmed", evidence, counts, _ids(ended[success]))
    return _Judgement("contradicted", evidence, counts, _ids(ended[~success]))


def _beats(ctx: _Context, claim: Beats) -> _Judgement:
    dom = domain(ctx.spaces, claim.param)
    for match in (claim.value, claim.over):
        if dom is not None and not dom.can_match(match):
            return _untested_range(claim.param, dom, f"{claim.param} {describe_match(match)}")
    done = ctx.finished()
    values = quantity(ctx.space, done, claim.param)
    group_a, group_b = done[matches(values, claim.value)], done[matches(values, claim.over)]
    label_a, label_b = describe_match(claim.value), describe_match(claim.over)
    if claim.method == "matched":
        return _matched(ctx, claim, group_a, group_b)
    counts = {"value": len(group_a), "over": len(group_b)}
    missing = [_more(claim.min_each, len(g), f"finished trials with {claim.param} {label}")
               + _example(ctx.spaces, claim.param, match)
               for g, label, match in ((group_a, label_a, claim.value), (group_b, label_b, claim.over))
               if len(g) < claim.min_each]
    if missing:
        return _Judgement("inconclusive", f"{len(group_a)} finished trials with {claim.param} {label_a}, "
                                          f"{len(group_b)} with {label_b}", counts, [], "run " + "; ".join(missing))
    best_a = best_trial(group_a, ctx.metric, ctx.mode)
    best_b = best_trial(group_b, ctx.metric, ctx.mode)
    a, b = float(best_a[f"metric.{ctx.metric}"]), float(best_b[f"metric.{ctx.metric}"])
    gain = ctx.better(a, b)
    evidence = (f"best {ctx.metric} with {claim.param} {label_a}: {_measured(a)} ({best_a['trial_id']}, of "
                f"{len(group_a)}); with {label_b}: {_measured(b)} ({best_b['trial_id']}, of {len(group_b)}); "
                f"better by {gain:.3g}" + (f" (a tie within {claim.by:g})" if abs(gain) <= claim.by else ""))
    deciding = [str(best_a["trial_id"]), str(best_b["trial_id"])]
    if abs(gain) <= claim.by:
        return _Judgement("inconclusive", evidence, counts, deciding,
                          f"more finished trials with {claim.param} {label_a} and {label_b} (or matched pairs) to "
                          f"separate them by more than {claim.by:g}")
    return _Judgement("confirmed" if gain > 0 else "contradicted", evidence, counts, deciding)


def _matched(ctx: _Context, claim: Beats, group_a: pd.DataFrame, group_b: pd.DataFrame) -> _Judgement:
    """Pairs of finished trials, one per group, equal in every other tuned parameter."""
    others = [c for c in ctx.trials.columns if c.startswith("param.") and c != f"param.{claim.param}"]

    def key(row: pd.Series) -> tuple:
        return tuple(round(v, 9) if isinstance(v := _plain(row[c]), float) else v for c in others)

    by_key: dict[tuple, list[pd.Series]] = {}
    for _, row in group_b.iterrows():
        by_key.setdefault(key(row), []).append(row)
    column = f"metric.{ctx.metric}"
    wins, losses, pairs, deciding = 0, 0, 0, []
    for _, a in group_a.iterrows():
        for b in by_key.get(key(a), []):
            pairs += 1
            gain = ctx.better(float(a[column]), float(b[column]))
            wins += gain > claim.by
            losses += gain < -claim.by
            deciding += [str(a["trial_id"]), str(b["trial_id"])]
    counts = {"pairs": pairs, "wins": wins, "losses": losses}
    if pairs < claim.min_each:
        return _Judgement("inconclusive", f"{pairs} matched pairs of finished trials", counts, [],
                          f"run {_more(claim.min_each, pairs, 'matched pairs')}: the same configuration with "
                          f"{claim.param} {describe_match(claim.value)} and {describe_match(claim.over)} "
                          f"(--set {claim.param}=...)")
    evidence = (f"{pairs} matched pairs: {claim.param} {describe_match(claim.value)} better in {wins}, worse in "
                f"{losses}, a tie (within {claim.by:g}) in {pairs - wins - losses} ({ctx.metric})")
    deciding = list(dict.fromkeys(deciding))
    if wins == losses:
        return _Judgement("inconclusive", evidence, counts, deciding, "more matched pairs")
    return _Judgement("confirmed" if wins > losses else "contradicted", evidence, counts, deciding)


def _best_text(ctx: _Context, done: pd.DataFrame) -> tuple[pd.Series | None, str]:
    """The best finished trial and 'best V (id) of N finished trials' (or 'no finished trial')."""
    best = best_trial(done, ctx.metric, ctx.mode)
    if best is None:
        return None, "no finished trial"
    return best, f"best {ctx.metric} {ctx.value_of(best.name)} ({best['trial_id']}) of {len(done)} finished trials"


def _reachable(ctx: _Context, claim: Reachable) -> _Judgement:
    done = ctx.finished()
    best, shown = _best_text(ctx, done)
    counts = {"finished": len(done)}
    if best is not None and ctx.better(float(best[f"metric.{ctx.metric}"]), claim.value) >= 0:
        return _Judgement("confirmed", f"{shown} reaches {claim.value:g}", counts, [str(best["trial_id"])])
    evidence = f"{shown} falls short of {claim.value:g}" if best is not None else shown
    if len(done) >= claim.min_finished:
        return _Judgement("contradicted", evidence, counts, [str(best["trial_id"])])
    return _Judgement("inconclusive", evidence, counts, [],
                      "run " + _more(claim.min_finished, len(done), "finished trials"))


def _ceiling(ctx: _Context, claim: Ceiling) -> _Judgement:
    done = ctx.finished()
    gains = ctx.metric_values[done.index].map(lambda v: ctx.better(v, claim.value))
    above = ctx.sorted_best_first(done[gains > 0])
    counts = {"finished": len(done), "better": len(above)}
    if len(above):
        return _Judgement("contradicted", f"{len(above)} of {len(done)} finished trials pass {claim.value:g}: best "
                                          f"{ctx.value_of(above.index[0])} ({above['trial_id'].iloc[0]})",
                          counts, _ids(above))
    best, shown = _best_text(ctx, done)
    evidence = f"{shown} stays within {claim.value:g}" if best is not None else shown
    if len(done) >= claim.min_finished:
        return _Judgement("confirmed", evidence, counts, [str(best["trial_id"])])
    return _Judgement("inconclusive", evidence, counts, [],
                      "run " + _more(claim.min_finished, len(done), "finished trials"))


def _covering(space: SearchSpace, trials: pd.DataFrame) -> SearchSpace:
    """`space` with each parameter's range widened to the values the trials took (pooled scales differ)."""
    params = {}
    for name, p in space.params.items():
        seen = trials[f"param.{name}"].map(_plain)
        if isinstance(p, CategoricalParam):
            params[name] = p.model_copy(update={"choices": list(dict.fromkeys([*p.choices, *seen])), "weights": None})
        else:
            params[name] = p.model_copy(update={"low": min(p.low, seen.min()), "high": max(p.high, seen.max())})
    return space.model_copy(update={"params": params})


def _drives(ctx: _Context, claim: Drives) -> _Judgement:
    if claim.param not in ctx.space.params:
        where = f"fixed at {ctx.space.fixed[claim.param]}" if claim.param in ctx.space.fixed else "not tuned"
        return _Judgement("untested", f"{claim.param} is {where} in this space: its importance cannot be measured",
                          {}, [], f"a sweep that tunes {claim.param}")
    tuned = [name for name in ctx.space.params if f"param.{name}" in ctx.trials]
    if claim.param not in tuned:
        return _Judgement("untested", f"no trial tuned {claim.param}", {}, [], f"a sweep that tunes {claim.param}")
    done = ctx.finished().dropna(subset=[f"param.{name}" for name in tuned])
    counts = {"finished": len(done)}
    if len(done) < claim.min_finished:
        return _Judgement("inconclusive", f"{len(done)} finished trials", counts, [],
                          "run " + _more(claim.min_finished, len(done), "finished trials"))
    searched = ctx.space.model_copy(update={"params": {n: ctx.space.params[n] for n in tuned}})
    spread = importance_spread(_covering(searched, done), done, ctx.metric, ctx.mode)
    if spread.empty:
        return _Judgement("inconclusive", f"importance not computable over {len(done)} finished trials", counts, [],
                          "run more finished trials that differ in their metric")
    shares = "; ".join(f"{name} {row['mean']:.2f} ± {row['sd']:.2f}" for name, row in spread.head(3).iterrows())
    evidence = f"fANOVA importance over {len(done)} finished trials: {shares}"
    lead = spread.iloc[0]
    own = spread.loc[claim.param] if claim.param in spread.index else pd.Series({"mean": 0.0, "sd": 0.0})
    best = [str(best_trial(done, ctx.metric, ctx.mode)["trial_id"])]
    if spread.index[0] == claim.param:
        runner = spread.iloc[1] if len(spread) > 1 else None
        if runner is None or lead["mean"] - lead["sd"] > runner["mean"] + runner["sd"]:
            return _Judgement("confirmed", evidence, counts, best)
    elif lead["mean"] - lead["sd"] > own["mean"] + own["sd"]:
        return _Judgement("contradicted", evidence, counts, best)
    return _Judgement("inconclusive", evidence + " (the leading shares overlap)", counts, [],
                      "run more finished trials, spread over the parameters' ranges")


def _metric_in(ctx: _Context, claim: MetricIn) -> _Judgement:
    values = ctx.metric_values
    reported = ctx.trials[np.isfinite(values)]
    inside = values[reported.index].between(claim.low, claim.high)
    n, n_in = len(reported), int(inside.sum())
    counts = {"reported": n, "inside": n_in}
    if n < claim.min_trials:
        return _Judgement("inconclusive", f"{n} trials report {claim.metric}", counts, [],
                          "run " + _more(claim.min_trials, n, f"trials that report {claim.metric} (finished ones)"))
    low, high = fmt(values[reported.index].min()), fmt(values[reported.index].max())
    shown = low if low == high else f"{low}-{high}"
    evidence = f"{claim.metric} {shown} over {n} trials; {n_in} in [{claim.low:g}, {claim.high:g}]"
    if n_in / n >= claim.min_share:
        return _Judgement("confirmed", evidence, counts, _ids(reported[inside]))
    return _Judgement("contradicted", evidence, counts, _ids(reported[~inside]))


JUDGES: dict[type, Callable[[_Context, Any], _Judgement]] = {
    OptimumIn: _optimum_in, FailsBeyond: _fails_beyond, SucceedsWithin: _succeeds_within, Beats: _beats,
    Reachable: _reachable, Ceiling: _ceiling, Drives: _drives, MetricIn: _metric_in}


def _normalised(trials: pd.DataFrame) -> pd.DataFrame:
    trials = trials.copy()
    for column, default in (("status", Outcome.FINISHED.label), ("outcome", ""), ("trial_id", "")):
        if column not in trials:
            trials[column] = default
    return trials.reset_index(drop=True)


def _judge(space: SearchSpace, family: Family, claim: Any, trials: pd.DataFrame) -> _Judgement:
    """Scales and `where` first (untested when the space cannot produce what they ask), then the claim's kind."""
    metric = claim.metric or family.metric
    mode = claim.mode or family.mode
    if claim.scales and "scale" in trials:
        present = sorted({s for s in trials["scale"] if isinstance(s, str)})
        trials = trials[trials["scale"].isin(claim.scales)]
        if trials.empty and present:
            return _Judgement("untested", f"the claim speaks of scale {', '.join(claim.scales)}; these trials ran "
                                          f"at {', '.join(present)}", {}, [],
                              f"a sweep at --scale {min(claim.scales, key=SCALES.index)}")
    if trials.empty:
        at = [s for s in claim.scales if s in space.scales]
        return _Judgement("untested", "no trial of this space has run" + (f" at {', '.join(at)}" if at else ""), {},
                          [], f"a sweep of {space.name}" + (f" at --scale {at[0]}" if at else ""))
    scales = sorted({s for s in trials["scale"] if s in space.scales}) if "scale" in trials \
        else [s for s in claim.scales if s in space.scales]
    spaces = tuple(space.at_scale(s) for s in scales) or (space,)
    for key, match in claim.where.items():
        if key.startswith(METRIC_PREFIX):
            metric_values = trials.get(key, pd.Series(np.nan, index=trials.index))
            trials = trials[matches(pd.to_numeric(metric_values, errors="coerce"), match)]
            continue
        dom = domain(spaces, key)
        if dom is not None and not dom.can_match(match):
            return _Judgement("untested", f"the claim looks at {key} {describe_match(match)}; {key} is {dom} in this "
                                          f"space", {}, [], f"a space whose {key} can be {describe_match(match)}")
        trials = trials[matches(quantity(space, trials, key), match)]
    finished = trials[trials["status"] == Outcome.FINISHED.label]
    if len(finished) and f"metric.{metric}" not in finished:
        return _Judgement("untested", f"no trial reports {metric}", {}, [], f"a family that reports {metric}")
    judged = JUDGES[type(claim)](_Context(space, spaces, family, trials, metric, mode), claim)
    if judged.status == "inconclusive" and claim.scales:
        judged = replace(judged, decide=f"{judged.decide}, at --scale {' or '.join(claim.scales)}")
    if "scale" in trials and len(trials) and judged.status != "untested":
        judged = replace(judged, evidence=f"{judged.evidence} (trials at {', '.join(scales)})")
    return judged


def verdicts(space: SearchSpace, trials: pd.DataFrame, family: Family | None = None) -> list[Verdict]:
    """A verdict for each principle of `space` that carries a claim, in the file's order, judged on `trials`."""
    family = family or get_family(space.family)
    trials = _normalised(trials)
    out = []
    for index, principle in enumerate(space.principles):
        claim = principle.claim
        if claim is None:
            continue
        judged = _judge(space, family, claim, trials)
        metric = claim.metric or family.metric
        described = claim.describe(metric) + (f" on {metric}" if claim.metric and claim.quantity() else "")
        if claim.where:
            described += " where " + ", ".join(f"{k} {describe_match(m)}" for k, m in claim.where.items())
        if claim.scales:
            described += f" (at {', '.join(claim.scales)})"
        out.append(Verdict(space=space.name, index=index, principle=principle.text, source=principle.source,
                           kind=claim.kind, claim=described, status=judged.status, evidence=judged.evidence,
                           counts=judged.counts, trials=judged.trials, decide=judged.decide))
    return out


def pooled_verdicts(family: Family, spaces: Sequence[SearchSpace],
                    trials: pd.DataFrame) -> tuple[list[Verdict], dict[str, list[str]]]:
    """Each space's verdicts over the trials of all its sweeps (`tuner.tracking.family_trials`). A sweep whose
    `--set` changed the regime (anything but cost knobs, the data draw and the space's own parameters) is left
    out. Returns the verdicts and, per space, the sweeps left out."""
    out, left_out = [], {}
    for space in spaces:
        own = trials[trials["space"] == space.name] if "space" in trials else trials.iloc[:0]
        own, dropped = _same_regime(space, family, own)
        if dropped:
            left_out[space.name] = dropped
        out += verdicts(space, own, family)
    return out, left_out


def _same_regime(space: SearchSpace, family: Family, trials: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The trials of sweeps in the space's regime, with pinned parameters filled in from their `--set` values."""
    trials = trials.copy()
    keep = pd.Series(True, index=trials.index)
    for column in [c for c in trials.columns if c.startswith("override.")]:
        key, given = column.removeprefix("override."), trials[column].notna()
        if key in space.params:
            target = f"param.{key}"
            trials[target] = trials[target].where(trials[target].notna(), trials[column]) if target in trials \
                else trials[column]
        elif key not in family.cost_knobs and key != family.draw:
            keep &= ~given
    dropped = sorted(set(trials.loc[~keep, "sweep"])) if "sweep" in trials else []
    return trials[keep], dropped


# ---- presenting -----------------------------------------------------------------------------------
def counts(verdict_list: Sequence[Verdict]) -> dict[str, int]:
    """How many verdicts of each status."""
    return {status: sum(v.status == status for v in verdict_list) for status in STATUSES}


def _shown_trials(verdict: Verdict) -> str:
    more = len(verdict.trials) - SHOWN_TRIALS
    return ", ".join(verdict.trials[:SHOWN_TRIALS]) + (f" (+{more})" if more > 0 else "")


def verdict_frame(verdict_list: Sequence[Verdict]) -> pd.DataFrame:
    """One row per verdict: space, principle, claim, verdict, evidence, trials, what would decide it."""
    columns = ["Space", "Principle", "Claim", "Verdict", "Evidence", "Trials", "To decide"]
    return pd.DataFrame([[v.space, v.principle, v.claim, v.status, v.evidence, _shown_trials(v), v.decide]
                         for v in verdict_list], columns=columns)


def summary_line(verdict_list: Sequence[Verdict]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts(verdict_list).items())


def principles_markdown(space: SearchSpace, verdict_list: Sequence[Verdict], title: str) -> str:
    """principles.md: every principle of the space with its verdict and evidence (text-only ones marked)."""
    by_index = {v.index: v for v in verdict_list}
    tally = (f"{summary_line(verdict_list)} (of {len(verdict_list)} checkable claims; "
             f"{len(space.principles) - len(verdict_list)} principles are text only)")
    lines = [f"# Principles: {title}", "", tally, ""]
    for index, principle in enumerate(space.principles):
        verdict = by_index.get(index)
        if verdict is None:
            lines.append(f"- *text only*: {principle.text} [{principle.source}]")
            continue
        lines.append(f"- **{verdict.status}**: {principle.text} [{principle.source}]")
        lines += verdict_details(verdict)
    return "\n".join(lines) + "\n"


def verdict_details(verdict: Verdict, every_trial: bool = False) -> list[str]:
    """The markdown lines under a principle's bullet: the claim, the evidence, the deciding trials (the first
    few, or `every_trial`) and what would decide it."""
    lines = [f"  - claim: {verdict.claim}", f"  - evidence: {verdict.evidence}"]
    if verdict.trials:
        lines.append(f"  - trials: {', '.join(verdict.trials) if every_trial else _shown_trials(verdict)}")
    if verdict.decide:
        lines.append(f"  - to decide: {verdict.decide}")
    return lines


def principles_html(space: SearchSpace, verdict_list: Sequence[Verdict]) -> str:
    """The report page's principles list: each principle with its verdict, claim, evidence and what would decide it."""
    by_index = {v.index: v for v in verdict_list}
    items = []
    for index, principle in enumerate(space.principles):
        verdict = by_index.get(index)
        text = f"{html.escape(principle.text)} <i>[{html.escape(principle.source)}]</i>"
        if verdict is None:
            items.append(f'<li><span class="verdict">text only</span> {text}</li>')
            continue
        details = [f"claim: {verdict.claim}", f"evidence: {verdict.evidence}"]
        details += [f"trials: {_shown_trials(verdict)}"] if verdict.trials else []
        details += [f"to decide: {verdict.decide}"] if verdict.decide else []
        items.append(f'<li><span class="verdict {verdict.status}">{verdict.status}</span> {text}<br><small>'
                     + "<br>".join(html.escape(d) for d in details) + "</small></li>")
    return f"<p>{html.escape(summary_line(verdict_list))}</p><ul>{''.join(items)}</ul>"
