"""SIREN fit on a tiny simulated window: learning, reports, resume, divergence (spec §2.4)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.mpm_inr import train
from trainables.mpm_inr.family import FAMILY
from tuner.validation import validate_settings

TINY = dict(sim_particles=90, n_particles=63, n_frames=300, n_training_frames=20, hidden_dim=32, n_layers=2,
            omega=10.0, lr=1e-3, total_steps=300, n_reports=3, device="cpu")


class Stop(Exception):
    pass


class Session:
    """Keeps every report; saves a checkpoint per report; optionally stops after `stop_after` reports."""

    def __init__(self, root: Path, checkpoint: Path | None = None, stop_after: int | None = None):
        self.root, self.checkpoint, self.stop_after, self.reports = root, checkpoint, stop_after, []

    def report(self, metrics, save=None):
        self.reports.append(dict(metrics))
        if save is not None:
            folder = self.root / f"ckpt_{len(self.reports)}"
            folder.mkdir(parents=True)
            save(folder)
        if len(self.reports) == self.stop_after:
            raise Stop


@pytest.fixture(autouse=True)
def setup(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))  # shared by the tests
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def fit(tmp_path, **overrides):
    session = Session(tmp_path / "run")
    FAMILY.run(validate_settings(FAMILY.settings, TINY | overrides), session)
    return session.reports


def test_window_bounds():
    assert train.window_bounds(10000, 400) == (4800, 5200)
    assert train.window_bounds(10000, 100) == (4950, 5050)


def test_data_subset_and_cache(monkeypatch):
    s = validate_settings(FAMILY.settings, TINY | {"field": "C"})
    pos, gt = train.load_data(s)
    assert pos.shape == (20, 63, 2) and gt.shape == (20, 63, 4)
    monkeypatch.setattr(train, "simulate_window", None)  # a second trial reads the cached window
    pos2, gt2 = train.load_data(validate_settings(FAMILY.settings, TINY | {"field": "C", "lr": 1.0}))
    np.testing.assert_array_equal(gt, gt2)
    np.testing.assert_array_equal(pos, pos2)


def test_short_fit_lowers_the_loss(tmp_path):
    reports = fit(tmp_path)
    assert len(reports) == 3 and [r["step"] for r in reports] == [100, 200, 300]
    assert all("final_r2" in r and "loss" in r for r in reports)
    assert reports[-1]["loss"] < 0.5 * reports[0]["loss"]
    final = reports[-1]
    for key in ("final_mse", "final_r2", "slope", "intercept", "kinograph_R2", "kinograph_SSIM", "total_params",
                "compression_ratio", "training_time_min", "diverged"):
        assert math.isfinite(final[key]), key
    assert final["final_r2"] >= 0.99 and final["diverged"] == 0
    untrained = fit(tmp_path / "untrained", lr=1e-9)[-1]                  # same run, (almost) no learning
    assert untrained["final_r2"] < 0.5 and untrained["loss"] > 100 * final["loss"]
    assert final["total_params"] == (3 + 1) * 32 + 2 * (32 * 32 + 32) + 33 * 4
    assert final["compression_ratio"] == pytest.approx(20 * 63 * 4 / final["total_params"])


def test_resume_matches_uninterrupted_run(tmp_path):
    whole = Session(tmp_path / "whole")
    settings = validate_settings(FAMILY.settings, TINY)
    FAMILY.run(settings, whole)
    first = Session(tmp_path / "first", stop_after=1)
    with pytest.raises(Stop):
        FAMILY.run(settings, first)
    resumed = Session(tmp_path / "resumed", checkpoint=tmp_path / "first" / "ckpt_1")
    FAMILY.run(settings, resumed)
    assert [r["step"] for r in resumed.reports] == [200, 300]
    for key in ("loss", "final_r2", "final_mse", "slope", "kinograph_SSIM"):
        assert resumed.reports[-1][key] == whole.reports[-1][key], key


def test_normalized_targets_siren_t_and_frame_batches(tmp_path):
    # a window after the discs land (frames 1490-1509 of 3000), where S is not ~0; at the same settings raw S
    # (~1e-4 against the head's init) learns nothing and z-scored S does (measured: 0.0016 vs 0.63)
    raw = fit(tmp_path / "raw", field="S", n_frames=3000)[-1]
    normalized = fit(tmp_path / "norm", field="S", n_frames=3000, normalize_targets=True)[-1]
    assert raw["final_r2"] < 0.1 and normalized["final_r2"] > 0.5
    assert normalized["final_mse"] < normalized["target_std"] ** 2        # metrics are in raw units
    siren_t = fit(tmp_path / "t", inr_type="siren_t", field="F", batch_frames=4)[-1]
    assert siren_t["total_params"] == 2 * 32 + 2 * (32 * 32 + 32) + 33 * 63 * 4
    assert siren_t["final_r2"] >= 0.99                                    # untrained (lr 1e-9): 0.0007


def test_non_finite_loss_is_reported_once(tmp_path, monkeypatch):
    load = train.load_data

    def poisoned(s):
        pos, gt = load(s)
        return pos, np.full_like(gt, np.inf)

    monkeypatch.setattr(train, "load_data", poisoned)
    reports = fit(tmp_path)
    assert len(reports) == 1
    assert reports[0]["diverged"] == 1.0 and not math.isfinite(reports[0]["final_r2"])
