"""Throughput of the mpm_inr family: MPM steps/s, and SIREN training steps/s and FLOP/s (≈ 6·N·P per step).

    python benchmarks/mpm.py [--device cpu|cuda] [--particles 9000] [--sim-steps 50] [--train-steps 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from trainables.mpm_inr.model import Siren
from trainables.mpm_inr.simulate import initial_state, step
from trainables.runtime import pick_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sim_steps_per_s(n_particles: int, n_steps: int, device: torch.device) -> float:
    """MLS-MPM steps per second, timed after a few warm-up steps from the initial discs."""
    s = initial_state(n_particles, seed=42, device=device)
    with torch.no_grad():
        for _ in range(3):
            s = step(s)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(n_steps):
            s = step(s)
        sync(device)
    return n_steps / (time.perf_counter() - t0)


def train_steps_per_s(hidden_dim: int, n_layers: int, n_points: int, n_steps: int,
                      device: torch.device) -> tuple[float, int]:
    """(steps/s, parameter count) of one SIREN siren_txy training step (fwd, bwd, clip, Adam, cosine) on n_points."""
    model = Siren(3, 4, hidden_dim, n_layers, omega=10.0, seed=0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10**6, eta_min=1e-6)
    x, y = torch.rand(1, n_points, 3, device=device), torch.rand(1, n_points, 4, device=device)

    def one_step() -> None:
        loss = torch.mean((model(x) - y) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        scheduler.step()

    for _ in range(2):
        one_step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n_steps):
        one_step()
    sync(device)
    return n_steps / (time.perf_counter() - t0), sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--particles", type=int, default=9000, help="simulated particles and training points")
    parser.add_argument("--sim-steps", type=int, default=50)
    parser.add_argument("--train-steps", type=int, default=3)
    args = parser.parse_args()
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}), torch {torch.__version__}")
    rate = sim_steps_per_s(args.particles, args.sim_steps, device)
    print(f"MPM simulator, {args.particles} particles: {rate:.1f} steps/s ({1e3 / rate:.1f} ms/step; "
          f"10000 frames in {10000 / rate / 60:.1f} min)")
    for hidden_dim, n_layers in ((256, 4), (1280, 3)):
        rate, params = train_steps_per_s(hidden_dim, n_layers, args.particles, args.train_steps, device)
        flops = 6 * args.particles * params * rate
        print(f"SIREN {hidden_dim}x{n_layers} ({params:,} params), {args.particles} points: {rate:.2f} steps/s "
              f"({1e3 / rate:.0f} ms/step), {flops / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
