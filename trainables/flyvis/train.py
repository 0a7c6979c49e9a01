"""Training (spec §2.3) and evaluation (spec §2.4, §3) of one flyvis trial."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.flyvis import metrics
from trainables.flyvis.connectome import Connectome, build_connectome
from trainables.flyvis.model import FlyVisGNN, edge_slopes, message_gain, update_line_fit
from trainables.flyvis.settings import FlyVisSettings, checkpoint_file, steps_per_epoch
from trainables.flyvis.simulate import DT, Currents, load_or_simulate
from trainables.runtime import diverged_report, load_trainer, pick_device, save_trainer, thread_limit
from tuner.family import Session

GAIN_FRAMES = 8


def mlp_penalty(module: torch.nn.Module, coeff_l1: float, coeff_l2: float) -> torch.Tensor | float:
    """sum over parameter tensors p of c_L1 ||p||_1 + c_L2 ||p||_2."""
    total: torch.Tensor | float = 0.0
    for p in module.parameters():
        if coeff_l1:
            total = total + coeff_l1 * p.abs().sum()
        if coeff_l2:
            total = total + coeff_l2 * torch.linalg.vector_norm(p)
    return total


def step_loss(model: FlyVisGNN, v: torch.Tensor, currents: torch.Tensor, targets: torch.Tensor,
              s: FlyVisSettings, xnorm: float, anneal: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, prediction loss) of one step; v, currents, targets (T, B, N) with T = time_step when
    recurrent_training (else T = 1)."""
    prediction_loss = v.new_zeros(())
    state = v[0]
    for t in range(len(v)):
        prediction = model(state, currents[t])                                   # dv^/dt = f_theta(v, a, msg, I)
        prediction_loss = prediction_loss + torch.linalg.vector_norm(prediction - targets[t])  # ||y^ - y||_2
        state = state + DT * prediction                                            # recurrent: Euler rollout
    frame = v[0, 0]                                                                # regularisers: first batch frame
    if s.edge_diff_mode == "additive":                                             # v+ = v + 0.05 xnorm, a detached
        a = model.a.detach()
        shifted = frame + 0.05 * xnorm
    else:                                                                          # v+ = 1.05 v, gradient into a
        a, shifted = model.a, 1.05 * frame
    g, g_plus = model.edge_function(frame, a), model.edge_function(shifted, a)
    loss = (prediction_loss
            + s.coeff_edge_diff * torch.linalg.vector_norm(torch.relu(g - g_plus))   # mu0 ||ReLU(g(v)^2 - g(v+)^2)||
            + s.coeff_edge_norm * torch.linalg.vector_norm(                          # mu1 ||g(2 xnorm)^2 - 2 xnorm||
                model.edge_function(torch.full_like(frame, 2 * xnorm)) - 2 * xnorm)
            + anneal * s.coeff_W_L1 * model.W.abs().sum()                            # lambda_W ||W||_1
            + anneal * mlp_penalty(model.g_phi, s.coeff_edge_weight_L1, 0.0)         # lambda' ||theta_g||_1
            + anneal * mlp_penalty(model.f_theta, s.coeff_phi_weight_L1, s.coeff_phi_weight_L2))
    return loss, prediction_loss


def readouts(model: FlyVisGNN, data: dict[str, Any], inputs: Currents) -> dict[str, np.ndarray]:
    """Learned tau, V_rest and corrected W* (spec §2.4) of the current model."""
    mu, sigma = data["mu"], data["sigma"]
    slope, intercept = update_line_fit(model, mu, sigma)                   # f_theta(v, a_i, 0, 0) ~ s_i v + b_i
    r = edge_slopes(model, mu, sigma)                                      # g(v, a_j)^2 ~ r_j v
    k = torch.from_numpy(data["gain_frames"]).to(mu.device)
    gain = message_gain(model, data["v"][k], inputs(data["stim"][k]))     # median_k d f / d msg
    slope, intercept, r, gain = (x.double().cpu().numpy() for x in (slope, intercept, r, gain))
    w = model.W.detach().double().cpu().numpy()
    return {"tau": metrics.learned_tau(slope), "V_rest": metrics.learned_v_rest(slope, intercept),
            "W": metrics.corrected_weights(w, data["source"], data["target"], slope, gain, r)}


def parameter_scores(learned: dict[str, np.ndarray], data: dict[str, Any]) -> dict[str, float]:
    """conn_R2 (outlier rule), tau_R2, V_rest_R2."""
    return {"conn_R2": metrics.connectivity_r2(data["W_true"], learned["W"]),
            "tau_R2": metrics.r_squared(data["tau_true"], learned["tau"]),
            "V_rest_R2": metrics.r_squared(data["V_rest_true"], learned["V_rest"])}


@torch.no_grad()
def rollout(model: FlyVisGNN, v0: torch.Tensor, currents: torch.Tensor) -> np.ndarray:
    """v^(t+1) = v^(t) + dt f^(v^(t), I(t)) from v0, true stimulus each frame: (T, N), frame 0 = v0."""
    states = [v0]
    for t in range(len(currents) - 1):
        states.append(states[-1] + DT * model(states[-1][None], currents[t][None])[0])
    return torch.stack(states).double().cpu().numpy()


def run(s: FlyVisSettings, session: Session) -> None:
    """Train the GNN on simulated data, reporting `n_reports` times; resumes from `session.checkpoint`."""
    with thread_limit(s.n_threads):
        _run(s, session)


def _run(s: FlyVisSettings, session: Session) -> None:
    """The body of `run`."""
    # ---- data -------------------------------------------------------------------------------
    device = pick_device(s.device)
    arrays = load_or_simulate(s)
    graph = build_connectome(s.extent)
    v = torch.from_numpy(arrays["v"]).to(device)
    data: dict[str, Any] = {
        "v": v, "y": torch.from_numpy(arrays["y"]).to(device), "stim": torch.from_numpy(arrays["stim"]).to(device),
        "mu": v.mean(0), "sigma": v.std(0),                                  # per-neuron activity statistics
        "gain_frames": np.linspace(s.n_frames // 10, s.n_frames - 100, GAIN_FRAMES).astype(np.int64).clip(0),
        "source": graph.source, "target": graph.target,
        "W_true": arrays["W"], "tau_true": arrays["tau"], "V_rest_true": arrays["V_rest"]}
    inputs = Currents(graph, device)
    xnorm = 1.5 * float(arrays["v"].std())                                     # xnorm = 1.5 std(all voltages)
    descriptors = {"noise_model_level": s.noise_model_level, "n_neurons": float(graph.n_neurons),
                   "n_edges": float(graph.n_edges), "gt_from_checkpoint": float(checkpoint_file(s) is not None)}

    # ---- model ------------------------------------------------------------------------------
    torch.manual_seed(s.train_seed)
    model = FlyVisGNN(graph.source, graph.target, graph.n_neurons, s).to(device)

    # ---- optimizer --------------------------------------------------------------------------
    optimizer = model.configure_optimizers(s)
    rng = np.random.default_rng(s.train_seed)                                  # frame sampling
    niter = steps_per_epoch(s)                 # Niter = int(n_frames * aug // batch_size * 0.2)
    total_steps = s.n_epochs * niter
    report_steps = {math.ceil((i + 1) * total_steps / s.n_reports) for i in range(s.n_reports)}
    state: dict[str, Any] = {"step": 0, "loss_sum": 0.0, "loss_steps": 0, "train_seconds": 0.0}

    # ---- resume -----------------------------------------------------------------------------
    if session.checkpoint is not None:
        state = load_trainer(session.checkpoint, model, optimizer, rng)

    def save(directory: Path) -> None:
        save_trainer(directory, model, optimizer, rng, state)

    # ---- loop -------------------------------------------------------------------------------
    window = s.time_step if s.recurrent_training else 1
    offsets = torch.arange(window, device=device)[:, None]
    while state["step"] < total_steps:
        started = time.perf_counter()
        epoch = state["step"] // niter
        anneal = 1 - math.exp(-s.regul_annealing_rate * epoch) if s.regul_annealing_rate > 0 else 1.0
        k = torch.from_numpy(rng.integers(0, s.n_frames - 4 - s.time_step, size=s.batch_size)).to(device)
        frames = k[None] + offsets                                             # (T, B): k, k+1, ... (recurrent)
        loss, prediction_loss = step_loss(model, data["v"][frames], inputs(data["stim"][frames]),
                                          data["y"][frames], s, xnorm, anneal)
        value = prediction_loss.item()
        if not (math.isfinite(value) and math.isfinite(loss.item())):          # diverged: a normal outcome
            session.report(diverged_report(metrics.FINAL_METRICS, {
                **descriptors, "loss": value, "step": float(state["step"]),
                "training_time_min": state["train_seconds"] / 60}))
            return
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] += 1
        state["loss_sum"] += value
        state["loss_steps"] += 1
        state["train_seconds"] += time.perf_counter() - started                # training loop time only

        # ---- report -----------------------------------------------------------------------------
        if state["step"] in report_steps:
            learned = readouts(model, data, inputs)
            report = {"loss": state["loss_sum"] / state["loss_steps"], "step": float(state["step"]),
                      **parameter_scores(learned, data), "training_time_min": state["train_seconds"] / 60}
            state["loss_sum"], state["loss_steps"] = 0.0, 0
            if state["step"] == total_steps:
                report |= {**descriptors, **final_scores(model, learned, arrays, graph, inputs, s, device),
                           "diverged": 0.0}
            session.report(report, save)


def final_scores(model: FlyVisGNN, learned: dict[str, np.ndarray], arrays: dict[str, np.ndarray], graph: Connectome,
                 inputs: Currents, s: FlyVisSettings, device: torch.device) -> dict[str, float]:
    """cluster_accuracy, and the held-out test rollout's Pearson r and R^2."""
    features = metrics.cluster_features(model.a.detach().double().cpu().numpy(), learned["tau"], learned["V_rest"],
                                        learned["W"], graph.source, graph.target)
    v_test = torch.from_numpy(arrays["v_test"]).to(device)
    prediction = rollout(model, v_test[0], inputs(torch.from_numpy(arrays["stim_test"]).to(device)))
    pearson, r2 = metrics.rollout_scores(arrays["v_test"], prediction)
    return {"cluster_accuracy": metrics.cluster_accuracy(features, graph.labels, s.gmm_components),
            "test_pearson": pearson, "test_R2": r2}
