"""One optimizer step of the signal trainer, dense (spec §3.2) vs per-edge message passing (spec §3.1).

Both steps minimize the same loss (prediction L2 + L1 on W + edge monotonicity) on the same model;
the per-edge step evaluates f_edge on all B * N(N-1) edges, under activation checkpointing over edge
chunks so that N=1000 fits in a few GB. Prints the median step time of each and their ratio.

    python benchmarks/signal_step.py                      # N=100 (B=8) and N=1000 (B=16)
    python benchmarks/signal_step.py --n 300 --batch 8 --repeats 5 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch

from trainables.signal.model import SignalGNN, per_edge_derivative
from trainables.signal.train import l1_penalty, monotonicity_penalty, step_loss

COEFF_L1, COEFF_DIFF, DELTA = 1e-5, 100.0, 0.08  # chaotic defaults; delta = xnorm / 150 with xnorm = 12


def dense_step(model: SignalGNN, optimizer: torch.optim.Optimizer, u: torch.Tensor, y: torch.Tensor) -> None:
    """The trainer's step: f_edge once per neuron, then a masked (B, N) @ (N, N) matmul."""
    loss, _ = step_loss(model, u, y, DELTA, COEFF_L1, COEFF_DIFF, 0.0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def per_edge_step(model: SignalGNN, optimizer: torch.optim.Optimizer, u: torch.Tensor, y: torch.Tensor,
                  chunk_edges: int | None) -> None:
    """The same loss with the prediction from per-edge message passing (N(N-1) f_edge evaluations per frame)."""
    prediction = per_edge_derivative(model, u, chunk_edges)
    edge, edge_shifted = model.edge(torch.stack([u, u + DELTA]))
    loss = (torch.linalg.vector_norm(prediction - y) + COEFF_L1 * l1_penalty(model)
            + COEFF_DIFF * monotonicity_penalty(edge, edge_shifted))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def median_seconds(step: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median wall time of `repeats` calls after one warm-up call."""
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(n: int, batch: int, repeats: int, device: torch.device, chunk_edges: int) -> float:
    """Time both steps at N=n, B=batch; print and return the ratio per-edge / dense."""
    torch.manual_seed(0)
    dense_model = SignalGNN(n, learn_embedding=False).to(device)
    edge_model = copy.deepcopy(dense_model)
    dense_opt = torch.optim.Adam(dense_model.parameters(), lr=1e-4, fused=True)
    edge_opt = torch.optim.Adam(edge_model.parameters(), lr=1e-4, fused=True)
    u = 6 * torch.randn(batch, n, device=device)  # chaotic activity has std ~ 6
    y = torch.randn(batch, n, device=device)
    chunks = chunk_edges if n * (n - 1) > chunk_edges else None  # checkpoint only when all edges do not fit
    dense = median_seconds(lambda: dense_step(dense_model, dense_opt, u, y), repeats, device)
    edge = median_seconds(lambda: per_edge_step(edge_model, edge_opt, u, y, chunks), repeats, device)
    print(f"N={n:5d} B={batch:3d} edges/step={batch * n * (n - 1):>11,d}  dense {dense * 1e3:9.2f} ms  "
          f"per-edge {edge * 1e3:10.1f} ms  ratio {edge / dense:8.1f}x", flush=True)
    return edge / dense


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000], help="numbers of neurons")
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 16], help="frames per step, one per --n")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per formulation (median)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chunk-edges", type=int, default=1 << 16,
                        help="edges per checkpointed chunk (when N(N-1) is larger)")
    args = parser.parse_args()
    if len(args.batch) != len(args.n):
        parser.error("give one --batch per --n")
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for n, batch in zip(args.n, args.batch):
        compare(n, batch, args.repeats, device, args.chunk_edges)


if __name__ == "__main__":
    main()
