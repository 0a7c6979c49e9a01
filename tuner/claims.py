"""Checkable claims: what a space's principle states in a form the tool can test against trials.

A principle in a space file may carry one `claim` (YAML, discriminated by `kind`):

- ``optimum_in``: the optimum of a parameter (or a derived setting, or an expression such as
  ``low_rank / connectivity_rank``) lies in [low, high]: most of the top-k finished trials are there;
- ``fails_beyond``: values below (or above) a bound fail or diverge: failure rates on each side;
- ``succeeds_within``: values in [low, high] succeed (the family's success outcome);
- ``beats``: one value (or range, or set of values) of a parameter beats another: best per group, or matched
  pairs of finished trials that differ in that parameter only;
- ``reachable``: the best finished trial reaches a metric value; ``ceiling``: no finished trial exceeds it;
- ``drives``: the parameter is the most important one (fANOVA share over the finished trials);
- ``metric_in``: a metric (e.g. a data descriptor) lies in [low, high] in most trials.

Every claim may restrict the trials it looks at (``where``: a setting, or ``metric.NAME``, equal to a value or in
a range) and the scales it speaks of (``scales``), names the metric it judges by (default: the family's), and
states the minimum evidence it needs. `tuner.principles` turns claims into verdicts.
"""

from __future__ import annotations

import ast
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

Scalar = StrictBool | StrictInt | StrictFloat | str
METRIC_PREFIX = "metric."  # a `where` key on a metric rather than a setting


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Interval(_Strict):
    """A closed range; an open end is left out."""

    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if self.low is None and self.high is None:
            raise ValueError("a range needs low, high or both")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self

    def __str__(self) -> str:
        if self.low is None:
            return f"<= {self.high:g}"
        if self.high is None:
            return f">= {self.low:g}"
        return f"[{self.low:g}, {self.high:g}]"


Match = Interval | list[Scalar] | Scalar  # a range, any of several values, or one value


def describe_match(match: Match) -> str:
    if isinstance(match, Interval):
        return str(match)
    if isinstance(match, list):
        return "in {" + ", ".join(map(str, match)) + "}"
    return f"= {match}"


class _Claim(_Strict):
    metric: str | None = None  # judged by this metric (default: the family's)
    mode: Literal["max", "min"] | None = None  # which way is better (default: the family's)
    where: dict[str, Match] = {}  # only the trials whose setting (or `metric.NAME`) matches
    scales: list[Literal["smoke", "cpu", "full"]] = []  # the scales the claim speaks of (default: any)

    def quantity(self) -> str | None:
        """The parameter or expression the claim is about (None: a claim on the metric only)."""
        return getattr(self, "param", None)


class _Ranged(_Claim):
    param: str  # a parameter, a derived or fixed setting, or an arithmetic expression over them
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> _Ranged:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self


class OptimumIn(_Ranged):
    kind: Literal["optimum_in"]
    top_k: int = Field(default=3, ge=1)  # the best finished trials that must mostly lie in [low, high]
    min_finished: int = Field(default=5, ge=1)
    min_each_side: int = Field(default=1, ge=1)  # finished trials needed inside and outside the range

    def describe(self, metric: str) -> str:
        return f"optimum of {self.param} in [{self.low:g}, {self.high:g}] (top {self.top_k})"


class FailsBeyond(_Claim):
    kind: Literal["fails_beyond"]
    param: str
    below: float | None = None
    above: float | None = None
    failing: list[str] = []  # outcome labels that count as failing, besides diverged and errored trials
    min_rate: float = Field(default=0.5, gt=0, le=1)  # failure rate beyond the bound that confirms the claim
    min_each_side: int = Field(default=2, ge=1)  # ended trials (not pruned) needed beyond and within the bound

    @model_validator(mode="after")
    def _one_bound(self) -> FailsBeyond:
        if (self.below is None) == (self.above is None):
            raise ValueError("give exactly one of below, above")
        return self

    def describe(self, metric: str) -> str:
        side = f"< {self.below:g}" if self.below is not None else f"> {self.above:g}"
        return f"{self.param} {side} fails"


class SucceedsWithin(_Ranged):
    kind: Literal["succeeds_within"]
    min_rate: float = Field(default=0.5, gt=0, le=1)  # success share in the range that confirms the claim
    min_trials: int = Field(default=3, ge=1)  # ended trials (not pruned) needed in the range

    def describe(self, metric: str) -> str:
        return f"{self.param} in [{self.low:g}, {self.high:g}] succeeds"


class Beats(_Claim):
    kind: Literal["beats"]
    param: str
    value: Match
    over: Match
    method: Literal["best", "matched"] = "best"  # best finished trial per group, or pairs equal elsewhere
    by: float = Field(default=0.0, ge=0)  # a smaller difference in the metric, either way, is a tie: inconclusive
    min_each: int = Field(default=2, ge=1)  # finished trials per group (best) or pairs (matched)

    def describe(self, metric: str) -> str:
        return f"{self.param} {describe_match(self.value)} beats {describe_match(self.over)} ({self.method})"


class Reachable(_Claim):
    kind: Literal["reachable"]
    value: float
    min_finished: int = Field(default=3, ge=1)  # finished trials below it that contradict the claim

    def describe(self, metric: str) -> str:
        return f"{metric} reaches {self.value:g}"


class Ceiling(_Claim):
    kind: Literal["ceiling"]
    value: float
    min_finished: int = Field(default=5, ge=1)  # finished trials below it that confirm the claim

    def describe(self, metric: str) -> str:
        return f"{metric} stays at or below {self.value:g}"


class Drives(_Claim):
    kind: Literal["drives"]
    param: str
    min_finished: int = Field(default=5, ge=2)

    def describe(self, metric: str) -> str:
        return f"{self.param} matters most"


class MetricIn(_Claim):
    kind: Literal["metric_in"]
    metric: str
    low: float
    high: float
    min_share: float = Field(default=0.5, gt=0, le=1)  # share of the trials reporting it that must lie in range
    min_trials: int = Field(default=1, ge=1)

    def describe(self, metric: str) -> str:
        return f"{self.metric} in [{self.low:g}, {self.high:g}]"


Claim = Annotated[OptimumIn | FailsBeyond | SucceedsWithin | Beats | Reachable | Ceiling | Drives | MetricIn,
                  Field(discriminator="kind")]


def expression_names(expr: str) -> set[str]:
    """The names an expression uses (raises SyntaxError for one that does not parse)."""
    return {n.id for n in ast.walk(ast.parse(expr, mode="eval")) if isinstance(n, ast.Name)}


def claim_problems(claim: Any, allowed: set[str]) -> list[tuple[str, str]]:
    """(field, problem) for each setting the claim names that is not among `allowed` (the space's parameters,
    derived and fixed settings) or for an expression that does not parse."""
    problems: list[tuple[str, str]] = []
    quantity = claim.quantity()
    if quantity is not None:
        try:
            names = expression_names(quantity)
        except SyntaxError as err:
            return [("param", f"cannot parse {quantity!r}: {err.msg}")]
        problems += [("param", f"{n!r} is not a parameter, derived or fixed setting") for n in sorted(names - allowed)]
        if isinstance(claim, Beats) and claim.method == "matched" and quantity not in allowed:
            problems.append(("param", "a matched comparison needs a single parameter, not an expression"))
    for key in claim.where:
        if not key.startswith(METRIC_PREFIX) and key not in allowed:
            problem = f"{key!r} is not a parameter, derived or fixed setting (a metric is written {METRIC_PREFIX}NAME)"
            problems.append((f"where.{key}", problem))
    return problems
