"""A smoke-scale sweep of an `mpm_inr` space end to end, and its row in the family's MLflow table."""

from __future__ import annotations

import pytest

from tuner import sweep
from tuner.cli import main as cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_2gpu")]


def test_smoke_sweep_and_seed_table(results, capsys) -> None:
    out = sweep("s_field_400f", scale="smoke", samples=3, seed=0, max_concurrent=2)
    trials = out.trials
    assert len(trials) == 3 and set(trials["setting.n_training_frames"]) == {400}
    assert trials["param.hidden_dim"].between(8, 16).all()  # the smoke scale's range, warm starts included
    assert (trials["setting.total_steps"] == trials["param.steps_per_frame"] * 400).all()
    first = trials.iloc[0]
    assert (first["param.omega"], first["param.lr"]) == (55, 2.0e-5)  # the seed's best config ran first

    assert cli(["table", "--family", "mpm_inr"]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| Block"))
    header, row = lines[at], lines[at + 2]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[4:13] == ["INR Type", "Field", "n_training_frames", "Target std", "Best R²", "Best slope",
                             "kino_R2", "kino_SSIM", "Training time (min)"]
    assert "| S " in row and "| 400 " in row
