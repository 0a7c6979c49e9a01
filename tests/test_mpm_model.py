"""SIREN layout, initialisation and parameter count (spec §2.2)."""

import math

import pytest
import torch

from trainables.mpm_inr.model import Siren, param_count


@pytest.mark.parametrize("d_in, d_out, H, L, expected", [
    (3, 4, 256, 4, 265_220), (3, 1, 512, 3, 790_529), (3, 4, 896, 3, 2_418_308), (3, 4, 1280, 3, 4_929_284)])
def test_param_count_formula(d_in, d_out, H, L, expected):
    assert param_count(d_in, d_out, H, L) == expected


@pytest.mark.parametrize("H, L, expected", [(256, 4, 265_220), (1280, 3, 4_929_284)])
def test_model_has_formula_param_count(H, L, expected):
    model = Siren(3, 4, H, L, omega=10.0, seed=0)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_siren_t_param_count():
    model = Siren(1, 50 * 4, 64, 3, omega=10.0, seed=0)  # one output per particle and component
    assert sum(p.numel() for p in model.parameters()) == param_count(1, 200, 64, 3)


def test_layers_and_init():
    omega, H = 12.0, 64
    model = Siren(3, 4, H, 2, omega=omega, seed=0)
    first, *hidden = model.body
    assert len(hidden) == 2
    assert first.linear.weight.abs().max() <= 1 / 3
    for layer in hidden:
        assert layer.linear.weight.abs().max() <= math.sqrt(6 / H) / omega
    assert model.head.weight.abs().max() <= math.sqrt(0.1 / H) / omega
    x = torch.rand(5, 3)
    expected = torch.sin(omega * (x @ first.linear.weight.T + first.linear.bias))  # ω scales the bias too
    torch.testing.assert_close(first(x), expected)


def test_same_seed_same_weights():
    a, b, c = (Siren(3, 4, 32, 2, 10.0, seed=s) for s in (1, 1, 2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.head.weight, c.head.weight)
