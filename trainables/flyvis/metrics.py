"""Metrics of spec §3, on plain arrays, and the outcome classification."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.mixture import GaussianMixture

OUTLIER = 5.0                     # edges with |W* - W_true| > 5 are dropped from conn_R2
FINAL_METRICS = ("conn_R2", "tau_R2", "V_rest_R2", "cluster_accuracy", "test_pearson", "test_R2",
                 "training_time_min")


def r_squared(true: np.ndarray, learned: np.ndarray) -> float:
    """Fit learned = alpha true + beta; R^2 = 1 - SS(learned - fit) / SS(learned - mean) (squared Pearson r)."""
    true, learned = np.asarray(true, float), np.asarray(learned, float)
    if len(true) < 2 or np.ptp(true) == 0 or np.ptp(learned) == 0:
        return math.nan
    alpha, beta = np.polyfit(true, learned, 1)
    residual = learned - (alpha * true + beta)
    return float(1 - (residual ** 2).sum() / ((learned - learned.mean()) ** 2).sum())


def corrected_weights(W: np.ndarray, source: np.ndarray, target: np.ndarray, slope: np.ndarray,
                      gain: np.ndarray, edge_slope: np.ndarray) -> np.ndarray:
    """W*_ij = -W_ij / s_i * gain_i * r_j (spec §2.4); NaN and inf become 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        corrected = -W / slope[target] * gain[target] * edge_slope[source]
    return np.where(np.isfinite(corrected), corrected, 0.0)


def connectivity_r2(w_true: np.ndarray, w_corrected: np.ndarray) -> float:
    """R^2 of corrected W against true W after dropping the edges with |W* - W_true| > 5."""
    keep = np.abs(w_corrected - w_true) <= OUTLIER
    return r_squared(w_true[keep], w_corrected[keep])


def learned_tau(slope: np.ndarray) -> np.ndarray:
    """tau_i = -1 / s_i clipped to [0, 1]; 1.0 where s_i = 0."""
    with np.errstate(divide="ignore"):
        tau = np.where(slope == 0, 1.0, -1.0 / np.where(slope == 0, 1.0, slope))
    return np.clip(tau, 0.0, 1.0)


def learned_v_rest(slope: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """V_rest_i = -b_i / s_i (0 where s_i = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v = -intercept / slope
    return np.where(np.isfinite(v), v, 0.0)


def cluster_features(embedding: np.ndarray, tau: np.ndarray, v_rest: np.ndarray, w_corrected: np.ndarray,
                     source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """F_i = [a_i, tau_i, V_rest_i, mean/std of incoming W*, mean/std of outgoing W*] (unscaled)."""
    n = len(tau)

    def mean_std(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = np.bincount(index, minlength=n)
        total = np.bincount(index, weights=w_corrected, minlength=n)
        square = np.bincount(index, weights=w_corrected ** 2, minlength=n)
        mean = np.divide(total, count, out=np.zeros(n), where=count > 0)
        var = np.divide(square, count, out=np.zeros(n), where=count > 0) - mean ** 2
        return mean, np.sqrt(np.clip(var, 0, None))

    w_in, w_out = mean_std(target), mean_std(source)
    return np.column_stack([embedding, tau, v_rest, *w_in, *w_out])


def cluster_accuracy(features: np.ndarray, labels: np.ndarray, n_components: int = 100, seed: int = 42) -> float:
    """GaussianMixture(full, random_state=42) clusters; one-to-one Hungarian matching of clusters to true
    types maximising matches; unmatched clusters count wrong. Fraction of neurons correctly labelled."""
    n_components = min(n_components, len(features))
    found = GaussianMixture(n_components, covariance_type="full", random_state=seed).fit_predict(features)
    _, types = np.unique(labels, return_inverse=True)
    table = np.zeros((types.max() + 1, found.max() + 1))
    np.add.at(table, (types, found), 1)                                   # true type x cluster
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(labels))


def rollout_scores(truth: np.ndarray, prediction: np.ndarray) -> tuple[float, float]:
    """(test_pearson, test_R2): nanmean over neurons of Pearson r and of 1 - SS_res/SS_tot over time
    (NaN for a neuron whose true variance is < 1e-8)."""
    truth, prediction = np.asarray(truth, float), np.asarray(prediction, float)
    dt, dp = truth - truth.mean(0), prediction - prediction.mean(0)
    var_t, var_p = (dt ** 2).mean(0), (dp ** 2).mean(0)
    valid = var_t >= 1e-8
    with np.errstate(divide="ignore", invalid="ignore"):
        pearson = np.where(valid & (var_p > 0), (dt * dp).mean(0) / np.sqrt(var_t * var_p), np.nan)
        r2 = np.where(valid, 1 - ((truth - prediction) ** 2).sum(0) / (dt ** 2).sum(0), np.nan)
    if not np.isfinite(pearson).any():
        return math.nan, math.nan
    return float(np.nanmean(pearson)), float(np.nanmean(r2)) if np.isfinite(r2).any() else math.nan


def classify(metrics: Mapping[str, float]) -> str:
    """converged: conn_R2 > 0.9 with process noise (fly_N9_62_1), > 0.8 without (fly_N9_62_0); partial from
    0.3 (0.1 without noise); failed below or when the run diverged (spec §3)."""
    conn = metrics.get("conn_R2", math.nan)
    if metrics.get("diverged", 0.0) or not math.isfinite(conn):
        return "failed"
    noisy = metrics.get("noise_model_level", 0.0) > 0
    if conn > (0.9 if noisy else 0.8):
        return "converged"
    return "partial" if conn >= (0.3 if noisy else 0.1) else "failed"
