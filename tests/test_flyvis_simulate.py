"""The flyvis ground-truth simulator (spec §1.2-1.4): invariants, determinism, the cache."""

import numpy as np
import pytest

from trainables.flyvis.settings import FlyVisSettings
from trainables.flyvis.simulate import DT, load_or_simulate, simulate

SMALL = {"extent": 1, "n_frames": 300, "n_test_frames": 50, "sequence_frames": 50, "params_source": "sampled",
         "data_augmentation_loop": 5}


def settings(**overrides):
    return FlyVisSettings(**{**SMALL, **overrides})


@pytest.fixture(scope="module")
def noisy():
    return simulate(settings(noise_model_level=0.05))


def test_no_nan_and_shapes(noisy):
    assert noisy["v"].shape == noisy["y"].shape == (300, 443)
    assert noisy["stim"].shape == (300, 7) and noisy["v_test"].shape == (50, 443)
    for name in ("v", "y", "v_test"):
        assert np.isfinite(noisy[name]).all()
    assert noisy["stim"].min() >= 0 and noisy["stim"].max() <= 1


def test_noise_free_trajectory_follows_its_targets():
    data = simulate(settings(noise_model_level=0.0))
    step = data["v"][1:] - data["v"][:-1] - DT * data["y"][:-1]          # v(t+1) = v(t) + dt dv/dt(t)
    assert np.abs(step).max() < 1e-4
    again = simulate(settings(noise_model_level=0.0))
    assert np.array_equal(data["v"], again["v"]) and np.array_equal(data["y"], again["y"])


def test_process_noise_is_added_after_the_clean_step(noisy):
    residual = noisy["v"][1:] - noisy["v"][:-1] - DT * noisy["y"][:-1]    # targets: clean dv/dt at noisy v
    assert residual.std() == pytest.approx(0.05, rel=0.05)


def test_seeds(noisy):
    assert np.array_equal(simulate(settings(noise_model_level=0.05))["v"], noisy["v"])
    other = simulate(settings(noise_model_level=0.05, sim_seed=1))
    assert not np.allclose(other["stim"], noisy["stim"])
    assert not np.allclose(noisy["stim_test"][:50], noisy["stim"][:50])  # held-out test movies


def test_test_rollout_starts_at_the_training_start(noisy):
    assert np.allclose(noisy["v_test"][0], noisy["v"][0])                 # both from the steady state


def test_cache_returns_the_same_arrays():
    first, second = load_or_simulate(settings()), load_or_simulate(settings())
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)
