"""SIREN fit of one per-particle MPM field over a frame window (spec §2.1, §2.4).

Each step: one random frame (or `batch_frames` frames) with all fitted particles, MSE, Adam, gradient clipping 1.0,
cosine schedule to 0.01·lr. Reports the R² on all training frames `n_reports` times; the last report carries
every final metric.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from trainables.mpm_inr.metrics import compression_ratio, fit_metrics, linear_fit
from trainables.mpm_inr.model import Siren
from trainables.mpm_inr.settings import MpmInrSettings
from trainables.mpm_inr.simulate import simulate_window
from trainables.runtime import diverged_report, is_finite, pick_device
from tuner.cache import cached_arrays
from tuner.family import Session

SIMULATOR = "mls-mpm-discs/1"  # bump when simulate.py changes its output
CHECK_EVERY = 1000  # steps between divergence checks (each one syncs the device)
EVAL_POINTS = 2**18  # points per forward pass when evaluating all frames


def window_bounds(n_frames: int, n_training_frames: int) -> tuple[int, int]:
    """The centred window [n_frames//2 − T//2, … + T)."""
    start = n_frames // 2 - n_training_frames // 2
    return start, start + n_training_frames


def load_data(s: MpmInrSettings) -> tuple[np.ndarray, np.ndarray]:
    """Positions (T, N, 2) and field values (T, N, n_comp) of the fitted particle subset.

    The window is simulated on the CPU (deterministic) and cached on disk (tuner.cache) under the simulation
    settings and seed, so trials with other training settings reuse it; the subset is a
    fixed random choice of `n_particles` particles, drawn from `sim_seed`, the same in every frame."""
    start, stop = window_bounds(s.n_frames, s.n_training_frames)
    key = {"simulator": SIMULATOR, "sim_particles": s.sim_particles, "sim_seed": s.sim_seed,
           "frame_start": start, "frame_stop": stop}
    window = cached_arrays("mpm_inr", key, lambda: simulate_window(s.sim_particles, start, stop, s.sim_seed))
    subset = np.sort(np.random.default_rng(s.sim_seed).choice(s.sim_particles, s.n_particles, replace=False))
    return window["x"][:, subset], window[s.field][:, subset]


def network_inputs(s: MpmInrSettings, pos: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """siren_txy: (k/T/T_period, x/xy_period, y/xy_period) per particle → (B, N, 3); siren_t: k/T/T_period → (B, 1).

    The same time input is used in training and evaluation (the reference divides by T_period only in training)."""
    t = frames.to(pos.dtype) / pos.shape[0] / s.t_period
    if s.inr_type == "siren_t":
        return t[:, None]
    n = pos.shape[1]
    return torch.cat([t[:, None, None].expand(-1, n, 1), pos[frames] / s.xy_period], -1)


def predict(model: Siren, s: MpmInrSettings, pos: torch.Tensor, frames: torch.Tensor, n_comp: int) -> torch.Tensor:
    """Network output for the given frames, (B, N, n_comp)."""
    return model(network_inputs(s, pos, frames)).reshape(len(frames), pos.shape[1], n_comp)


@torch.no_grad()
def predict_all(model: Siren, s: MpmInrSettings, pos: torch.Tensor, n_comp: int) -> torch.Tensor:
    """Predictions for every frame (T, N, n_comp), evaluated in chunks of frames."""
    chunk = max(1, EVAL_POINTS // pos.shape[1])
    frames = torch.arange(pos.shape[0], device=pos.device)
    return torch.cat([predict(model, s, pos, f, n_comp) for f in frames.split(chunk)])


def run(s: MpmInrSettings, session: Session) -> None:
    """Fit, report `n_reports` times with a resumable checkpoint, and resume from `session.checkpoint`.

    `loss` is the mean training MSE since the previous report (in z-scored units with normalize_targets)."""
    device = pick_device(s.device)
    pos_np, gt = load_data(s)
    T, N, n_comp = gt.shape
    # optional per-component z-score of the targets; predictions are mapped back before any metric
    mean = gt.mean((0, 1), dtype=np.float64) if s.normalize_targets else np.zeros(n_comp)
    std = gt.std((0, 1), dtype=np.float64) if s.normalize_targets else np.ones(n_comp)
    mean, std = mean.astype(np.float32), np.where(std > 0, std, 1).astype(np.float32)
    pos = torch.from_numpy(pos_np).to(device)
    target = torch.from_numpy((gt - mean) / std).to(device)
    mean_t, std_t = torch.from_numpy(mean).to(device), torch.from_numpy(std).to(device)

    d_in, d_out = (3, n_comp) if s.inr_type == "siren_txy" else (1, N * n_comp)
    model = Siren(d_in, d_out, s.hidden_dim, s.n_layers, s.omega, seed=s.train_seed).to(device)
    total_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=s.total_steps, eta_min=0.01 * s.lr)
    sampler = torch.Generator().manual_seed(s.train_seed)  # frame order
    step, elapsed = 0, 0.0
    if session.checkpoint is not None:
        state = torch.load(Path(session.checkpoint) / "state.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.set_state(state["sampler"])
        step, elapsed = state["step"], state["elapsed"]

    report_steps = {s.total_steps * i // s.n_reports for i in range(1, s.n_reports + 1)}
    loss_sum, n_sum = torch.zeros((), device=device), 0
    start = time.perf_counter()
    while step < s.total_steps:
        frames = torch.randperm(T, generator=sampler)[: s.batch_frames].to(device)  # without replacement
        loss = torch.mean((predict(model, s, pos, frames, n_comp) - target[frames]) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        loss_sum += loss.detach()
        n_sum += 1
        if step % CHECK_EVERY and step not in report_steps:
            continue
        mean_loss = loss_sum.item() / n_sum
        if not is_finite(mean_loss):
            session.report(diverged_report(["final_r2"], {"step": step, "loss": mean_loss}))
            return
        if step not in report_steps:
            continue
        pred = (predict_all(model, s, pos, n_comp) * std_t + mean_t).cpu().numpy()  # raw units
        metrics = {"step": step, "loss": mean_loss, "final_r2": linear_fit(gt, pred)[2], "diverged": 0.0}
        if step == s.total_steps:
            metrics |= fit_metrics(gt, pred)
            metrics |= {"total_params": total_params, "compression_ratio": compression_ratio(gt.size, total_params),
                        "target_std": float(gt.std())}
        total_elapsed = elapsed + time.perf_counter() - start
        metrics["training_time_min"] = total_elapsed / 60
        snapshot = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                  "scheduler": scheduler.state_dict(), "sampler": sampler.get_state(),
                                  "step": step, "elapsed": total_elapsed})

        def save(directory: Path, snapshot: dict = snapshot) -> None:
            torch.save(snapshot, Path(directory) / "state.pt")

        session.report(metrics, save)
        loss_sum, n_sum = torch.zeros((), device=device), 0
