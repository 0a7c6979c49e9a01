"""Invariants of the PDE_N4 simulator and its connectivity generators (spec §1-2)."""

import numpy as np
import pytest

from trainables.signal import simulate as simulate_module
from trainables.signal.metrics import spectral_radius
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
    simulate,
)

SMALL = SignalSettings(n_neurons=30, n_frames=300, connectivity_rank=5, n_rollout_frames=100).model_dump()


def small(**overrides):
    settings = {**SMALL, **overrides}
    return simulate(**{name: settings[name] for name in SIMULATION_SETTINGS})


@pytest.mark.parametrize("kind, dale, fill", [("chaotic", False, 1.0), ("low_rank", False, 1.0),
                                              ("chaotic", True, 1.0), ("low_rank", True, 0.5)])
def test_zero_diagonal(kind, dale, fill):
    w = connectivity(50, kind, 5, dale, 0.5, fill, np.random.default_rng(0))
    assert np.all(np.diag(w) == 0)


def test_dale_column_signs():
    n, factor = 40, 0.3
    w = connectivity(n, "chaotic", 5, True, factor, 1.0, np.random.default_rng(1))
    n_exc = int(n * factor)
    assert np.all(w[:, :n_exc] >= 0) and np.all(w[:, n_exc:] <= 0)
    assert (w[:, :n_exc] > 0).any() and (w[:, n_exc:] < 0).any()


def test_low_rank_has_rank_r():
    n, r = 60, 7
    w = connectivity(n, "low_rank", r, False, 0.5, 1.0, np.random.default_rng(2))
    # a block that avoids the (zeroed) diagonal is a block of U V / sqrt(rN): its rank is exactly r
    assert np.linalg.matrix_rank(w[: n // 2, n // 2:]) == r
    assert np.linalg.matrix_rank(w) > r  # zeroing the diagonal breaks the exact low rank of the full matrix


def test_filling_factor_keeps_a_fraction_of_edges():
    w = connectivity(200, "chaotic", 5, False, 0.5, 0.8, np.random.default_rng(3))
    assert abs(np.mean(w[~np.eye(200, dtype=bool)] != 0) - 0.8) < 0.01


@pytest.mark.parametrize("n", [100, 1000])
def test_chaotic_spectral_radius_near_one(n):
    w = connectivity(n, "chaotic", 5, False, 0.5, 1.0, np.random.default_rng(4))
    assert 0.8 < spectral_radius(w) < 1.25  # circular law: W_ij ~ N(0, 1/N)


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
    assert data["eff_rank_90"] <= data["eff_rank_99"] <= 30
    resimulated, _ = integrate(u[0], data["W"], data["params"], 300)  # the test rollout's ground truth
    np.testing.assert_array_equal(resimulated, u)
    assert data["spectral_radius"] == pytest.approx(spectral_radius(data["W"]))


def test_noise_is_added_but_not_to_the_target():
    data = small(noise_model_level=0.5)
    step = data["u"][1:] - data["u"][:-1] - DT * data["du"][:-1]
    assert 0.4 < step.std() < 0.6  # sigma * N(0, 1) after each Euler step, not scaled by sqrt(dt)
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
