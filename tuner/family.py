"""The contract between the orchestrator and a task family.

A family is a `Family` value exposed under the entry-point group ``tuner.families``
(see pyproject.toml). The orchestrator never imports a family by name: it loads the
entry points, validates settings with the family's pydantic schema, runs trials through
`Family.run` with a `Session`, and builds the regime table from `Family.table`.

Contract of `Family.run(settings, session)`:
- report progress with ``session.report(metrics, save)`` at least ``settings.n_reports``
  times; every report is one scheduler iteration and should carry the primary metric;
- ``save(directory)`` writes everything needed to resume into ``directory``;
- on start, if ``session.checkpoint`` is a directory, continue from it;
- a diverging run (NaN/inf) is a normal outcome: report the non-finite metric once and return;
- the last report carries every final metric.

`family.py` should import its trainer inside `run`, so that checking a user's input (schema, spaces)
never loads torch: see trainables/signal/family.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel

SCALES = ("smoke", "cpu", "full")
DEVICES = ("auto", "cpu", "cuda")  # a family's `device` setting, if any: the planner refuses "cuda" without a GPU
ENTRY_POINT_GROUP = "tuner.families"


class Session(Protocol):
    """What a running trial sees of the orchestrator."""

    @property
    def checkpoint(self) -> Path | None:
        """Directory of the checkpoint to resume from, or None for a fresh start."""

    def report(self, metrics: Mapping[str, float], save: Callable[[Path], None] | None = None) -> None:
        """Record one progress report; `save(dir)` writes a resumable checkpoint into `dir`."""


@dataclass(frozen=True)
class Resources:
    """Per-trial resource request (fractional GPUs allowed: 0.5, 0.25, ...)."""

    cpu: float = 1.0
    gpu: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}


@dataclass(frozen=True)
class RegimeTable:
    """How a sweep becomes one row of the family's regime comparison table.

    regime:       resolved settings -> the leading columns (e.g. Regime, E/I, n_frames)
    descriptors:  column title -> metric describing the data, shown as a min-max range over trials
    best:         column title of the primary metric's best value
    key_params:   column title -> setting whose value in the best trial is shown
    best_metrics: column title -> other metric of the best trial (e.g. slope, training time)

    Column order: regime, descriptors, best, best_metrics, key_params, then the generic columns.
    """

    regime: Callable[[Mapping[str, Any]], dict[str, Any]]
    descriptors: Mapping[str, str]
    best: str
    key_params: Mapping[str, str]
    best_metrics: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """A task family: its settings, objective, resources, trial runner and table layout."""

    name: str
    settings: type[BaseModel]  # schema with defaults; must forbid unknown keys and have `n_reports`
    metric: str
    mode: Literal["min", "max"]
    run: Callable[[Any, Session], None]  # (validated settings, session) -> None
    classify: Callable[[Mapping[str, float]], str]  # final metrics -> outcome label
    success: str  # the outcome label counted as a success in the table ("converged")
    cost_knobs: frozenset[str]  # settings a scale may change; everything else is regime
    resources: Mapping[str, Resources]  # per scale: smoke, cpu, full
    table: RegimeTable
    description: str = ""
    draw: str | None = None  # the setting that picks the data draw (a simulation seed): `--replicates` varies it

    def __post_init__(self) -> None:
        missing = [s for s in SCALES if s not in self.resources]
        if missing:
            raise ValueError(f"family {self.name!r}: resources missing for scales {missing}")
        if "n_reports" not in self.settings.model_fields:
            raise ValueError(f"family {self.name!r}: settings schema needs an `n_reports` field")
        unknown = set(self.cost_knobs) - set(self.settings.model_fields)
        if unknown:
            raise ValueError(f"family {self.name!r}: cost_knobs {sorted(unknown)} are not settings")
        if self.draw is not None and self.draw not in self.settings.model_fields:
            raise ValueError(f"family {self.name!r}: draw {self.draw!r} is not a setting")


def _load(ep: Any) -> Family:
    family = ep.load()
    if not isinstance(family, Family) or family.name != ep.name:
        raise TypeError(f"entry point {ep.name!r} -> {ep.value} is not a tuner.family.Family named {ep.name!r}")
    return family


def families() -> dict[str, Family]:
    """All registered families, by name (entry-point group ``tuner.families``)."""
    return {ep.name: _load(ep) for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_family(name: str) -> Family:
    """The registered family `name` (only its entry point is loaded); a clear error lists the known ones."""
    known = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in known:
        raise KeyError(f"unknown family {name!r}; registered families: {', '.join(sorted(known)) or 'none'}")
    return _load(known[name])
