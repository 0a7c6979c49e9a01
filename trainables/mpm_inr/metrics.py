"""Fit metrics (spec §3) and the outcome classes (spec §5.3). Pure functions on arrays of shape (T, N, n_comp)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy.stats import linregress
from skimage.metrics import structural_similarity

CLASSES = ("excellent", "good", "moderate", "poor")


def linear_fit(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """(slope, intercept, r²) of pred ≈ slope·gt + intercept, r the Pearson correlation (scipy linregress).

    r² is blind to global scale and offset errors; NaN when pred is not finite or gt is constant."""
    g, p = gt.reshape(-1).astype(np.float64), pred.reshape(-1).astype(np.float64)
    if not np.isfinite(p).all() or np.ptp(g) == 0:
        return math.nan, math.nan, math.nan
    fit = linregress(x=g, y=p)
    return float(fit.slope), float(fit.intercept), float(fit.rvalue**2)


def kinograph_r2(gt: np.ndarray, corrected: np.ndarray) -> float:
    """Mean over components and frames t of 1 − Σ_p(G − P)² / Σ_p(G − mean_p G)² (0 for a constant GT frame)."""
    g, p = gt.astype(np.float64), corrected.astype(np.float64)
    ss_res = ((g - p) ** 2).sum(1)  # (T, n_comp)
    ss_tot = ((g - g.mean(1, keepdims=True)) ** 2).sum(1)
    per_frame = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), 0.0)
    return float(per_frame.mean())


def kinograph_ssim(gt: np.ndarray, corrected: np.ndarray) -> float:
    """Mean over components of SSIM between the [particle, time] images G_c = gt[:, :, c]ᵀ and P_c,
    data_range = 2·max(max|G_c|, max|P_c|), scikit-image defaults (7×7 uniform window)."""
    scores = []
    for c in range(gt.shape[2]):
        G, P = gt[:, :, c].T.astype(np.float64), corrected[:, :, c].T.astype(np.float64)
        data_range = 2 * max(np.abs(G).max(), np.abs(P).max())
        scores.append(structural_similarity(G, P, data_range=data_range))
    return float(np.mean(scores))


def fit_metrics(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """final_mse, final_r2, slope, intercept, kinograph_R2 and kinograph_SSIM of raw predictions (T, N, n_comp).

    The kinographs compare gt with the slope-corrected prediction (pred − intercept)/slope."""
    slope, intercept, r2 = linear_fit(gt, pred)
    out = {"final_mse": float(np.mean((pred.astype(np.float64) - gt) ** 2)), "final_r2": r2,
           "slope": slope, "intercept": intercept, "kinograph_R2": math.nan, "kinograph_SSIM": math.nan}
    if math.isfinite(slope) and slope != 0:
        corrected = (pred - intercept) / slope
        out["kinograph_R2"] = kinograph_r2(gt, corrected)
        out["kinograph_SSIM"] = kinograph_ssim(gt, corrected)
    return out


def compression_ratio(n_values: int, total_params: int) -> float:
    """T·N·n_comp data values per network parameter."""
    return n_values / total_params


def classify(metrics: Mapping[str, float]) -> str:
    """excellent R² > 0.995, good 0.990–0.995, moderate 0.90–0.99, poor < 0.90 or not finite."""
    r2 = float(metrics.get("final_r2", math.nan))
    if not math.isfinite(r2) or r2 < 0.90:
        return "poor"
    if r2 < 0.99:
        return "moderate"
    return "good" if r2 <= 0.995 else "excellent"
