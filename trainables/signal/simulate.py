"""Ground truth: a rate network `PDE_N4` integrated with explicit Euler (spec §1-2).

    du_i/dt = -a_i u_i + b_i + s_i tanh(u_i) + g_i sum_{j != i} W_ij tanh((u_j - h_j) / w_j)

W[post, pre]; a, b, g, s belong to the target neuron i, w and h to the source neuron j.
One numpy Generator seeded with `sim_seed` draws W, the initial state and the process noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from trainables.signal.metrics import effective_rank, spectral_radius
from tuner.cache import cached_arrays

DT = 0.01
WARMUP_STEPS = 100
# per-type parameter rows [a, b, g, s, w, h]: decay, offset, gain, self-coupling, width, threshold
TYPE_PARAMS = {
    1: [[1, 0, 7, 0, 1, 0]],
    4: [[1, 0, 7, 0, 1, 0],   # T0: a=1, s=0
        [1, 0, 7, 1, 1, 0],   # T1: a=1, s=1
        [2, 0, 7, 1, 1, 0],   # T2: a=2, s=1
        [2, 0, 7, 2, 1, 0]],  # T3: a=2, s=2
}
# the settings that define the data (and nothing else: they are the cache key)
SIMULATION_SETTINGS = ("n_neurons", "n_frames", "connectivity_type", "connectivity_rank", "Dale_law",
                       "Dale_law_factor", "connectivity_filling_factor", "n_types", "gain", "self_coupling",
                       "noise_model_level", "sim_seed")
CACHE_VERSION = 2  # bump when the generated data changes for the same settings


def connectivity(n: int, kind: str, rank: int, dale: bool, dale_factor: float, fill: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Ground-truth W (n x n, zero diagonal), spec §2."""
    if kind == "chaotic":
        w = rng.standard_normal((n, n)) * np.sqrt(1 / n)                  # W_ij ~ N(0, 1/N)
    elif kind == "low_rank":
        u, v = rng.standard_normal((n, rank)), rng.standard_normal((rank, n))
        w = u @ v / np.sqrt(rank * n)                                     # W = U V / sqrt(rN)
    else:
        raise ValueError(f"connectivity_type must be 'chaotic' or 'low_rank', got {kind!r}")
    np.fill_diagonal(w, 0)
    if dale:
        w = np.abs(w)
        w[:, int(n * dale_factor):] *= -1                                 # presynaptic j >= n_E inhibitory
    if fill < 1:
        w[rng.random((n, n)) > fill] = 0                                  # keep each edge with prob f
    return w


def neuron_types(n: int, n_types: int) -> np.ndarray:
    """Contiguous type blocks: type_i = floor(i / (N // n_types)), remainder to the last type."""
    return np.minimum(np.arange(n) // (n // n_types), n_types - 1)


def neuron_params(types: np.ndarray, n_types: int, gain: float, self_coupling: float | None) -> np.ndarray:
    """Per-neuron rows [a, b, g, s, w, h] (n x 6); g and s overridable for all types."""
    params = np.array(TYPE_PARAMS[n_types], dtype=np.float64)[types]
    params[:, 2] = gain
    if self_coupling is not None:
        params[:, 3] = self_coupling
    return params


def derivative(u: np.ndarray, w: np.ndarray, params: np.ndarray) -> np.ndarray:
    """du/dt of PDE_N4 for states u (..., N)."""
    a, b, g, s, width, h = params.T
    return -a * u + b + s * np.tanh(u) + g * (np.tanh((u - h) / width) @ w.T)


def integrate(u0: np.ndarray, w: np.ndarray, params: np.ndarray, n_steps: int, noise_level: float = 0.0,
              rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Euler from u0 for n_steps: states u (n_steps+1, N) and exact drifts du/dt at them (no noise), float32."""
    u_all = np.empty((n_steps + 1, len(u0)), dtype=np.float32)
    du_all = np.empty_like(u_all)
    u, w = np.asarray(u0, dtype=np.float64), np.asarray(w, dtype=np.float64)
    for t in range(n_steps + 1):
        du = derivative(u, w, params)
        u_all[t], du_all[t] = u, du
        u = u + DT * du                                                   # u <- u + dt du/dt
        if noise_level > 0:
            u = u + noise_level * rng.standard_normal(len(u))              # process noise, not scaled by sqrt(dt)
    return u_all, du_all


def simulate(n_neurons: int, n_frames: int, connectivity_type: str, connectivity_rank: int, Dale_law: bool,
             Dale_law_factor: float, connectivity_filling_factor: float, n_types: int, gain: float,
             self_coupling: float | None, noise_model_level: float, sim_seed: int) -> dict[str, np.ndarray]:
    """Generate one dataset: activity u and target du/dt (n_frames+1, N), W, types, data descriptors."""
    rng = np.random.default_rng(sim_seed)
    w = connectivity(n_neurons, connectivity_type, connectivity_rank, Dale_law, Dale_law_factor,
                     connectivity_filling_factor, rng).astype(np.float32)  # simulate with the stored W
    types = neuron_types(n_neurons, n_types)
    params = neuron_params(types, n_types, gain, self_coupling)
    u0 = 5 * rng.standard_normal(n_neurons)                               # u_i(0) ~ N(0, 5^2)
    warm, _ = integrate(u0, w, params, WARMUP_STEPS, noise_model_level, rng)
    u, du = integrate(warm[-1], w, params, n_frames, noise_model_level, rng)  # from the stored float32 state,
                                                                          # so re-simulating from u[0] matches
    return {
        "u": u, "du": du, "W": w, "types": types, "params": params,
        "spectral_radius": np.float64(spectral_radius(w)),               # rho(W), without the gain
        "eff_rank_90": np.int64(effective_rank(u, 0.90)),
        "eff_rank_99": np.int64(effective_rank(u, 0.99)),
    }


def load_or_simulate(settings: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """`simulate` for the simulation settings in `settings`, generated once and cached on disk."""
    sim = {name: settings[name] for name in SIMULATION_SETTINGS}
    key = {"simulator": "PDE_N4", "version": CACHE_VERSION, **sim}
    return cached_arrays("signal", key, lambda: simulate(**sim))
