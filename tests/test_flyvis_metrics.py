"""flyvis metrics (spec §3) on hand-made inputs with known answers, and the outcome classification."""

import math

import numpy as np
import pytest

from trainables.flyvis import metrics


def test_r_squared_is_slope_invariant_and_known():
    x = np.arange(10.0)
    assert metrics.r_squared(x, -3 * x + 2) == pytest.approx(1.0)
    # learned = x + e with e orthogonal to (1, x): R^2 = SS(x) / (SS(x) + SS(e))
    e = np.array([1, -1, -1, 1, 0, 0, 1, -1, -1, 1], float)
    e -= np.polyval(np.polyfit(x, e, 1), x)
    expected = ((x - x.mean()) ** 2).sum() / (((x - x.mean()) ** 2).sum() + (e ** 2).sum())
    assert metrics.r_squared(x, x + e) == pytest.approx(expected)
    assert math.isnan(metrics.r_squared(x, np.zeros(10)))


def test_connectivity_outlier_rule():
    rng = np.random.default_rng(0)
    w_true = rng.normal(size=20)
    corrected = 2 * w_true + 0.1
    corrected[7] = w_true[7] + 6.0                                     # |W* - W| > 5: dropped
    assert metrics.connectivity_r2(w_true, corrected) == pytest.approx(1.0)
    corrected[7] = w_true[7] + 4.0                                     # within 5: kept, and it hurts
    kept = metrics.connectivity_r2(w_true, corrected)
    assert kept == pytest.approx(metrics.r_squared(w_true, corrected)) and kept < 0.95


def test_corrected_weights():
    # W*_ij = -W_ij / s_i * gain_i * r_j ; edges 0->1 and 1->0
    w = np.array([2.0, 3.0])
    source, target = np.array([0, 1]), np.array([1, 0])
    slope, gain, r = np.array([-2.0, 0.0]), np.array([1.0, 4.0]), np.array([0.5, 3.0])
    out = metrics.corrected_weights(w, source, target, slope, gain, r)
    assert out.tolist() == [0.0, pytest.approx(-3.0 / -2.0 * 1.0 * 3.0)]   # edge 0->1: s_1 = 0 -> inf -> 0


def test_tau_and_v_rest_readouts():
    slope, intercept = np.array([-50.0, -0.5, 0.0, 2.0]), np.array([25.0, 1.0, 1.0, 1.0])
    assert metrics.learned_tau(slope).tolist() == [0.02, 1.0, 1.0, 0.0]   # clipped to [0, 1]; s = 0 -> 1
    assert metrics.learned_v_rest(slope, intercept).tolist() == [0.5, 2.0, 0.0, -0.5]


def test_cluster_accuracy_recovers_separated_types():
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    labels = np.repeat([3, 0, 2, 1], 50)                               # arbitrary label names
    features = centres[np.repeat(np.arange(4), 50)] + rng.normal(scale=0.5, size=(200, 2))
    assert metrics.cluster_accuracy(features, labels, n_components=4) == pytest.approx(1.0)
    # two true types in one blob: one of them is matched, the other counts wrong
    merged = labels.copy()
    features[merged == 1] = centres[0] + rng.normal(scale=0.5, size=(50, 2))
    assert metrics.cluster_accuracy(features, merged, n_components=3) == pytest.approx(150 / 200)


def test_cluster_features():
    source, target = np.array([0, 1, 2]), np.array([1, 1, 0])
    w = np.array([1.0, 3.0, 5.0])
    f = metrics.cluster_features(np.zeros((3, 2)), np.ones(3), np.zeros(3), w, source, target)
    assert f.shape == (3, 8)
    assert f[1, 4:6].tolist() == [2.0, 1.0]                            # incoming of neuron 1: 1, 3
    assert f[1, 6:8].tolist() == [3.0, 0.0]                            # outgoing of neuron 1: 3
    assert f[2, 4:8].tolist() == [0.0, 0.0, 5.0, 0.0]


def test_rollout_scores():
    t = np.linspace(0, 1, 50)[:, None]
    truth = np.hstack([np.sin(6 * t), t, np.ones_like(t)])             # third neuron constant: NaN, skipped
    prediction = np.hstack([np.sin(6 * t), 2 * t, np.ones_like(t)])
    pearson, r2 = metrics.rollout_scores(truth, prediction)
    assert pearson == pytest.approx(1.0)
    ss_tot = ((t - t.mean()) ** 2).sum()
    assert r2 == pytest.approx((1.0 + 1 - (t ** 2).sum() / ss_tot) / 2)


@pytest.mark.parametrize("values, outcome", [
    ({"conn_R2": 0.95, "noise_model_level": 0.05}, "converged"),
    ({"conn_R2": 0.85, "noise_model_level": 0.05}, "partial"),
    ({"conn_R2": 0.85, "noise_model_level": 0.0}, "converged"),
    ({"conn_R2": 0.2, "noise_model_level": 0.05}, "failed"),
    ({"conn_R2": 0.2, "noise_model_level": 0.0}, "partial"),
    ({"conn_R2": math.nan, "diverged": 1.0}, "failed"),
])
def test_classify(values, outcome):
    assert metrics.classify(values) == outcome
