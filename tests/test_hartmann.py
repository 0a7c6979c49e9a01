"""The `hartmann` family: published optima, the fidelity bias, seeded noise, settings, the trainer, its spaces,
and one smoke sweep through the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from recording import Interrupted, Recorder
from scipy.optimize import minimize

from trainables.hartmann.family import FAMILY
from trainables.hartmann.functions import (
    ARGMIN,
    F_MIN,
    FIDELITY_BIAS,
    PUBLISHED_MINIMUM,
    A,
    P,
    classify,
    hartmann,
    regret,
)
from trainables.hartmann.settings import HartmannSettings
from trainables.hartmann.train import CHECKPOINT_FILE
from tuner.cli import main as cli
from tuner.family import families
from tuner.space import load_space, space_files
from tuner.validation import TunerInputError, validate_settings

FINAL = {"regret", "value", "fidelity", "regret_full", "argmin_distance"}
SPACES = [f"hartmann{d}_{q}" for d in (3, 6) for q in ("good", "medium", "bad")]


def point(dim: int, x: np.ndarray | list[float]) -> dict[str, float]:
    return {"dim": dim, **{f"x{j}": float(v) for j, v in enumerate(x, 1)}}


def evaluate(folder: Path, checkpoint: Path | None = None, stop_after: int | None = None, **values) -> Recorder:
    session = Recorder(folder, checkpoint, stop_after)
    FAMILY.run(validate_settings(HartmannSettings, {**point(3, ARGMIN[3]), "n_reports": 4, **values}), session)
    return session


@pytest.mark.parametrize("dim", [3, 6])
def test_published_optima(dim: int) -> None:
    argmin = ARGMIN[dim]
    assert hartmann(argmin) == pytest.approx(PUBLISHED_MINIMUM[dim], abs=5e-6)  # published to 5 decimals
    assert F_MIN[dim] == pytest.approx(PUBLISHED_MINIMUM[dim], abs=5e-6)
    bounds = [(0.0, 1.0)] * dim
    refined = minimize(hartmann, argmin, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-12})
    assert refined.fun > F_MIN[dim] - 1e-9  # no lower point next to the published argmin
    starts = np.random.default_rng(0).uniform(0, 1, size=(40, dim))
    assert min(minimize(hartmann, s, method="L-BFGS-B", bounds=bounds).fun for s in starts) > F_MIN[dim] - 1e-9
    for j in range(dim):  # every nearby point on each axis is higher
        for step in (-0.02, -0.005, 0.005, 0.02):
            moved = argmin.copy()
            moved[j] += step
            assert hartmann(moved) > hartmann(argmin), (j, step)
    assert abs(regret(argmin, 1.0)) < 1e-9


@pytest.mark.parametrize("dim", [3, 6])
def test_fidelity_bias_follows_the_formula(dim: int) -> None:
    x = np.random.default_rng(dim).uniform(0, 1, dim)
    basins = np.exp(-np.sum(A[dim] * (x - P[dim]) ** 2, axis=1)).sum()
    for z in (0.0, 0.25, 0.5, 0.9):
        # alpha'_i = alpha_i - 0.1 (1 - z): f(x, z) = f(x, 1) + 0.1 (1 - z) sum_i exp(...)
        assert hartmann(x, z) == pytest.approx(hartmann(x, 1.0) + FIDELITY_BIAS * (1 - z) * basins, rel=1e-12)
        assert hartmann(x, z) != hartmann(x, 1.0)
    at_optimum = [regret(ARGMIN[dim], z) for z in (0.25, 0.5, 0.75, 1.0)]
    assert at_optimum[-1] == pytest.approx(0.0, abs=1e-9) and all(np.diff(at_optimum) < 0)


def test_trainer_reports_every_fidelity_and_resumes(tmp_path: Path) -> None:
    full = evaluate(tmp_path / "full", x1=0.3, x2=0.6, x3=0.7, n_reports=5)
    assert len(full.history) == 5 and all("regret" in r for r in full.history)
    assert [r["fidelity"] for r in full.history] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert set(full.history[-1]) == FINAL and all(FINAL - set(r) for r in full.history[:-1])
    last = full.history[-1]
    x = np.array([0.3, 0.6, 0.7])
    assert last["regret"] == last["regret_full"] == pytest.approx(hartmann(x) - F_MIN[3], abs=1e-12)
    assert full.history[0]["value"] == pytest.approx(hartmann(x, 0.2))
    assert last["argmin_distance"] == pytest.approx(float(np.linalg.norm(x - ARGMIN[3])))

    with pytest.raises(Interrupted):
        evaluate(tmp_path / "cut", x1=0.3, x2=0.6, x3=0.7, n_reports=5, noise=0.2, stop_after=2)
    cut = tmp_path / "cut" / "report2"
    assert (cut / CHECKPOINT_FILE).is_file()
    resumed = evaluate(tmp_path / "resumed", checkpoint=cut, x1=0.3, x2=0.6, x3=0.7, n_reports=5, noise=0.2)
    uninterrupted = evaluate(tmp_path / "noisy", x1=0.3, x2=0.6, x3=0.7, n_reports=5, noise=0.2)
    assert resumed.history == uninterrupted.history[2:]


def test_seconds_per_report_is_slept(tmp_path: Path) -> None:
    started = time.perf_counter()
    evaluate(tmp_path, n_reports=4, seconds_per_report=0.05)
    assert time.perf_counter() - started >= 0.2


def test_noise_is_seeded(tmp_path: Path) -> None:
    runs = iter(range(100))

    def values(seed: int, x1: float = 0.3) -> list[float]:
        run = evaluate(tmp_path / str(next(runs)), x1=x1, x2=0.6, x3=0.7, noise=0.1, seed=seed)
        return [r["value"] - hartmann(np.array([x1, 0.6, 0.7]), r["fidelity"]) for r in run.history]

    same, other = values(1), values(2)
    assert values(1) == same and same != other
    assert 0.01 < np.std(same + other) < 0.3  # noise of std 0.1 was added
    assert values(1, x1=0.31) != same  # another point of the same sweep draws its own noise
    noisy = evaluate(tmp_path / "full", noise=0.1, seed=1).history[-1]
    assert noisy["regret_full"] == pytest.approx(0.0, abs=1e-9) and noisy["regret"] != noisy["regret_full"]


@pytest.mark.parametrize("values, named", [
    ({"dim": 4}, "dim"),
    ({"x1": 1.5}, "x1"),
    ({"x4": 0.2}, "x4"),                               # Hartmann-3 takes x1..x3 only
    ({"dim": 6, "x4": 0.2, "x6": 0.3}, "x5"),          # Hartmann-6 needs all six
    ({"noise": -0.1}, "noise"),
    ({"seed": -1}, "seed"),
    ({"n_reports": 0}, "n_reports"),
    ({"seconds_per_report": -1}, "seconds_per_report"),
    ({"device": "cuda"}, "device"),
    ({"x7": 0.5}, "x7"),
])
def test_bad_settings_name_the_field(values: dict, named: str) -> None:
    with pytest.raises(TunerInputError, match=named):
        validate_settings(HartmannSettings, {**point(3, [0.1, 0.5, 0.8]), **values})


def test_classify_and_registration() -> None:
    assert families()["hartmann"] is FAMILY and (FAMILY.metric, FAMILY.mode, FAMILY.draw) == ("regret", "min", "seed")
    assert classify({"regret": 0.05}) == "solved" and classify({"regret": 0.3}) == "near"
    assert classify({"regret": 0.05, "regret_full": 0.7}) == "far"  # the noise-free full-fidelity regret decides
    code = ("import sys, trainables.hartmann.family, trainables.hartmann.train\n"
            "print(sorted(m for m in ('ray', 'mlflow', 'optuna', 'torch') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


@pytest.mark.parametrize("name", SPACES)
def test_spaces_put_their_priors_where_they_claim(name: str) -> None:
    space = load_space(name)
    dim = space.fixed["dim"]
    offsets = np.abs(np.array([space.params[f"x{j}"].prior.center for j in range(1, dim + 1)]) - ARGMIN[dim])
    quality = name.split("_")[1]
    if quality == "good":
        assert offsets.max() < 0.1
    elif quality == "medium":
        assert 0.2 <= offsets.min() and offsets.max() <= 0.3
    else:
        assert offsets.max() > 0.3 and {p.prior.spread for p in space.params.values()} == {0.05}
    assert len(space.params) == dim and not space.warm_starts
    assert space.source.seed is None and "Kandasamy" in space.source.reference
    assert all(set(scale.settings) == {"n_reports"} for scale in space.scales.values())  # cost knobs only


def test_a_space_needs_a_seed_or_a_reference(tmp_path: Path) -> None:
    data = yaml.safe_load(space_files()["hartmann3_good"].read_text())
    data["source"] = {"block": 1}
    path = tmp_path / "no_source.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(TunerInputError, match="source.*seed.*reference"):
        load_space(path)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_2gpu")
def test_smoke_sweep_through_the_cli(results: Path) -> None:
    assert cli(["sweep", "--space", "hartmann3_good", "--scale", "smoke", "--seed", "1"]) == 0
    [table] = (results / "hartmann3_good").glob("*/regime_table.md")
    text = table.read_text()
    assert "Hartmann-3" in text and "Best regret" in text
    trials = pd.read_parquet(table.with_name("trials.parquet"))
    assert len(trials) == 4 and trials["metric.regret"].notna().all()
    best = pd.read_parquet(table.with_suffix(".parquet"))["Best regret"].iloc[0]
    best_trial = trials["metric.regret"].min()
    assert float(best) == pytest.approx(best_trial, rel=1e-2, abs=1e-4)  # the table prints 3-4 digits
