"""The GNN of spec §3 in its dense form (§3.2), and the per-edge message-passing reference.

    du_i/dt = f_phi([u_i, a_i]) + sum_{j != i} W_ij f_edge([u_j, a_j])

f_edge depends on the source j only, so it is evaluated once per neuron and the sum over edges
is one masked matmul: du = f_phi(x) + f_edge(x) @ (W * mask)^T.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def mlp(n_in: int, hidden: int) -> nn.Sequential:
    """n_in -> hidden -> hidden -> 1, ReLU; first Linear default init, the others N(0, 0.1^2) with zero bias."""
    net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    for layer in (net[2], net[4]):
        nn.init.normal_(layer.weight, std=0.1)
        nn.init.zeros_(layer.bias)
    return net


class SignalGNN(nn.Module):
    """Learned connectivity W (optionally W_L W_R), embeddings a, and the MLPs f_edge, f_phi."""

    def __init__(self, n_neurons: int, embedding_dim: int = 2, hidden_dim: int = 64, low_rank: int | None = None,
                 learn_embedding: bool = True):
        super().__init__()
        n = n_neurons
        self.register_buffer("mask", 1 - torch.eye(n))                    # no self-edges
        if low_rank is None:
            self.W = nn.Parameter(torch.randn(n, n) * self.mask)            # std 1 (not 1/sqrt(N)), zero diagonal
        else:
            w_l, w_r = torch.randn(n, low_rank), torch.randn(low_rank, n)
            k = min(n, low_rank)
            w_l[range(k), range(k)] = 0                                     # [quirk, spec §3] leading k x k
            w_r[range(k), range(k)] = 0                                     # diagonal zeroed in both factors
            self.W_L, self.W_R = nn.Parameter(w_l), nn.Parameter(w_r)
        a = torch.ones(n, embedding_dim)
        if learn_embedding:
            self.a = nn.Parameter(a)
        else:
            self.register_buffer("a", a)                                    # frozen for a single neuron type
        self.lin_edge = mlp(1 + embedding_dim, hidden_dim)
        self.lin_phi = mlp(1 + embedding_dim, hidden_dim)

    def configure_optimizers(self, lr_W: float, lr: float, lr_emb: float) -> torch.optim.Adam:
        """Adam with lr_W for W (or W_L, W_R), lr for both MLPs, lr_emb for learnable embeddings."""
        connectivity = [self.W_L, self.W_R] if self.factorized else [self.W]
        groups = [{"params": connectivity, "lr": lr_W},
                  {"params": [*self.lin_edge.parameters(), *self.lin_phi.parameters()], "lr": lr}]
        if isinstance(self.a, nn.Parameter):
            groups.append({"params": [self.a], "lr": lr_emb})
        return torch.optim.Adam(groups, fused=True)

    @property
    def factorized(self) -> bool:
        return hasattr(self, "W_L")

    def connectivity(self) -> torch.Tensor:
        """The W used by the forward pass: (W or W_L W_R) * mask."""
        w = self.W_L @ self.W_R if self.factorized else self.W
        return w * self.mask

    def node_inputs(self, u: torch.Tensor) -> torch.Tensor:
        """[u_j, a_j] for activities u (..., N) -> (..., N, 1 + emb)."""
        return torch.cat([u.unsqueeze(-1), self.a.expand(*u.shape, -1)], dim=-1)

    def edge(self, u: torch.Tensor) -> torch.Tensor:
        """f_edge([u_j, a_j]) for u (..., N) -> (..., N)."""
        return self.lin_edge(self.node_inputs(u)).squeeze(-1)

    def phi(self, u: torch.Tensor) -> torch.Tensor:
        """f_phi([u_i, a_i]) for u (..., N) -> (..., N)."""
        return self.lin_phi(self.node_inputs(u)).squeeze(-1)

    def message(self, edge: torch.Tensor) -> torch.Tensor:
        """msg_i = sum_{j != i} W_ij f_edge_j for edge values (B, N) -> (B, N)."""
        return edge @ self.connectivity().T

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """du/dt = f_phi([u_i, a_i]) + msg_i for activities u (B, N)."""
        return self.phi(u) + self.message(self.edge(u))


def edge_index(n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Source and target of the N(N-1) directed edges j -> i, i != j."""
    target, source = (~torch.eye(n, dtype=torch.bool, device=device)).nonzero(as_tuple=True)
    return source, target


def _edge_messages(model: SignalGNN, u: torch.Tensor, w: torch.Tensor, source: torch.Tensor,
                   target: torch.Tensor) -> torch.Tensor:
    """sum over the given edges of W_ij f_edge([u_j, a_j]), added into targets i: (B, N)."""
    x = torch.cat([u[:, source].unsqueeze(-1), model.a[source].expand(len(u), -1, -1)], dim=-1)  # (B, E, 1+emb)
    message = w[target, source] * model.lin_edge(x).squeeze(-1)                                  # (B, E)
    return torch.zeros_like(u).index_add_(1, target, message)


def per_edge_derivative(model: SignalGNN, u: torch.Tensor, chunk_edges: int | None = None) -> torch.Tensor:
    """du/dt for u (B, N) by message passing: f_edge evaluated on every one of the N(N-1) edges.

    With `chunk_edges`, edges are processed in chunks under activation checkpointing, so memory holds
    one chunk's hidden activations (B * chunk * hidden floats) instead of all B * N(N-1) of them.
    """
    source, target = edge_index(u.shape[1], u.device)
    w = model.connectivity()
    if chunk_edges is None:
        msg = _edge_messages(model, u, w, source, target)
    else:
        msg = torch.zeros_like(u)
        for start in range(0, len(source), chunk_edges):
            edges = slice(start, start + chunk_edges)
            msg = msg + checkpoint(_edge_messages, model, u, w, source[edges], target[edges], use_reentrant=False)
    return model.phi(u) + msg
