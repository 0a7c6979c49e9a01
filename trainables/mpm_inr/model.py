"""SIREN (spec §2.2): a first sine layer, `n_layers` hidden sine layers and a linear head."""

from __future__ import annotations

import math

import torch
from torch import nn


class SineLayer(nn.Module):
    """y = sin(ω·(W·x + b)): ω scales the bias as well."""

    def __init__(self, d_in: int, d_out: int, omega: float, weight_bound: float, generator: torch.Generator):
        super().__init__()
        self.omega = omega
        self.linear = nn.Linear(d_in, d_out)
        nn.init.uniform_(self.linear.weight, -weight_bound, weight_bound, generator=generator)
        bias_bound = 1 / math.sqrt(d_in)  # torch's default bias init
        nn.init.uniform_(self.linear.bias, -bias_bound, bias_bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega * self.linear(x))


class Siren(nn.Module):
    """d_in → H (sine) → L × [H → H (sine)] → d_out (linear)."""

    def __init__(self, d_in: int, d_out: int, hidden_dim: int, n_layers: int, omega: float, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        H = hidden_dim
        first = SineLayer(d_in, H, omega, 1 / d_in, g)  # W ~ U(−1/d_in, 1/d_in)
        hidden = [SineLayer(H, H, omega, math.sqrt(6 / H) / omega, g) for _ in range(n_layers)]  # U(±√(6/H)/ω)
        self.body = nn.Sequential(first, *hidden)
        self.head = nn.Linear(H, d_out)
        nn.init.uniform_(self.head.weight, -math.sqrt(0.1 / H) / omega, math.sqrt(0.1 / H) / omega, generator=g)
        nn.init.uniform_(self.head.bias, -1 / math.sqrt(H), 1 / math.sqrt(H), generator=g)  # torch default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def param_count(d_in: int, d_out: int, hidden_dim: int, n_layers: int) -> int:
    """P = (d_in+1)·H + L·(H² + H) + (H+1)·d_out."""
    H, L = hidden_dim, n_layers
    return (d_in + 1) * H + L * (H * H + H) + (H + 1) * d_out
