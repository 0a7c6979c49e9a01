"""Training loop (spec §4) and final evaluation (spec §5) of one signal trial."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.runtime import diverged_report, is_finite, load_trainer, pick_device, save_trainer, thread_limit
from trainables.signal import metrics
from trainables.signal.model import SignalGNN
from trainables.signal.settings import SignalSettings, steps_per_epoch
from trainables.signal.simulate import DT, integrate, load_or_simulate
from tuner.family import Session

FINAL_METRICS = ("connectivity_R2", "test_R2", "test_pearson", "cluster_accuracy", "final_loss")
# data descriptors: rho(W), and the effective rank by the full SVD and by the reference's top-100 formula (_ref)
DESCRIPTORS = ("spectral_radius", "eff_rank_90", "eff_rank_99", "eff_rank_90_ref", "eff_rank_99_ref")


def loss_coefficients(s: SignalSettings, epoch: int) -> tuple[float, float]:
    """(lambda_L1, lambda_diff): first_coeff_L1 during the n_epochs_init first epochs, then coeff_W_L1
    with the edge monotonicity term switched off (two-phase option, spec §4.2)."""
    if epoch < s.n_epochs_init:
        return s.first_coeff_L1, s.coeff_edge_diff
    return s.coeff_W_L1, s.coeff_edge_diff if s.n_epochs_init == 0 else 0.0


def l1_penalty(model: SignalGNN) -> torch.Tensor:
    """sum_ij |W_ij|, or ||W_L||_1 + ||W_R||_1 for the factorized model."""
    if model.factorized:
        return model.W_L.abs().sum() + model.W_R.abs().sum()
    return model.connectivity().abs().sum()


def monotonicity_penalty(edge: torch.Tensor, edge_shifted: torch.Tensor) -> torch.Tensor:
    """sum_b || relu(f_edge([u^b_j, a_j]) - f_edge([u^b_j + delta, a_j])) ||_2 over j: penalizes a decreasing f_edge."""
    return torch.linalg.vector_norm(torch.relu(edge - edge_shifted), dim=1).sum()


def step_loss(model: SignalGNN, u_batch: torch.Tensor, target: torch.Tensor, delta: float, coeff_l1: float,
              coeff_diff: float, coeff_phi_zero: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, prediction loss) of one optimizer step on B frames u_batch (B, N) with targets du/dt (spec §4.2)."""
    edge, edge_shifted = model.edge(torch.stack([u_batch, u_batch + delta]))  # f_edge at u and u + delta (data)
    prediction = model.phi(u_batch) + model.message(edge)                  # = model(u_batch)
    prediction_loss = torch.linalg.vector_norm(prediction - target)        # ||P - Y||_2 over B*N, not squared
    loss = (prediction_loss
            + coeff_l1 * l1_penalty(model)                                 # once per step
            + coeff_diff * monotonicity_penalty(edge, edge_shifted))       # summed over the B frames
    if coeff_phi_zero > 0:                                                 # B times ||f_phi([0, a_j])||_2 over j
        phi_at_zero = model.phi(u_batch.new_zeros(u_batch.shape[1]))
        loss = loss + len(u_batch) * coeff_phi_zero * torch.linalg.vector_norm(phi_at_zero)
    return loss, prediction_loss


def edge_plateau(model: SignalGNN, xnorm: float, n_points: int = 1000) -> np.ndarray:
    """c_j = median of f_edge([v, a_j]) over v in [0.8 xnorm, xnorm] (spec §5.1)."""
    v = torch.linspace(0.8 * xnorm, xnorm, n_points, device=model.mask.device)
    with torch.no_grad():
        values = model.edge(v[:, None].expand(-1, model.mask.shape[0]))   # (n_points, N)
    return np.median(values.double().cpu().numpy(), axis=0)


def connectivity_score(model: SignalGNN, w_true: np.ndarray, xnorm: float) -> float:
    """connectivity_R2 of the current model."""
    w_learned = model.connectivity().detach().double().cpu().numpy()
    return metrics.connectivity_r2(w_true, w_learned, edge_plateau(model, xnorm))


def rollout(model: SignalGNN, u0: torch.Tensor, n_frames: int) -> np.ndarray:
    """u^_{t+1} = u^_t + dt model(u^_t) from u0: (n_frames, N), frame 0 = u0."""
    frames = [u0]
    with torch.no_grad():
        for _ in range(n_frames - 1):
            frames.append(frames[-1] + DT * model(frames[-1][None])[0])
    return torch.stack(frames).double().cpu().numpy()


def final_metrics(model: SignalGNN, data: dict[str, np.ndarray], s: SignalSettings, xnorm: float,
                  device: torch.device) -> dict[str, float]:
    """test_R2, test_pearson (rollout vs noise-free re-simulation from frame 0) and cluster_accuracy."""
    n = s.n_rollout_frames
    truth, _ = integrate(data["u"][0], data["W"], data["params"], n - 1)  # noise-free ground truth
    prediction = rollout(model, torch.from_numpy(data["u"][0]).to(device), n)
    embeddings = model.a.detach().double().cpu().numpy()
    return {"test_R2": metrics.rollout_r2(truth, prediction, step=10),
            "test_pearson": metrics.rollout_pearson(data["u"][:n], prediction),   # vs stored (noisy) trace
            "cluster_accuracy": metrics.cluster_accuracy(embeddings, data["types"])}


def run(s: SignalSettings, session: Session) -> None:
    """Train the GNN on simulated data, reporting `n_reports` times; resumes from `session.checkpoint`."""
    with thread_limit(1):  # one CPU per trial, as the family requests; more threads only contend
        _run(s, session)


def _run(s: SignalSettings, session: Session) -> None:
    """The body of `run`."""
    device = pick_device(s.device)
    data = load_or_simulate(s.model_dump())
    u = torch.from_numpy(data["u"]).to(device)
    du = torch.from_numpy(data["du"]).to(device)
    n = s.n_neurons
    xnorm = round(1.5 * float(data["u"].std()))                           # xnorm = round(1.5 std(u))
    delta = xnorm / 150                                                   # monotonicity shift
    descriptors = {name: float(data[name]) for name in DESCRIPTORS}

    torch.manual_seed(s.train_seed)
    model = SignalGNN(n, s.embedding_dim, s.hidden_dim, s.low_rank if s.low_rank_factorization else None,
                      learn_embedding=s.n_types > 1).to(device)
    optimizer = model.configure_optimizers(s.lr_W, s.lr, s.lr_emb)
    rng = np.random.default_rng(s.train_seed)                             # frame sampling
    niter = steps_per_epoch(s)
    total_steps = s.n_epochs * niter
    report_steps = {math.ceil((i + 1) * total_steps / s.n_reports) for i in range(s.n_reports)}  # evenly spread
    # progress counters, saved with the checkpoint
    state: dict[str, Any] = {"step": 0, "report_loss": 0.0, "report_steps": 0, "epoch_loss": 0.0,
                             "final_loss": math.nan, "train_seconds": 0.0}

    if session.checkpoint is not None:
        state = load_trainer(session.checkpoint, model, optimizer, rng)

    def save(directory: Path) -> None:
        save_trainer(directory, model, optimizer, rng, state)

    started = time.perf_counter() - state["train_seconds"]
    while state["step"] < total_steps:
        epoch = state["step"] // niter
        coeff_l1, coeff_diff = loss_coefficients(s, epoch)
        k = torch.from_numpy(rng.integers(0, s.n_frames - 4 - 1, size=s.batch_size)).to(device)  # with replacement
        u_batch, target = u[k], du[k]                                     # (B, N): input u_k, target du/dt at k
        loss, prediction_loss = step_loss(model, u_batch, target, delta, coeff_l1, coeff_diff, s.coeff_lin_phi_zero)
        value = prediction_loss.item()
        if not is_finite(value, loss.item()):                            # diverged: a normal outcome
            session.report(diverged_report(FINAL_METRICS, {
                "loss": value / n, "step": float(state["step"]), **descriptors,
                "training_time_min": state["train_seconds"] / 60}))
            return
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        state["step"] += 1
        state["report_loss"] += value
        state["report_steps"] += 1
        state["epoch_loss"] += value
        state["train_seconds"] = time.perf_counter() - started
        if state["step"] % niter == 0:
            state["final_loss"] = state["epoch_loss"] / n                 # last epoch: sum_steps ||P - Y|| / N
            state["epoch_loss"] = 0.0
            optimizer = model.configure_optimizers(s.lr_W, s.lr, s.lr_emb)  # [quirk, spec §4.3] Adam re-created, moments reset, each epoch
        if state["step"] in report_steps:
            report = {"loss": state["report_loss"] / state["report_steps"] / n,
                      "connectivity_R2": connectivity_score(model, data["W"], xnorm), "step": float(state["step"])}
            state["report_loss"], state["report_steps"] = 0.0, 0
            if state["step"] == total_steps:
                report |= {**descriptors, **final_metrics(model, data, s, xnorm, device),
                           "final_loss": state["final_loss"], "training_time_min": state["train_seconds"] / 60,
                           "diverged": 0.0}
            session.report(report, save)
