"""Regime-table rows: column order, the best trial's metrics, and '-' where the best trial lacks one."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tuner.family import get_family
from tuner.space import load_space
from tuner.table import key_finding, regime_row

MPM_COLUMNS = ["INR Type", "Field", "n_training_frames", "Target std", "Best R²", "Best slope", "kino_R2",
               "kino_SSIM", "Training time (min)", "Optimal lr", "Optimal hidden_dim", "Optimal n_layers",
               "Optimal omega", "Optimal total_steps", "Excellent share", "Trials", "Compute (min)", "Key finding"]


def _trial(r2: float, slope: float | None, hidden_dim: int, outcome: str) -> dict:
    row = {"status": "finished", "outcome": outcome, "time_total_s": 60.0, "metric.final_r2": r2,
           "metric.target_std": 1.5, "metric.training_time_min": 0.9, "metric.kinograph_R2": r2,
           "metric.kinograph_SSIM": 0.99, "metric.slope": math.nan if slope is None else slope,
           "param.hidden_dim": hidden_dim, "param.lr": 1e-4, "param.omega": 30.0, "param.n_layers": 3,
           "param.steps_per_frame": 50}
    row.update({f"setting.{k}": v for k, v in {"lr": 1e-4, "hidden_dim": hidden_dim, "n_layers": 3, "omega": 30.0,
                                              "total_steps": 20000}.items()})
    return row


@pytest.fixture
def space():
    return load_space("s_field_400f").at_scale("cpu")


def test_best_metrics_follow_best_and_precede_key_params(space) -> None:
    family = get_family("mpm_inr")
    trials = pd.DataFrame([_trial(0.95, 0.94, 128, "moderate"), _trial(0.998, 0.997, 192, "excellent")])
    row = regime_row(space, family, trials, sweep="s", scale="cpu", base=space.base_settings("cpu"))
    assert list(row)[4:] == MPM_COLUMNS
    assert (row["Field"], row["n_training_frames"], row["Best R²"]) == ("S", "400", "0.998")
    assert (row["Best slope"], row["kino_R2"], row["kino_SSIM"]) == ("0.997", "0.998", "0.99")
    assert row["Training time (min)"] == "0.9" and row["Optimal hidden_dim"] == "192"


def test_best_metric_missing_from_the_best_trial_shows_a_dash(space) -> None:
    trials = pd.DataFrame([_trial(0.99, None, 128, "good")])  # e.g. pruned before its final metrics
    row = regime_row(space, get_family("mpm_inr"), trials, sweep="s", scale="cpu", base=space.base_settings("cpu"))
    assert row["Best slope"] == "-" and row["Best R²"] == "0.99"


def test_key_finding_names_a_driver_only_with_enough_finished_trials() -> None:
    space = load_space("chaotic_10k")
    family = get_family("signal")
    rng = np.random.default_rng(0)

    def draw(name: str) -> float:
        p = space.params[name]
        return float(10 ** rng.uniform(np.log10(p.low), np.log10(p.high)))

    rows = []
    for i in range(24):  # the metric follows lr_W_ratio alone
        ratio = draw("lr_W_ratio")
        rows.append({"trial_id": f"t{i}", "status": "finished", "outcome": "converged", "param.lr": draw("lr"),
                     "param.lr_W_ratio": ratio, "param.coeff_W_L1": draw("coeff_W_L1"),
                     "param.batch_size": int(rng.choice(space.params["batch_size"].choices)),
                     "metric.connectivity_R2": 1 - abs(np.log10(ratio) - 2)})
    trials = pd.DataFrame(rows)
    finding = key_finding(space, family, trials)
    assert finding.startswith("lr_W_ratio matters most") and "24 finished trials" in finding
    assert finding == key_finding(space, family, trials)  # deterministic
    assert key_finding(space, family, trials.head(3)).startswith("no clear driver yet (3 finished trials")
    pruned = trials.assign(status="pruned")  # early values of pruned trials name no driver
    assert key_finding(space, family, pruned).startswith("no clear driver yet (0 finished trials")
