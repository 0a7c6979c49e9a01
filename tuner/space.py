"""Declarative search spaces: one YAML file per named regime, validated against its family.

A space file holds the family, the fixed regime settings, the tunable parameters with their
priors, derived parameters, warm starts, the principles they come from, the scales (cost knobs
only) and the scheduler settings. `load_space(name)` finds `search_spaces/<family>/<name>.yaml`
(or a path), validates it and returns a `SearchSpace`.

A scale changes cost knobs only: fixed values in ``settings``, and, in ``params``, a new range and
prior for a tunable parameter whose settings are all cost knobs (itself, or the derived settings
whose expressions use it), e.g. a narrower network width or a smaller steps-per-frame budget on a
CPU. `SearchSpace.at_scale(scale)` is the space searched at that scale: its parameters replace the
base ones (same type), and each warm start, recorded at the seed's scale, keeps its relative position
in the range (in log units for log-scaled parameters), so a seed's widest net stays the widest.
"""

from __future__ import annotations

import ast
import math
import operator
import os
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuner.claims import Claim, claim_problems
from tuner.family import SCALES, Family, get_family
from tuner.validation import TunerInputError, close_names, validate_settings

SPACE_PATH_ENV = "TUNER_SPACE_PATH"  # extra folders of space files, os.pathsep-separated


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Prior(_Strict):
    """Belief about where the optimum lies: a normal around `center` (in log10 units when the
    parameter is log-scaled, so spread 0.3 means a factor of ~2)."""

    center: float
    spread: float = Field(gt=0)


class _NumericParam(_Strict):
    low: float
    high: float
    log: bool = False
    prior: Prior | None = None

    @model_validator(mode="after")
    def _bounds(self) -> _NumericParam:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0 (got {self.low})")
        if self.prior is not None and not self.low <= self.prior.center <= self.high:
            raise ValueError(f"prior center {self.prior.center} is outside [{self.low}, {self.high}]")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high


class FloatParam(_NumericParam):
    type: Literal["float"]


class IntParam(_NumericParam):
    type: Literal["int"]
    low: int
    high: int


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)
    weights: list[float] | None = None  # prior weight per choice

    @model_validator(mode="after")
    def _weights_match(self) -> CategoricalParam:
        if self.weights is not None:
            if len(self.weights) != len(self.choices):
                raise ValueError(f"weights has {len(self.weights)} entries for {len(self.choices)} choices")
            if min(self.weights) < 0 or sum(self.weights) <= 0:
                raise ValueError("weights must be non-negative with a positive sum")
        return self

    def contains(self, value: Any) -> bool:
        return value in self.choices


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class WarmStart(_Strict):
    """A recorded best configuration, evaluated before the searcher proposes anything."""

    params: dict[str, Any]
    recorded: dict[str, float] = {}  # the metric(s) the seed logged for it, at the seed's scale
    # the fixed settings under which `recorded` was measured; must agree with the space's (checked on load)
    regime: dict[str, Any] = {}
    source: str
    carried_from: str | None = None  # a campaign's earlier sweep whose best config this is (tuner.campaign)


class Principle(_Strict):
    text: str
    source: str
    claim: Claim | None = None  # what the tool checks against trials (tuner.claims, tuner.principles)


class Source(_Strict):
    """Where a space comes from: a seed file (and its block), or a published reference for spaces no seed
    holds (e.g. a synthetic benchmark function)."""

    seed: str | None = None
    block: int | None = None
    reference: str | None = None

    @model_validator(mode="after")
    def _seed_or_reference(self) -> Source:
        if self.seed is None and self.reference is None:
            raise ValueError("give the seed file (seed, block) or a published reference (reference)")
        return self


class Scale(_Strict):
    settings: dict[str, Any] = {}  # cost knobs only
    params: dict[str, Param] = {}  # range and prior, at this scale, of tunable parameters that set cost knobs only
    samples: int = Field(default=8, ge=1)
    constraints: dict[str, float] = {}  # metric -> upper bound a feasible trial stays under (e.g. a time budget)


class Objective(_Strict):
    """One objective of a multi-objective sweep."""

    metric: str
    mode: Literal["max", "min"]


class Scheduler(_Strict):
    grace_period: int = Field(default=2, ge=1)  # in reports
    reduction_factor: int = Field(default=3, ge=2)
    # what a trial enters a rung with: its report there (`last`, Ray's ASHA) or its best report so far (`best`, as
    # Optuna's median pruner), for a metric whose transient dips do not last (a high learning rate's spikes)
    rung_value: Literal["last", "best"] = "last"


class SearchSpace(_Strict):
    name: str
    family: str
    description: str
    source: Source
    fixed: dict[str, Any] = {}
    params: dict[str, Param]
    derived: dict[str, str] = {}  # setting -> arithmetic expression over params and fixed settings
    warm_starts: list[WarmStart] = []
    principles: list[Principle] = Field(min_length=1)
    scales: dict[Literal["smoke", "cpu", "full"], Scale]
    scheduler: Scheduler = Scheduler()
    # several objectives make a multi-objective sweep (the first, what ASHA prunes on, is the family's metric)
    objectives: list[Objective] = []
    # after the search, the best `replicate_top` configs re-run on `replicates` further data draws
    replicates: int = Field(default=0, ge=0)
    replicate_top: int = Field(default=1, ge=1)
    prior_strength: float = Field(default=4.0, gt=0)  # P(draw from prior) = s / (s + trials finished)

    @field_validator("scales")
    @classmethod
    def _all_scales(cls, v: dict[str, Scale]) -> dict[str, Scale]:
        missing = [s for s in SCALES if s not in v]
        if missing:
            raise ValueError(f"missing scales {missing}; every space defines {list(SCALES)}")
        return v

    def objectives_of(self, family: Family) -> list[Objective]:
        """The sweep's objectives: the space's, or the family's single metric."""
        return self.objectives or [Objective(metric=family.metric, mode=family.mode)]

    # ---- resolution -------------------------------------------------------------------------
    def base_settings(self, scale: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Fixed regime settings, then the scale's cost knobs, then the user's overrides."""
        return {**self.fixed, **self.scales[scale].settings, **(overrides or {})}

    def resolve(self, base: Mapping[str, Any], tuned: Mapping[str, Any], family: Family) -> dict[str, Any]:
        """Family settings for one trial: base + tuned params + derived params (helper params dropped)."""
        values = {**base, **tuned}
        for key, expr in self.derived.items():
            if key not in base:  # a user override pins a derived setting
                try:
                    values[key] = evaluate(expr, values)
                except (ArithmeticError, ValueError, TypeError, KeyError) as err:
                    used = {n: values.get(n) for n in sorted(_names_in(expr, f"derived.{key}", self.name))}
                    raise TunerInputError(f"{self.name}: derived.{key}: {expr!r} cannot be computed with {used}: "
                                          f"{err}") from None
        return {k: v for k, v in values.items() if k in family.settings.model_fields}

    def trial_settings(self, base: Mapping[str, Any], tuned: Mapping[str, Any], family: Family,
                       where: str = "settings") -> BaseModel:
        """The one way a trial's parameters become validated family settings (TunerInputError naming `where`)."""
        return validate_settings(family.settings, self.resolve(base, tuned, family), where=where)

    def at_scale(self, scale: str) -> SearchSpace:
        """The space searched at `scale`: the scale's parameter ranges, warm starts moved into them."""
        scaled = {k: p for k, p in self.scales[scale].params.items() if k in self.params}  # not pinned
        if not scaled:
            return self
        params = {**self.params, **scaled}
        warm = [w.model_copy(update={"params": {k: _move(self.params[k], params[k], v) for k, v in w.params.items()}})
                for w in self.warm_starts]
        return self.model_copy(update={"params": params, "warm_starts": warm})

    def prior_centers(self) -> dict[str, Any]:
        """The most likely configuration under the priors (a check that priors resolve to valid settings)."""
        out: dict[str, Any] = {}
        for name, p in self.params.items():
            if isinstance(p, CategoricalParam):
                w = p.weights or [1.0] * len(p.choices)
                out[name] = p.choices[max(range(len(w)), key=w.__getitem__)]
            elif p.prior is not None:
                out[name] = type(p.low)(p.prior.center) if isinstance(p, IntParam) else p.prior.center
            else:
                out[name] = math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
                out[name] = round(out[name]) if isinstance(p, IntParam) else out[name]
        return out

    def pin(self, overrides: Mapping[str, Any]) -> SearchSpace:
        """A copy where `--set` values of tunable parameters are fixed (removed from the search)."""
        pinned = {k: v for k, v in overrides.items() if k in self.params}
        if not pinned:
            return self
        params = {k: v for k, v in self.params.items() if k not in pinned}
        warm = [w.model_copy(update={"params": {k: v for k, v in w.params.items() if k not in pinned}})
                for w in self.warm_starts]
        return self.model_copy(update={"params": params, "fixed": {**self.fixed, **pinned}, "warm_starts": warm})

    # ---- validation against the family ------------------------------------------------------
    def check(self, family: Family, where: str) -> None:
        """Cross-checks that need the family; raises TunerInputError naming file and field."""

        def fail(field: str, msg: str) -> None:
            raise TunerInputError(f"{where}: {field}: {msg}")

        fields = set(family.settings.model_fields)
        if self.family != family.name:
            fail("family", f"{self.family!r} does not match {family.name!r}")
        for key in self.fixed:
            if key not in fields:
                fail(f"fixed.{key}", f"not a {family.name} setting.{close_names(key, fields)}")
        for scale, spec in self.scales.items():
            for key in spec.settings:
                if key not in family.cost_knobs:
                    fail(f"scales.{scale}.settings.{key}",
                         f"a scale may change only cost knobs: {', '.join(sorted(family.cost_knobs))}")
            for key, p in spec.params.items():
                if key not in self.params:
                    fail(f"scales.{scale}.params.{key}", f"not a tunable parameter: {', '.join(self.params)}")
                if p.type != self.params[key].type:
                    fail(f"scales.{scale}.params.{key}", f"must keep the parameter's type {self.params[key].type!r}")
                sets = ({key} & fields) | {k for k, e in self.derived.items() if key in _names_in(e, "derived", where)}
                if not sets <= family.cost_knobs:
                    fail(f"scales.{scale}.params.{key}", f"sets {', '.join(sorted(sets - family.cost_knobs))}; a scale "
                         f"may redefine only parameters that set cost knobs: {', '.join(sorted(family.cost_knobs))}")
        if self.objectives and (self.objectives[0].metric, self.objectives[0].mode) != (family.metric, family.mode):
            fail("objectives[0]", f"must be the family's metric {family.metric!r} ({family.mode}), which ASHA prunes on")
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            fail("objectives", f"each metric once: {metrics}")
        names = set(self.params) | set(self.fixed)
        for key, expr in self.derived.items():
            if key not in fields:
                fail(f"derived.{key}", f"not a {family.name} setting")
            for ref in _names_in(expr, f"derived.{key}", where):
                if ref not in names:
                    fail(f"derived.{key}", f"expression uses {ref!r}, which is neither a parameter nor fixed")
        allowed = set(self.params) | set(self.derived) | set(self.fixed)
        for i, principle in enumerate(self.principles):
            for field, problem in claim_problems(principle.claim, allowed) if principle.claim else []:
                fail(f"principles[{i}].claim.{field}", f"{problem} (principle {principle.text!r}); allowed: "
                     f"{', '.join(sorted(allowed))}")
        helpers = {n for n in self.params if n not in fields}
        used = {ref for expr in self.derived.values() for ref in _names_in(expr, "derived", where)}
        for name in sorted(helpers - used):
            fail(f"params.{name}", f"not a {family.name} setting and not used by any derived expression")
        for i, ws in enumerate(self.warm_starts):
            if set(ws.params) != set(self.params):
                fail(f"warm_starts[{i}].params", f"must set exactly the parameters {sorted(self.params)}")
            for key, value in ws.params.items():
                if not self.params[key].contains(value):
                    fail(f"warm_starts[{i}].params.{key}", f"{value!r} is outside the parameter's range")
            for key, value in ws.regime.items():  # where `recorded` was measured: the space's own regime
                if key not in fields or key in self.params:
                    fail(f"warm_starts[{i}].regime.{key}", f"not a fixed {family.name} setting")
                if key in self.fixed or key not in family.cost_knobs:  # cost knobs may record the scale used
                    expected = self.fixed.get(key, family.settings.model_fields[key].default)
                    if value != expected:
                        fail(f"warm_starts[{i}].regime.{key}", f"recorded with {value!r}, but this space runs "
                             f"{expected!r}: the recorded value belongs to another regime")
        for scale in SCALES:
            scaled = self.at_scale(scale)
            for i, ws in enumerate(scaled.warm_starts):
                for key, value in ws.params.items():
                    if not scaled.params[key].contains(value):
                        fail(f"warm_starts[{i}].params.{key}", f"{value!r} is not among the choices at scale {scale}")
            configs = [scaled.prior_centers()] + [w.params for w in scaled.warm_starts]
            for cfg in configs:
                self.trial_settings(self.base_settings(scale), cfg, family, where=f"{where} (scale {scale})")


def _move(base: FloatParam | IntParam | CategoricalParam, to: FloatParam | IntParam | CategoricalParam,
          value: Any) -> Any:
    """A value of `base`'s range placed at the same relative position in `to`'s (categorical: unchanged)."""
    if isinstance(base, CategoricalParam) or isinstance(to, CategoricalParam) or base is to:
        return value
    if base.log:
        u = math.log(value / base.low) / math.log(base.high / base.low)
    else:
        u = (value - base.low) / (base.high - base.low)
    moved = to.low * (to.high / to.low) ** u if to.log else to.low + u * (to.high - to.low)
    moved = min(max(moved, to.low), to.high)
    return int(round(moved)) if isinstance(to, IntParam) else moved


# ---- safe arithmetic for derived parameters ----------------------------------------------------
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg}
ALLOWED_OPERATORS = "+ - * / ** and parentheses"


def evaluate(expr: str, values: Mapping[str, Any]) -> float:
    """Evaluate `+ - * / **` over numbers and names, e.g. ``"lr * lr_W_ratio"``.

    Raises ValueError for anything else (naming what is allowed), ArithmeticError for e.g. a division by
    zero, and ValueError for a name whose value is not a number."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name):
            value = values[node.id]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{node.id} = {value!r} is not a number")
            return float(value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise ValueError(f"{ast.unparse(node)!r} is not allowed; derived expressions use numbers, names and "
                         f"{ALLOWED_OPERATORS}")

    return walk(ast.parse(expr, mode="eval"))


def _names_in(expr: str, field: str, where: str) -> set[str]:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as err:
        raise TunerInputError(f"{where}: {field}: cannot parse {expr!r}: {err.msg}") from None
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


# ---- discovery ---------------------------------------------------------------------------------
def space_catalog() -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Space files by name (stem): the shipped `search_spaces/<family>/*.yaml`, then $TUNER_SPACE_PATH.

    Returns (name -> file for names given by one file, name -> files for names given by several). A user
    file never silently shadows a shipped space: such a name is refused when loaded by name."""
    roots = [Path(str(files("search_spaces")))]
    roots += [Path(p) for p in os.environ.get(SPACE_PATH_ENV, "").split(os.pathsep) if p]
    found: dict[str, list[Path]] = {}
    for root in roots:
        for path in sorted(root.glob("*/*.yaml")) + sorted(root.glob("*.yaml")):
            if path not in found.setdefault(path.stem, []):
                found[path.stem].append(path)
    unique = {name: paths[0] for name, paths in found.items() if len(paths) == 1}
    return unique, {name: paths for name, paths in found.items() if len(paths) > 1}


def space_files() -> dict[str, Path]:
    """Every space file whose name is given by that file only, by name."""
    return space_catalog()[0]


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load and fully validate a space by name (`chaotic_100`) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        known, clashes = space_catalog()
        if str(name_or_path) in clashes:
            listed = ", ".join(str(p) for p in clashes[str(name_or_path)])
            raise TunerInputError(f"space {str(name_or_path)!r} is defined by several files: {listed}. A file in "
                                  f"{SPACE_PATH_ENV} may not reuse a shipped space's name: rename it, or pass the "
                                  f"file's path as --space")
        if str(name_or_path) not in known:
            raise TunerInputError(f"unknown space {str(name_or_path)!r}.{close_names(str(name_or_path), known)} "
                                  f"List them with: python -m tuner spaces")
        path = known[str(name_or_path)]
    if not path.is_file():
        raise TunerInputError(f"space file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise TunerInputError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise TunerInputError(f"{path}: expected a mapping at the top level")
    raw.setdefault("name", path.stem)
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                             for e in err.errors())
        raise TunerInputError(f"{path}: {problems}") from None
    try:
        family = get_family(space.family)
    except KeyError as err:
        raise TunerInputError(f"{path}: family: {err.args[0]}") from None
    space.check(family, str(path))
    return space
