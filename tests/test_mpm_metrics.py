"""Fit metrics on hand-made inputs (spec §3) and the outcome classes (spec §5.3)."""

import math

import numpy as np
import pytest

from trainables.mpm_inr.metrics import classify, compression_ratio, fit_metrics, kinograph_r2, linear_fit


@pytest.fixture
def truth():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 40)[:, None, None]
    return (np.sin(6 * t + rng.uniform(0, 3, (1, 30, 3))) + 0.1 * rng.normal(size=(40, 30, 3))).astype(np.float32)


def test_perfect_prediction(truth):
    m = fit_metrics(truth, truth.copy())
    assert m["final_mse"] == 0
    assert m["final_r2"] == pytest.approx(1) and m["slope"] == pytest.approx(1)
    assert m["intercept"] == pytest.approx(0, abs=1e-6)
    assert m["kinograph_R2"] == pytest.approx(1) and m["kinograph_SSIM"] == pytest.approx(1)


def test_scaled_prediction(truth):
    m = fit_metrics(truth, 2.5 * truth + 0.3)
    assert m["final_r2"] == pytest.approx(1) and m["slope"] == pytest.approx(2.5, rel=1e-5)
    assert m["intercept"] == pytest.approx(0.3, abs=1e-5)
    assert m["final_mse"] > 0.1  # raw MSE sees the scale error, r² does not
    assert m["kinograph_R2"] == pytest.approx(1, abs=1e-6)  # kinographs use the slope-corrected prediction
    assert m["kinograph_SSIM"] == pytest.approx(1, abs=1e-6)


def test_noisy_prediction_is_worse(truth):
    rng = np.random.default_rng(1)
    noise = 0.5 * rng.normal(size=truth.shape)
    m = fit_metrics(truth, truth + noise)
    signal = truth.astype(np.float64).var()
    # independent noise: r² = var(truth) / (var(truth) + var(noise)), the squared Pearson r of the flattened arrays
    assert m["final_r2"] == pytest.approx(np.corrcoef(truth.ravel(), (truth + noise).ravel())[0, 1] ** 2, rel=1e-9)
    assert m["final_r2"] == pytest.approx(signal / (signal + 0.25), abs=0.01)
    assert m["final_mse"] == pytest.approx(0.25, abs=0.01) and m["slope"] == pytest.approx(1, abs=0.03)
    assert m["kinograph_SSIM"] < 0.9


def test_kinograph_r2_constant_frame_counts_zero():
    gt = np.ones((4, 10, 1))
    assert kinograph_r2(gt, gt) == 0


def test_non_finite_prediction(truth):
    pred = truth.copy()
    pred[0, 0, 0] = np.nan
    assert all(math.isnan(v) for v in linear_fit(truth, pred))
    m = fit_metrics(truth, pred)
    assert math.isnan(m["final_r2"]) and math.isnan(m["kinograph_SSIM"])
    assert classify(m) == "poor"


def test_compression_ratio():
    assert compression_ratio(400 * 9000 * 4, 265_220) == pytest.approx(54.3, abs=0.05)


@pytest.mark.parametrize("r2, label", [(0.9999, "excellent"), (0.995, "good"), (0.99, "good"),
                                       (0.95, "moderate"), (0.90, "moderate"), (0.5, "poor"), (math.nan, "poor"),
                                       (math.inf, "poor")])
def test_classify(r2, label):
    assert classify({"final_r2": r2}) == label
