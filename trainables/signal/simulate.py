"""Ground truth: a rate network `PDE_N4` integrated with explicit Euler (spec §1-2).

    du_i/dt = -a_i u_i + b_i + s_i tanh(u_i) + g_i sum_{j != i} W_ij tanh((u_j - h_j) / w_j)

W[post, pre]; a, b, g, s belong to the target neuron i, w and h to the source neuron j.

Draws are the reference code's (spec §1.2, §2): `sim_seed = s` gives the network and initial state that
the original generator makes for its `simulation.seed = s`. That generator seeds both torch and NumPy's
legacy global RNG with s, then draws, in this order:
  torch: randperm(N), randn(N, 2), randn(N, 1) * 5 (= u0), randn(N, 1)   (neuron init)
  numpy: randn(N, N) * sqrt(1/N)                       (chaotic W)
         or randn(N, r), randn(r, N); W = U V / sqrt(rN)   (low_rank W)
  W -> float32, diagonal 0, |W| with columns j >= int(N * factor) negated (Dale's law)
  torch: rand(N, N) > f zeroes an edge                (filling factor f < 1)
  torch: randn(N) * sigma after every Euler step       (process noise, warm-up included)
Here a local `np.random.RandomState(s)` (the legacy generator's stream) and a local `torch.Generator`
seeded with s replay those calls without touching global RNG state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from trainables.signal.metrics import (
    REFERENCE_TOP_K,
    activity_spectrum,
    rank_of_spectrum,
    spectral_radius,
    subsampled_shape,
)
from tuner.cache import cached_arrays

if TYPE_CHECKING:  # torch loads only when data is generated: settings validation imports this module
    import torch

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
CACHE_VERSION = 3  # bump when the generated data changes for the same settings (3: reference-compatible draws)


def connectivity(n: int, kind: str, rank: int, dale: bool, dale_factor: float, fill: float,
                 rng: np.random.RandomState, torch_rng: torch.Generator | None = None) -> np.ndarray:
    """Ground-truth W (n x n float32, zero diagonal), spec §2, with the reference code's draws: W from the
    NumPy legacy stream `rng`, the filling mask from the torch stream `torch_rng` (torch.rand(n, n) > f)."""
    if kind == "chaotic":
        w = rng.randn(n, n) * np.sqrt(1 / n)                              # W_ij ~ N(0, 1/N)
    elif kind == "low_rank":
        u = rng.randn(n, rank)
        v = rng.randn(rank, n)
        w = u @ v / np.sqrt(rank * n)                                     # W = U V / sqrt(rN)
    else:
        raise ValueError(f"connectivity_type must be 'chaotic' or 'low_rank', got {kind!r}")
    w = w.astype(np.float32)                                              # the reference keeps W in float32
    np.fill_diagonal(w, 0)
    if dale:
        w = np.abs(w)
        w[:, int(n * dale_factor):] *= -1                                 # presynaptic j >= n_E inhibitory
    if fill < 1:
        import torch

        if torch_rng is None:
            raise ValueError("a filling factor < 1 draws its mask from torch: pass torch_rng")
        drop = (torch.rand(n, n, generator=torch_rng) > fill).numpy()     # keep each edge with prob f
        w[drop] = 0
    return w


def initial_state(n: int, torch_rng: torch.Generator) -> np.ndarray:
    """u0 (float32) from the reference's neuron init: randperm(N) (positions), randn(N, 2) (dpos),
    randn(N, 1) * 5 (u0), randn(N, 1) * 0.1 (a second feature), drawn in that order."""
    import torch

    torch.randperm(n, generator=torch_rng)
    torch.randn(n, 2, generator=torch_rng)
    u0 = torch.randn(n, 1, generator=torch_rng) * 5                      # u_i(0) ~ N(0, 5^2)
    torch.randn(n, 1, generator=torch_rng)
    return u0[:, 0].numpy()


def reference_draw(n: int, kind: str, rank: int, dale: bool, dale_factor: float, fill: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray, torch.Generator]:
    """(W, u0, torch stream) of the reference generator seeded with `seed`; the stream then draws the noise."""
    import torch

    torch_rng = torch.Generator(device="cpu").manual_seed(seed)
    u0 = initial_state(n, torch_rng)                                      # torch draws come first,
    w = connectivity(n, kind, rank, dale, dale_factor, fill, np.random.RandomState(seed), torch_rng)  # then W
    return w, u0, torch_rng


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
              rng: torch.Generator | None = None, store: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Euler from u0 for n_steps: states u (n_steps+1, N) and exact drifts du/dt at them (no noise), float32.

    The process noise sigma * randn(N) is drawn from the torch stream `rng` after every Euler step, the last
    one included (as the reference does). With store=False only the state after n_steps is returned (1, N)."""
    if noise_level > 0:
        import torch
    shape = (n_steps + 1 if store else 1, len(u0))
    u_all, du_all = np.empty(shape, dtype=np.float32), np.empty(shape, dtype=np.float32)
    u, w = np.asarray(u0, dtype=np.float64), np.asarray(w, dtype=np.float64)
    for t in range(n_steps + 1):
        du = derivative(u, w, params)
        if store:
            u_all[t], du_all[t] = u, du
        elif t == n_steps:
            u_all[0], du_all[0] = u, du
            break
        u = u + DT * du                                                   # u <- u + dt du/dt
        if noise_level > 0:                                               # process noise, not scaled by sqrt(dt)
            u = u + noise_level * torch.randn(len(u), generator=rng, dtype=torch.float32).numpy()
    return u_all, du_all


def simulate(n_neurons: int, n_frames: int, connectivity_type: str, connectivity_rank: int, Dale_law: bool,
             Dale_law_factor: float, connectivity_filling_factor: float, n_types: int, gain: float,
             self_coupling: float | None, noise_model_level: float, sim_seed: int) -> dict[str, np.ndarray]:
    """Generate one dataset: activity u and target du/dt (n_frames+1, N), W, types, data descriptors."""
    w, u0, torch_rng = reference_draw(n_neurons, connectivity_type, connectivity_rank, Dale_law, Dale_law_factor,
                                      connectivity_filling_factor, sim_seed)
    types = neuron_types(n_neurons, n_types)
    params = neuron_params(types, n_types, gain, self_coupling)
    warm, _ = integrate(u0, w, params, WARMUP_STEPS, noise_model_level, torch_rng, store=False)  # 100 steps
    u, du = integrate(warm[0], w, params, n_frames, noise_model_level, torch_rng)  # from the stored float32 state,
                                                                          # so re-simulating from u[0] matches
    return {
        "u": u, "du": du, "W": w, "types": types, "params": params,
        "spectral_radius": np.float64(spectral_radius(w)),               # rho(W), without the gain
        **effective_ranks(u),
    }


def effective_ranks(u: np.ndarray) -> dict[str, np.int64]:
    """eff_rank_90/99 by the full SVD, and eff_rank_90_ref/99_ref by the reference's top-100 formula (the
    seed's), from one SVD of the activity."""
    s, shape = activity_spectrum(u), subsampled_shape(u)
    return {f"eff_rank_{round(100 * q)}{suffix}": np.int64(rank_of_spectrum(s, q, top_k, shape))
            for suffix, top_k in (("", None), ("_ref", REFERENCE_TOP_K)) for q in (0.90, 0.99)}


def load_or_simulate(settings: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """`simulate` for the simulation settings in `settings`, generated once and cached on disk."""
    sim = {name: settings[name] for name in SIMULATION_SETTINGS}
    key = {"simulator": "PDE_N4", "version": CACHE_VERSION, **sim}
    return cached_arrays("signal", key, lambda: simulate(**sim))
