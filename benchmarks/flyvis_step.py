"""One optimizer step of the flyvis trainer: g_phi once per node vs once per edge, and the simulator's speed.

Both steps minimize the trainer's loss (`train.step_loss`: prediction L2 norm + mu0 + mu1 + L1/L2 terms) on
copies of the same model; the per-edge variant evaluates g_phi on all B * E edges (the original form).
Prints the median step time of each, their ratio, and the ground-truth simulator's Euler steps per second.

    python benchmarks/flyvis_step.py                       # extent 8 (13,741 neurons, 434,112 edges), batch 1
    python benchmarks/flyvis_step.py --extent 3 --batch 4 --threads 2 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from trainables.flyvis.connectome import build_connectome
from trainables.flyvis.model import FlyVisGNN
from trainables.flyvis.settings import FlyVisSettings, checkpoint_file
from trainables.flyvis.simulate import Dynamics, ground_truth
from trainables.flyvis.train import step_loss


class PerEdgeGNN(FlyVisGNN):
    """The same model with g_phi evaluated on every edge (E evaluations per frame instead of N)."""

    def forward(self, v: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        return self.update(v, self.message_per_edge(v), current)


def timed(step: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median seconds of `step` after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extent", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    s = FlyVisSettings(extent=args.extent, batch_size=args.batch, lr_W=5e-4, lr=1e-3, lr_emb=3.5e-3)
    graph = build_connectome(args.extent)
    print(f"extent {args.extent}: {graph.n_neurons} neurons, {graph.n_edges} edges, batch {args.batch}, "
          f"{args.threads} thread(s), {device}")

    torch.manual_seed(0)
    node = FlyVisGNN(graph.source, graph.target, graph.n_neurons, s).to(device)
    edge = PerEdgeGNN(graph.source, graph.target, graph.n_neurons, s).to(device)
    edge.load_state_dict(copy.deepcopy(node.state_dict()))
    v = torch.randn(1, args.batch, graph.n_neurons, device=device)
    y = torch.randn_like(v) * 5
    current = torch.zeros_like(v)
    xnorm = 1.5

    def step_of(model: FlyVisGNN) -> Callable[[], None]:
        optimizer = model.configure_optimizers(s)

        def step() -> None:
            loss, _ = step_loss(model, v, current, y, s, xnorm, 1.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    t_node = timed(step_of(node), args.repeats, device)
    t_edge = timed(step_of(edge), args.repeats, device)
    print(f"optimizer step, g_phi per node: {1e3 * t_node:.1f} ms")
    print(f"optimizer step, g_phi per edge: {1e3 * t_edge:.1f} ms")
    print(f"ratio per-edge / per-node: {t_edge / t_node:.2f}x")

    params = ground_truth(graph, s)
    dynamics = Dynamics(graph, params)
    movie = np.full((200, len(graph.columns()[0])), 0.5, dtype=np.float32)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        v0 = dynamics.steady_state()
        start = time.perf_counter()
        dynamics.run(v0, movie, 0.05, rng)
        elapsed = time.perf_counter() - start
    print(f"simulator (float64, CPU, noise 0.05): {len(movie) / elapsed:.0f} Euler steps/s "
          f"({'checkpoint' if checkpoint_file(s) else 'sampled'} parameters)")


if __name__ == "__main__":
    main()
