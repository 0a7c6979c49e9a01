"""Metric functions of spec §5 on hand-made inputs with known answers."""

import math

import numpy as np
import pytest

from trainables.signal.metrics import (
    classify,
    cluster_accuracy,
    connectivity_r2,
    effective_rank,
    fit_r2,
    frame_r2,
    linear_fit,
    rollout_pearson,
    rollout_r2,
    spectral_radius,
)

rng = np.random.default_rng(0)
W = rng.standard_normal((50, 50)) / np.sqrt(50)
np.fill_diagonal(W, 0)
ONES = np.ones(50)


def test_linear_fit_r2():
    x = rng.standard_normal(200)
    assert linear_fit(x, 3 * x + 1) == pytest.approx((3.0, 1.0))
    assert fit_r2(x, 3 * x + 1, *linear_fit(x, 3 * x + 1)) == pytest.approx(1.0)


def test_connectivity_r2_affine_and_column_scaled():
    assert connectivity_r2(W, 3 * W, ONES) == pytest.approx(1.0)
    # the learned diagonal is zeroed (spec §5.1), so with an offset the 50 diagonal (0, 0) pairs leave the line
    assert 0.85 < connectivity_r2(W, 3 * W + 1, ONES) < 0.95
    c = rng.uniform(0.5, 2.0, 50)
    assert connectivity_r2(W, W / c[None, :], c) == pytest.approx(1.0)  # per-source scale corrected by c_j
    assert connectivity_r2(W, W / c[None, :], ONES) < 0.95
    assert connectivity_r2(W, -2 * W, ONES) == pytest.approx(1.0)  # [quirk] a sign flip still scores 1


def test_connectivity_r2_random_and_broken():
    assert abs(connectivity_r2(W, rng.standard_normal((50, 50)), ONES)) < 0.01
    assert math.isnan(connectivity_r2(W, np.full((50, 50), np.nan), ONES))


def test_frame_r2_rules():
    x = rng.standard_normal(100)
    assert frame_r2(x, 2 * x + 1) == pytest.approx(1.0)
    assert frame_r2(x, np.full(100, 3.0)) == 0.0  # collapsed: std y < 0.1 std x
    assert frame_r2(x, x * 1e11) == 0.0  # exploded
    assert frame_r2(x, np.full(100, np.nan)) == 0.0
    assert frame_r2(x[:10], x[:10]) == 0.0  # not more than 10 inliers
    y = x.copy()
    y[0] = 10.0  # one outlier: excluded from the fit (which is then exact), but counted in R^2
    assert frame_r2(x, y) == pytest.approx(1 - (y[0] - x[0]) ** 2 / np.sum((y - y.mean()) ** 2))


def test_rollout_r2_and_pearson():
    truth = rng.standard_normal((1000, 40))
    assert rollout_r2(truth, truth) == pytest.approx(1.0)
    half = truth.copy()
    half[500:] = 0  # collapsed after t = 500: frames 10..490 score 1, 500..990 score 0
    assert rollout_r2(truth, half) == pytest.approx(49 / 99)
    assert rollout_pearson(truth, 3 * truth + 2) == pytest.approx(1.0)
    assert rollout_pearson(truth, -truth) == pytest.approx(-1.0)
    flat = truth.copy()
    flat[:, 0] = 1.0  # a flat prediction gets NaN and is left out of the mean
    flat[:, 1] = -truth[:, 1]
    assert rollout_pearson(truth, flat) == pytest.approx(37 / 39)
    assert math.isnan(rollout_pearson(truth, np.full_like(truth, np.inf)))


def test_effective_rank_of_known_spectra():
    q, _ = np.linalg.qr(rng.standard_normal((500, 20)))
    v, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    equal = q[:, :5] @ v[:5]  # rank 5, equal singular values: c = .2, .4, .6, .8, 1
    assert effective_rank(equal, 0.90) == 5 and effective_rank(equal, 0.99) == 5 and effective_rank(equal, 0.5) == 3
    skewed = q[:, :2] @ np.diag([3.0, 1.0]) @ v[:2]  # s^2 = 9, 1: c = 0.9, 1.0
    assert effective_rank(skewed, 0.89) == 1 and effective_rank(skewed, 0.95) == 2
    offset = np.ones((500, 20)) + 0.01 * equal  # not centered: the mean is the dominant component
    assert effective_rank(offset, 0.99) == 1


def test_effective_rank_reference_top_k_formula():
    """The reference's eff_rank (§5.4) keeps the leading min(100, min(T, N) - 1) singular values and normalizes by
    their sum: with 200 equal singular values, 90% is 180 by the full spectrum but 90 by the top-100 formula."""
    flat = np.zeros((300, 200))
    flat[range(200), range(200)] = 1.0                         # s = 1 (200 times)
    assert effective_rank(flat, 0.90) == 180 and effective_rank(flat, 0.90, top_k=100) == 90
    assert effective_rank(flat[:, :50], 0.90, top_k=100) == 45  # k = min(100, 50 - 1) = 49: ceil(0.9 * 49)
    q, _ = np.linalg.qr(rng.standard_normal((500, 20)))
    v, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    equal = q[:, :5] @ v[:5]
    assert effective_rank(equal, 0.99, top_k=100) == effective_rank(equal, 0.99) == 5  # k = 19 keeps all 5


def test_spectral_radius():
    assert spectral_radius(np.diag([0.5, -2.0, 1.0])) == pytest.approx(2.0)
    assert spectral_radius(np.array([[0.0, 1.0], [-1.0, 0.0]])) == pytest.approx(1.0)  # eigenvalues +-i


def test_cluster_accuracy():
    types = np.repeat(np.arange(4), 25)
    centers = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=float)
    separated = centers[types] + 0.01 * rng.standard_normal((100, 2))
    assert cluster_accuracy(separated, types) == 1.0
    assert cluster_accuracy(np.ones((100, 2)), np.zeros(100, int)) == 1.0  # one type, untrained embeddings
    assert cluster_accuracy(np.ones((100, 2)), types) == 0.25  # one cluster: it gets the label of the last type


@pytest.mark.parametrize("r2, label", [(0.95, "converged"), (0.9, "partial"), (0.5, "partial"), (0.1, "partial"),
                                       (0.05, "failed"), (-1.0, "failed"), (math.nan, "failed"), (math.inf, "failed")])
def test_classify(r2, label):
    assert classify({"connectivity_R2": r2}) == label
    assert classify({}) == "failed"
