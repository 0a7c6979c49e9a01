"""Invariants of the PDE_N4 simulator and its connectivity generators (spec §1-2), and the reference draws:
`sim_seed = s` replays the original generator's RNG calls for its seed s (NumPy legacy global RNG for W,
torch for the initial state, the filling mask and the noise)."""

import numpy as np
import pytest
import torch

from trainables.signal import simulate as simulate_module
from trainables.signal.metrics import effective_rank, spectral_radius
from trainables.signal.settings import SignalSettings
from trainables.signal.simulate import (
    DT,
    SIMULATION_SETTINGS,
    connectivity,
    derivative,
    integrate,
    load_or_simulate,
    neuron_params,
    neuron_types,
    reference_draw,
    simulate,
)

SMALL = SignalSettings(n_neurons=30, n_frames=300, connectivity_rank=5, n_rollout_frames=100).model_dump()


def small(**overrides):
    settings = {**SMALL, **overrides}
    return simulate(**{name: settings[name] for name in SIMULATION_SETTINGS})


@pytest.mark.parametrize("kind, dale, fill", [("chaotic", False, 1.0), ("low_rank", False, 1.0),
                                              ("chaotic", True, 1.0), ("low_rank", True, 0.5)])
def test_zero_diagonal(kind, dale, fill):
    w = connectivity(50, kind, 5, dale, 0.5, fill, np.random.RandomState(0), torch.Generator().manual_seed(0))
    assert np.all(np.diag(w) == 0)


def test_dale_column_signs():
    n, factor = 40, 0.3
    w = connectivity(n, "chaotic", 5, True, factor, 1.0, np.random.RandomState(1))
    n_exc = int(n * factor)
    assert np.all(w[:, :n_exc] >= 0) and np.all(w[:, n_exc:] <= 0)
    assert (w[:, :n_exc] > 0).any() and (w[:, n_exc:] < 0).any()


def test_low_rank_has_rank_r():
    n, r = 60, 7
    w = connectivity(n, "low_rank", r, False, 0.5, 1.0, np.random.RandomState(2))
    # a block that avoids the (zeroed) diagonal is a block of U V / sqrt(rN): its rank is exactly r
    assert np.linalg.matrix_rank(w[: n // 2, n // 2:]) == r
    assert np.linalg.matrix_rank(w) > r  # zeroing the diagonal breaks the exact low rank of the full matrix


def test_filling_factor_keeps_a_fraction_of_edges():
    w = connectivity(200, "chaotic", 5, False, 0.5, 0.8, np.random.RandomState(3), torch.Generator().manual_seed(3))
    assert abs(np.mean(w[~np.eye(200, dtype=bool)] != 0) - 0.8) < 0.01


def legacy_reference(n, kind, rank, dale, factor, fill, seed, n_noise=0):
    """The original generator's draws, built independently with the GLOBAL legacy NumPy RNG and global torch RNG
    (state restored afterwards): W, u0 and the first n_noise noise vectors randn(N)."""
    saved = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        torch.randperm(n)                                         # neuron init: positions
        torch.randn((n, 2))                                       # dpos
        u0 = torch.randn((n, 1)) * 5                              # u0
        torch.randn((n, 1))                                       # second feature
        if kind == "chaotic":
            w = np.random.randn(n, n) * np.sqrt(1 / n)
        else:
            left = np.random.randn(n, rank)
            right = np.random.randn(rank, n)
            w = left @ right / np.sqrt(rank * n)
        w = torch.tensor(w, dtype=torch.float32)
        w.fill_diagonal_(0)
        if dale:
            w = torch.abs(w)
            w[:, int(n * factor):] = -w[:, int(n * factor):]
        if fill != 1:
            w[torch.rand(w.shape) > fill] = 0
        noise = [torch.randn(n) for _ in range(n_noise)]
    np.random.set_state(saved)
    return w.numpy(), u0[:, 0].numpy(), noise


@pytest.mark.parametrize("n, kind, rank, dale, fill, seed", [
    (100, "chaotic", 20, False, 1.0, 42), (100, "chaotic", 20, True, 1.0, 42), (100, "low_rank", 20, False, 1.0, 42),
    (100, "low_rank", 10, True, 1.0, 7), (60, "chaotic", 5, True, 0.5, 3), (40, "low_rank", 5, False, 0.8, 0)])
def test_draw_is_the_reference_draw_bit_for_bit(n, kind, rank, dale, fill, seed):
    global_numpy, global_torch = np.random.get_state()[1].copy(), torch.random.get_rng_state()
    w, u0, _ = reference_draw(n, kind, rank, dale, 0.5, fill, seed)
    assert np.array_equal(np.random.get_state()[1], global_numpy)              # global RNG state untouched
    assert torch.equal(torch.random.get_rng_state(), global_torch)
    w_ref, u0_ref, _ = legacy_reference(n, kind, rank, dale, 0.5, fill, seed)
    assert w.dtype == np.float32 and np.array_equal(w, w_ref)                  # bit for bit
    assert u0.dtype == np.float32 and np.array_equal(u0, u0_ref)


@pytest.mark.parametrize("n, logged", [(100, 1.065), (1000, 1.046)])
def test_seed_42_is_the_logged_network(n, logged):
    """The spec's logged spectral radius of the chaotic network (N=100: 1.065, N=1000: 1.046) is seed 42's."""
    w, _, _ = reference_draw(n, "chaotic", 20, False, 0.5, 1.0, 42)
    assert round(spectral_radius(w), 3) == logged
    if n == 100:
        assert round(spectral_radius(reference_draw(n, "chaotic", 20, False, 0.5, 1.0, 41)[0]), 3) != logged


def test_types_and_parameter_rows():
    types = neuron_types(10, 4)
    assert types.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3]  # contiguous blocks, remainder to the last type
    params = neuron_params(types, 4, gain=3.0, self_coupling=None)
    assert params[:, 2].tolist() == [3.0] * 10  # gain overrides g for all types
    assert params[[0, 2, 4, 6]].tolist() == [[1, 0, 3, 0, 1, 0], [1, 0, 3, 1, 1, 0],
                                             [2, 0, 3, 1, 1, 0], [2, 0, 3, 2, 1, 0]]
    assert neuron_params(np.zeros(3, int), 1, 7.0, 2.0).tolist() == [[1, 0, 7, 2, 1, 0]] * 3


def test_stored_derivative_is_exact_and_euler_consistent():
    data = small()
    u, du = data["u"], data["du"]
    assert u.shape == du.shape == (301, 30) and u.dtype == du.dtype == np.float32
    np.testing.assert_allclose(du, derivative(u.astype(np.float64), data["W"], data["params"]), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(u[1:], u[:-1] + DT * du[:-1], rtol=1e-5, atol=1e-4)  # u <- u + dt du/dt, no noise
    assert data["eff_rank_99"] == effective_rank(u, 0.99) and data["eff_rank_90"] == effective_rank(u, 0.90)
    assert data["eff_rank_99_ref"] == effective_rank(u, 0.99, top_k=100)      # the seed's formula
    w_ref, u0_ref, _ = legacy_reference(30, "chaotic", 5, False, 0.5, 1.0, 42)
    warm, _ = integrate(u0_ref, w_ref, data["params"], 100)                 # 100 discarded warm-up steps
    np.testing.assert_array_equal(warm[-1], u[0])
    resimulated, _ = integrate(u[0], data["W"], data["params"], 300)  # the test rollout's ground truth
    np.testing.assert_array_equal(resimulated, u)
    assert data["spectral_radius"] == pytest.approx(spectral_radius(data["W"]))


def test_noise_is_the_reference_torch_stream_and_not_in_the_target():
    sigma = 0.5
    data = small(noise_model_level=sigma)
    _, _, noise = legacy_reference(30, "chaotic", 5, False, 0.5, 1.0, 42, n_noise=103)
    step = data["u"][1:] - data["u"][:-1] - DT * data["du"][:-1]
    # after each Euler step u += sigma randn(N) from torch, warm-up included: frame k -> k+1 gets draw 100 + k
    for k in (0, 1, 2):
        np.testing.assert_allclose(step[k], sigma * noise[100 + k].numpy(), atol=2e-5)
    np.testing.assert_allclose(data["du"], derivative(data["u"].astype(np.float64), data["W"], data["params"]),
                               rtol=1e-5, atol=1e-4)


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = small(), small(), small(sim_seed=43)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["W"], c["W"]) and not np.array_equal(a["u"], c["u"])


def test_load_or_simulate_caches_on_simulation_settings_only(monkeypatch):
    first = load_or_simulate(SMALL)
    monkeypatch.setattr(simulate_module, "simulate", lambda **_: pytest.fail("simulated twice"))
    second = load_or_simulate({**SMALL, "lr_W": 1.0, "batch_size": 3})  # training settings are not in the key
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    np.testing.assert_array_equal(first["u"], small()["u"])
