"""The `hartmann` family, wired for the orchestrator: the multi-fidelity Hartmann-3/6 functions as trials.
Wiring only: the functions are in functions.py, the schema in settings.py, the trial in train.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainables.hartmann.functions import classify
from trainables.hartmann.settings import COORDINATES, HartmannSettings
from tuner.family import Family, RegimeTable, Resources, Session


def regime(s: Mapping[str, Any]) -> dict[str, Any]:
    """Leading columns of the regime table: the function and its observation noise."""
    return {"Regime": f"Hartmann-{s['dim']}", "noise": s["noise"]}


def run(settings: HartmannSettings, session: Session) -> None:
    """Evaluate one trial (the trainer loads only when a trial runs)."""
    from trainables.hartmann.train import run as evaluate

    evaluate(settings, session)


FAMILY = Family(
    name="hartmann",
    settings=HartmannSettings,
    metric="regret",
    mode="min",
    run=run,
    classify=classify,
    success="solved",
    cost_knobs=frozenset({"n_reports", "seconds_per_report", "device"}),
    resources={"smoke": Resources(cpu=1), "cpu": Resources(cpu=1), "full": Resources(cpu=1)},
    table=RegimeTable(
        regime=regime,
        descriptors={},
        best="Best regret",
        key_params={name: name for name in COORDINATES},
        best_metrics={"regret at z=1": "regret_full", "distance to argmin": "argmin_distance"},
    ),
    draw="seed",
    description="Multi-fidelity Hartmann-3/6 (Kandasamy et al. 2017: alpha'_i = alpha_i - 0.1 (1 - z)), report i "
                "of n at fidelity z = i/n, optional Gaussian observation noise. Metric: regret = f(x, z) - f_min "
                "(min); a synthetic benchmark for the searchers.",
)
