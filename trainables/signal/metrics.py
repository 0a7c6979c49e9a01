"""Metrics of spec §5, as pure functions on arrays."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy.cluster.hierarchy import fclusterdata


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and offset of y = alpha x + beta."""
    design = np.stack([x, np.ones_like(x)], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(alpha), float(beta)


def fit_r2(x: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """R^2 = 1 - sum (y - alpha x - beta)^2 / sum (y - mean y)^2."""
    return float(1 - np.sum((y - alpha * x - beta) ** 2) / np.sum((y - y.mean()) ** 2))


def connectivity_r2(w_true: np.ndarray, w_learned: np.ndarray, edge_scale: np.ndarray) -> float:
    """connectivity_R2 (§5.1): R^2 of vec(W_true) -> vec(W~), W~_ij = W^_ij c_j / 10, over all N^2 entries."""
    w_hat = np.array(w_learned, dtype=np.float64)
    np.fill_diagonal(w_hat, 0)
    w_corrected = w_hat * edge_scale[None, :] / 10           # W~_ij = W^_ij c_j / 10 (column j = source)
    if not np.all(np.isfinite(w_corrected)):
        return math.nan
    x, y = np.asarray(w_true, dtype=np.float64).ravel(), w_corrected.ravel()
    return fit_r2(x, y, *linear_fit(x, y))


def frame_r2(x: np.ndarray, y: np.ndarray) -> float:
    """One frame of test_R2 (§5.2): inlier fit of prediction y on ground truth x across neurons."""
    if not np.all(np.isfinite(y)) or np.max(np.abs(y)) > 1e10 or y.std() < 0.1 * x.std():
        return 0.0                                            # exploded or collapsed prediction
    inliers = (np.abs(x - np.median(x)) < 3 * x.std()) & (np.abs(y - np.median(y)) < 3 * y.std())
    if inliers.sum() <= 10:
        return 0.0
    return fit_r2(x, y, *linear_fit(x[inliers], y[inliers]))  # fit on inliers, R^2 over all neurons


def rollout_r2(truth: np.ndarray, prediction: np.ndarray, step: int = 10) -> float:
    """test_R2: mean of `frame_r2` over frames t = step, 2 step, ... < T of (T, N) rollouts."""
    frames = range(step, len(truth), step)
    return float(np.mean([frame_r2(truth[t], prediction[t]) for t in frames])) if frames else math.nan


def rollout_pearson(data: np.ndarray, prediction: np.ndarray) -> float:
    """test_pearson: mean over neurons of Pearson r(data_i(t), prediction_i(t)); NaN for flat or broken traces."""
    d = data - data.mean(axis=0)
    with np.errstate(invalid="ignore", over="ignore"):
        p = prediction - prediction.mean(axis=0)
        sd, sp = d.std(axis=0), p.std(axis=0)
        valid = (sd >= 1e-8) & (sp >= 1e-8) & np.all(np.isfinite(p), axis=0)
        if not valid.any():
            return math.nan
        r = (d[:, valid] * p[:, valid]).mean(axis=0) / (sd[valid] * sp[valid])
    return float(r.mean())                                    # nanmean: invalid neurons are left out


REFERENCE_TOP_K = 100  # the reference's analyze_data_svd keeps at most 100 singular values (spec §5.4)


def activity_spectrum(activity: np.ndarray) -> np.ndarray:
    """Singular values of the (T, N) activity, NOT centered, after the reference's subsampling (§5.4): every
    ceil(N/1024)-th neuron above 1024 neurons, every ceil(T'N/1e7)-th frame above 1e7 entries."""
    a = activity
    if a.shape[1] > 1024:
        a = a[:, :: math.ceil(a.shape[1] / 1024)]
    if a.size > 1e7:
        a = a[:: math.ceil(a.size / 1e7)]
    return np.linalg.svd(np.asarray(a, dtype=np.float64), compute_uv=False)


def rank_of_spectrum(s: np.ndarray, q: float, top_k: int | None = None, shape: tuple[int, int] | None = None) -> int:
    """Smallest m with cumsum(s^2)[m] / sum(s^2) >= q over the full spectrum s (top_k=None), or over its leading
    min(top_k, min(T', N') - 1) values (the reference's normalization; `shape` = (T', N'), default len(s) + 1)."""
    if top_k is not None:
        k = min(top_k, (min(shape) if shape is not None else len(s) + 1) - 1)
        s = s[:k]
    explained = np.cumsum(s**2) / np.sum(s**2)                # c_m = cumsum(s^2) / sum(s^2) over the kept values
    return int(np.searchsorted(explained, q) + 1)


def effective_rank(activity: np.ndarray, q: float, top_k: int | None = None) -> int:
    """Number of singular values of the (T, N) activity, NOT centered, holding a fraction q of sum s^2 (§5.4).

    top_k=None: the full spectrum (c_m = cumsum(s^2) / sum over all s^2). top_k=k: the reference's formula,
    which keeps only the leading min(k, min(T', N') - 1) values and normalizes by their sum, so it can never
    exceed k (the seed's eff_rank column; at N=1000 it reads far below the full-spectrum value). Neurons and
    frames are subsampled as the reference does either way. The reference's randomized SVD (sklearn, for
    T'N' > 1e6) is replaced by the exact singular values it approximates."""
    s = activity_spectrum(activity)
    return rank_of_spectrum(s, q, top_k, subsampled_shape(activity))


def subsampled_shape(activity: np.ndarray) -> tuple[int, int]:
    """(T', N') after the subsampling of `activity_spectrum`."""
    t, n = activity.shape
    n_kept = len(range(0, n, math.ceil(n / 1024))) if n > 1024 else n
    t_kept = len(range(0, t, math.ceil(t * n_kept / 1e7))) if t * n_kept > 1e7 else t
    return t_kept, n_kept


def spectral_radius(w: np.ndarray) -> float:
    """rho(W) = max |eig(W)|."""
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(w, dtype=np.float64)))))


def cluster_accuracy(embeddings: np.ndarray, types: np.ndarray, threshold: float = 0.1) -> float:
    """§5.5: single-linkage clusters of min-max normalized embeddings, each true type -> its median cluster."""
    span = embeddings.max() - embeddings.min()
    normalized = (embeddings - embeddings.min()) / span if span > 0 else np.zeros_like(embeddings)
    clusters = fclusterdata(normalized, t=threshold, criterion="distance", method="single")
    n_types = int(types.max()) + 1
    labels = np.full(len(types), n_types)                     # unmatched clusters get label n_types
    for n in range(n_types):
        labels[clusters == round(float(np.median(clusters[types == n])))] = n
    return float(np.mean(labels == types))


def classify(metrics: Mapping[str, float]) -> str:
    """converged: conn R^2 > 0.9; partial: 0.1 <= R^2 <= 0.9; failed: below 0.1 or NaN (§5.7)."""
    r2 = metrics.get("connectivity_R2", math.nan)
    if not math.isfinite(r2) or r2 < 0.1:
        return "failed"
    return "converged" if r2 > 0.9 else "partial"
