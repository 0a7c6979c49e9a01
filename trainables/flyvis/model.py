"""The GNN of spec §2 (PDE_N9_A / flyvis_A) and the read-outs of its learned quantities (spec §2.4).

    e_ij   = W_e g_phi(v_j, a_j)^2                (one scalar W per edge of the known adjacency)
    msg_i  = sum_{e: j->i} e_ij
    dv_i/dt = f_theta(v_i, a_i, msg_i, I_i)

g_phi sees the source only, so it is evaluated once per neuron and gathered to the edges.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import torch
from torch import nn

from trainables.flyvis.settings import FlyVisSettings


def mlp(n_in: int, hidden: int, n_layers: int) -> nn.Sequential:
    """`n_layers` Linear layers n_in -> hidden -> ... -> 1 with ReLU; the first Linear keeps PyTorch's init,
    the others are N(0, 0.1^2) with zero bias (spec §2.1)."""
    sizes = [n_in] + [hidden] * (n_layers - 1) + [1]
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(pairwise(sizes)):
        linear = nn.Linear(a, b)
        if k > 0:
            nn.init.normal_(linear.weight, std=0.1)
            nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class FlyVisGNN(nn.Module):
    """Per-neuron embeddings a, per-edge W, the edge MLP g_phi and the update MLP f_theta."""

    def __init__(self, source: np.ndarray, target: np.ndarray, n_neurons: int, s: FlyVisSettings):
        super().__init__()
        self.n = n_neurons
        self.register_buffer("source", torch.as_tensor(source, dtype=torch.long))
        self.register_buffer("target", torch.as_tensor(target, dtype=torch.long))
        n_edges = len(source)
        w = torch.zeros(n_edges) if s.w_init == "zeros" else torch.randn(n_edges) * s.w_init_scale / n_edges ** 0.5
        self.W = nn.Parameter(w)
        self.a = nn.Parameter(torch.ones(n_neurons, s.embedding_dim))    # identical: types must emerge
        self.g_phi = mlp(1 + s.embedding_dim, s.hidden_dim, s.n_layers)
        self.f_theta = mlp(3 + s.embedding_dim, s.hidden_dim_update, s.n_layers_update)

    def configure_optimizers(self, s: FlyVisSettings) -> torch.optim.Adam:
        """One Adam with the groups of spec §2.3: W -> lr_W, g_phi and f_theta -> lr, a -> lr_emb."""
        groups = [{"params": [self.W], "lr": s.lr_W},
                  {"params": [*self.g_phi.parameters(), *self.f_theta.parameters()], "lr": s.lr},
                  {"params": [self.a], "lr": s.lr_emb}]
        return torch.optim.Adam(groups)

    def edge_function(self, v: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:
        """g_phi(v_j, a_j)^2 for v (..., N) -> (..., N); `a` defaults to the neurons' embeddings."""
        a = self.a if a is None else a
        x = torch.cat([v.unsqueeze(-1), a.expand(*v.shape, -1)], dim=-1)
        return self.g_phi(x).squeeze(-1) ** 2

    def update(self, v: torch.Tensor, msg: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """f_theta(v_i, a_i, msg_i, I_i) for (..., N) inputs -> (..., N)."""
        x = torch.cat([v.unsqueeze(-1), self.a.expand(*v.shape, -1), msg.unsqueeze(-1), current.unsqueeze(-1)], -1)
        return self.f_theta(x).squeeze(-1)

    def batched_edges(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Edge index of `batch` disjoint graph copies: copy b's nodes are offset by b N (W indexed modulo E)."""
        offset = (torch.arange(batch, device=self.source.device) * self.n)[:, None]
        return (self.source + offset).reshape(-1), (self.target + offset).reshape(-1)

    def message(self, node_values: torch.Tensor) -> torch.Tensor:
        """msg_i = sum_{j->i} W_e g_j for per-node g (B, N) -> (B, N), on B disjoint graph copies."""
        batch = node_values.shape[0]
        source, target = self.batched_edges(batch)
        edge_values = self.W.repeat(batch) * node_values.reshape(-1)[source]         # e_ij = W_e g_phi(v_j, a_j)^2
        out = node_values.new_zeros(batch * self.n).index_add_(0, target, edge_values)  # aggregation "add"
        return out.reshape(batch, self.n)

    def message_per_edge(self, v: torch.Tensor) -> torch.Tensor:
        """The same messages with g_phi evaluated on every edge (the original, E-sized evaluation)."""
        batch = v.shape[0]
        source, target = self.batched_edges(batch)
        x = torch.cat([v.reshape(-1)[source].unsqueeze(-1), self.a.repeat(batch, 1)[source]], dim=-1)
        edge_values = self.W.repeat(batch) * self.g_phi(x).squeeze(-1) ** 2
        out = v.new_zeros(batch * self.n).index_add_(0, target, edge_values)
        return out.reshape(batch, self.n)

    def forward(self, v: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """Predicted dv/dt for states v (B, N) and stimulus currents (B, N)."""
        return self.update(v, self.message(self.edge_function(v)), current)


# ---- read-outs (spec §2.4) ------------------------------------------------------------------------
def line_fit(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares slope and intercept of y against x along the last axis."""
    xm, ym = x.mean(-1, keepdim=True), y.mean(-1, keepdim=True)
    slope = ((x - xm) * (y - ym)).sum(-1) / ((x - xm) ** 2).sum(-1).clamp_min(1e-30)
    return slope, ym.squeeze(-1) - slope * xm.squeeze(-1)


@torch.no_grad()
def update_line_fit(model: FlyVisGNN, mu: torch.Tensor, sigma: torch.Tensor, n_points: int = 1000,
                    chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Slope s_i, intercept b_i of f_theta(v, a_i, msg=0, I=0) over v in [mu_i - 2 sigma_i, mu_i + 2 sigma_i]."""
    steps = torch.linspace(-2, 2, n_points, device=mu.device)
    slopes, intercepts = [], []
    for start in range(0, model.n, chunk):
        i = slice(start, start + chunk)
        v = mu[i, None] + sigma[i, None] * steps                                   # (n, P)
        a = model.a[i, None, :].expand(-1, n_points, -1)
        zero = torch.zeros_like(v).unsqueeze(-1)
        f = model.f_theta(torch.cat([v.unsqueeze(-1), a, zero, zero], -1)).squeeze(-1)
        slope, intercept = line_fit(v, f)
        slopes.append(slope), intercepts.append(intercept)
    return torch.cat(slopes), torch.cat(intercepts)


@torch.no_grad()
def edge_slopes(model: FlyVisGNN, mu: torch.Tensor, sigma: torch.Tensor, n_points: int = 1000,
                chunk: int = 512) -> torch.Tensor:
    """r_j: slope of g_phi(v, a_j)^2 over v in [max(mu_j - 2 sigma_j, 0), mu_j + 2 sigma_j]; 1 if mu_j + sigma_j <= 0."""
    fraction = torch.linspace(0, 1, n_points, device=mu.device)
    out = []
    for start in range(0, model.n, chunk):
        i = slice(start, start + chunk)
        lo, hi = (mu[i] - 2 * sigma[i]).clamp_min(0), mu[i] + 2 * sigma[i]
        v = lo[:, None] + (hi - lo)[:, None] * fraction
        g = model.edge_function(v, model.a[i, None, :])
        slope, _ = line_fit(v, g)
        out.append(torch.where(mu[i] + sigma[i] <= 0, torch.ones_like(slope), slope))
    return torch.cat(out)


def message_gain(model: FlyVisGNN, v: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """gain_i = median over the given frames (K, N) of d f_theta / d msg_i at the real inputs."""
    with torch.no_grad():
        msg = model.message(model.edge_function(v))
    msg = msg.clone().requires_grad_(True)
    out = model.update(v, msg, current)
    (grad,) = torch.autograd.grad(out.sum(), msg)                                     # f_i depends on msg_i only
    return grad.median(dim=0).values
