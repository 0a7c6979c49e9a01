"""Ground truth of the flyvis family: parameters (spec §1.1, §5.4), stimulus movies and the ODE (spec §1.2-1.4).

    tau_i dv_i/dt = -v_i + V_rest_i + sum_{j->i} W_ij ReLU(v_j) + I_i(t)          (PDE_N9_A)
    v(t+1) = v(t) + dt f(v(t), I(t)) + sigma xi,  xi ~ N(0, 1)                       (explicit Euler)

Stored per frame t, before the update: v(t), the stimulus per column, and the clean dv/dt at v(t).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.flyvis.connectome import CHECKPOINT_EXTENT, Connectome, build_connectome, hull_offsets, load_spec
from trainables.flyvis.settings import FlyVisSettings, checkpoint_file
from tuner.cache import cached_arrays

DT = 0.02
STEADY_STATE_STEPS = 100   # flyvis steady_state: t_pre = 2 s of uniform grey at dt
GREY = 0.5
DATA_VERSION = 1           # bump when the simulator or the stimuli change


# ---- ground-truth parameters ------------------------------------------------------------------
def checkpoint_parameters(graph: Connectome, path: Path) -> dict[str, np.ndarray]:
    """tau (N), V_rest (N), W (E) from a flyvis network checkpoint, mapped by type / (pair, offset) key.

    The checkpoint's per-key vectors follow the first-appearance order of the keys on the lattice it was
    trained on (extent 15); W = sign(pair) * exp(log syn_count(pair, du, dv)) * syn_strength(pair)."""
    state = torch.load(path, map_location="cpu", weights_only=True)["network"]
    trained = build_connectome(CHECKPOINT_EXTENT)
    pair_at = {key: k for k, key in enumerate(trained.pairs)}
    offset_at = {key: k for k, key in enumerate(trained.offset_keys)}
    pairs = np.array([pair_at[key] for key in graph.pairs])
    offsets = np.array([offset_at[key] for key in graph.offset_keys])
    sign = state["edges_sign"].double().numpy()[pairs]
    strength = state["edges_syn_strength"].double().numpy()[pairs]
    count = np.exp(state["edges_syn_count"].double().numpy())[offsets]
    return {"tau": state["nodes_time_const"].double().numpy()[graph.types],
            "V_rest": state["nodes_bias"].double().numpy()[graph.types],
            "W": sign[graph.pair] * count[graph.offset_key] * strength[graph.pair]}


def sampled_parameters(graph: Connectome, seed: int, excitatory_gain: float = 0.9) -> dict[str, np.ndarray]:
    """Per-type tau, V_rest and per-pair strengths drawn as spec §5.4 suggests, with the file's signs and counts.

    tau: 80% of the types in [0.97, 1.0] dt, the rest log-uniform in [0.03, 0.3] s; V_rest ~ U(0, 0.8);
    strength * <n_syn>_pair ~ 10^N(-1.25, 0.7) (the checkpoint's spread), 5% of the pairs exactly 0; then all
    strengths are scaled so that the type-level excitatory gain (spectral radius of the summed positive
    weights a neuron receives per source type, 0.95 for the checkpoint) is `excitatory_gain`: random draws
    are otherwise unstable."""
    rng = np.random.default_rng(seed)
    n_types = len(graph.type_names)
    slow = rng.random(n_types) < 0.2
    tau = np.where(slow, np.exp(rng.uniform(np.log(0.03), np.log(0.3), n_types)), rng.uniform(0.97, 1.0, n_types) * DT)
    v_rest = rng.uniform(0.0, 0.8, n_types)
    type_index = {name: k for k, name in enumerate(graph.type_names)}
    pairs = {}                                    # (src, tar) -> (sign, [counts of every offset]), any extent
    for entry in load_spec()["edges"]:
        counts = [n for _, _, n in hull_offsets(entry["offsets"], 1.0)]
        pairs.setdefault((entry["src"], entry["tar"]), (entry["alpha"], []))[1].extend(counts)
    strength = {key: 10 ** rng.normal(-1.25, 0.7) / np.mean(counts) * (rng.random() >= 0.05)
                for key, (_, counts) in pairs.items()}
    gain = np.zeros((n_types, n_types))
    for (src, tar), (sign, counts) in pairs.items():
        gain[type_index[tar], type_index[src]] += (sign > 0) * strength[src, tar] * np.sum(counts)
    scale = excitatory_gain / np.abs(np.linalg.eigvals(gain)).max()
    per_pair = np.array([strength[key] for key in graph.pairs]) * scale
    return {"tau": tau[graph.types], "V_rest": v_rest[graph.types],
            "W": graph.sign * graph.n_syn * per_pair[graph.pair]}


def ground_truth(graph: Connectome, s: FlyVisSettings) -> dict[str, np.ndarray]:
    """The checkpoint's parameters when one is configured (see settings.checkpoint_file), else sampled ones."""
    path = checkpoint_file(s)
    return checkpoint_parameters(graph, path) if path is not None else sampled_parameters(graph, s.params_seed)


# ---- stimulus ---------------------------------------------------------------------------------
def column_xy(graph: Connectome) -> np.ndarray:
    """Cartesian positions (C, 2) of the lattice columns, in column spacings."""
    u, v = graph.columns()
    return np.stack([u + 0.5 * v, np.sqrt(3) / 2 * v], axis=1).astype(float)


def _texture(rng: np.random.Generator, xy: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A smoothed-noise texture (sum of random low-frequency waves) drifting and rotating over the eye."""
    n_waves = 24
    k = rng.normal(size=(n_waves, 2)) * rng.uniform(0.1, 0.5)                  # spatial frequencies, rad/column
    phase = rng.uniform(0, 2 * np.pi, n_waves)
    amp = 1 / np.maximum(np.linalg.norm(k, axis=1), 0.05)
    velocity = rng.normal(size=2) * rng.uniform(0, 4)                         # columns per second
    omega = rng.normal() * rng.uniform(0, 1.0)                                 # rad per second
    angle = omega * t[:, None]
    cos, sin = np.cos(angle), np.sin(angle)
    x = cos * xy[None, :, 0] + sin * xy[None, :, 1] - velocity[0] * t[:, None]  # (T, C)
    y = -sin * xy[None, :, 0] + cos * xy[None, :, 1] - velocity[1] * t[:, None]
    field = np.einsum("w,wtc->tc", amp, np.sin(k[:, 0, None, None] * x + k[:, 1, None, None] * y + phase[:, None, None]))
    return field / (np.sqrt(0.5 * (amp ** 2).sum()) + 1e-9)


def _grating(rng: np.random.Generator, xy: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A sine or square grating drifting in a random direction."""
    direction = rng.uniform(0, 2 * np.pi)
    k = rng.uniform(0.2, 1.2) * np.array([np.cos(direction), np.sin(direction)])
    wave = np.sin(xy @ k - rng.uniform(-2, 2) * 2 * np.pi * t[:, None] + rng.uniform(0, 2 * np.pi))
    return np.sign(wave) if rng.random() < 0.5 else wave


def _edge(rng: np.random.Generator, xy: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A light or dark edge sweeping across the eye."""
    direction = rng.uniform(0, 2 * np.pi)
    normal = np.array([np.cos(direction), np.sin(direction)])
    speed = rng.uniform(5, 30)                                                 # columns per second
    start = -np.abs(xy).max() - 1
    position = xy @ normal - (start + speed * t[:, None])
    return np.tanh(position / rng.uniform(0.3, 1.5)) * rng.choice([-1, 1])


def _flashes(rng: np.random.Generator, xy: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Full-field flashes: random levels held for random durations."""
    values = np.empty(len(t))
    i = 0
    while i < len(t):
        n = int(rng.integers(5, 30))
        values[i:i + n] = rng.uniform(-1, 1)
        i += n
    return np.repeat(values[:, None], len(xy), axis=1)


STIMULI = (_texture, _grating, _edge, _flashes)


def stimulus_movie(graph: Connectome, n_frames: int, sequence_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Procedural luminance movies (n_frames, C) in [0, 1]: sequences of `sequence_frames` played back to back,
    each a random kind (texture, grating, edge, flashes) with random mean luminance and contrast."""
    xy = column_xy(graph)
    chunks, total = [], 0
    while total < n_frames:
        t = np.arange(sequence_frames) * DT
        kind = STIMULI[rng.integers(len(STIMULI))]
        mean, contrast = rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.5)
        chunks.append(np.clip(mean + contrast * kind(rng, xy, t), 0.0, 1.0))
        total += sequence_frames
    return np.concatenate(chunks)[:n_frames].astype(np.float32)


# ---- the ODE ----------------------------------------------------------------------------------
class Currents:
    """Stimulus currents I (..., N) from column luminance (..., C): the column's value on R1..R8, 0 elsewhere."""

    def __init__(self, graph: Connectome, device: str | torch.device = "cpu"):
        self.index = torch.from_numpy(np.flatnonzero(graph.input_mask)).to(device)
        self.columns = torch.from_numpy(graph.column_of()[graph.input_mask]).to(device)
        self.n = graph.n_neurons

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        out = frames.new_zeros(*frames.shape[:-1], self.n)
        out[..., self.index] = frames[..., self.columns]
        return out


class Dynamics:
    """PDE_N9_A on a connectome with ground-truth parameters, on torch (float64)."""

    def __init__(self, graph: Connectome, params: dict[str, np.ndarray], device: str | torch.device = "cpu"):
        n = graph.n_neurons
        index = torch.from_numpy(np.stack([graph.target, graph.source]))
        # sum_{j->i} W_ij ReLU(v_j) as one sparse matrix-vector product (duplicate (i, j) pairs add up)
        with warnings.catch_warnings():  # torch flags sparse CSR as beta
            warnings.simplefilter("ignore", UserWarning)
            w = torch.sparse_coo_tensor(index, torch.from_numpy(params["W"]), (n, n), check_invariants=True)
            self.W = w.coalesce().to_sparse_csr().to(device)
        self.tau = torch.from_numpy(params["tau"]).to(device)
        self.v_rest = torch.from_numpy(params["V_rest"]).to(device)
        self.current = Currents(graph, device)
        self.n_columns = len(graph.columns()[0])
        self.n = n

    def derivative(self, v: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """dv/dt = (-v + V_rest + W ReLU(v) + I) / tau for one state v (N) and column luminance (C)."""
        msg = torch.mv(self.W, torch.relu(v))
        return (-v + self.v_rest + msg + self.current(frame)) / self.tau

    def steady_state(self) -> torch.Tensor:
        """From V_rest, 100 noise-free steps under uniform grey on the photoreceptors."""
        v = self.v_rest.clone()
        grey = torch.full((self.n_columns,), GREY, dtype=v.dtype, device=v.device)
        for _ in range(STEADY_STATE_STEPS):
            v = v + DT * self.derivative(v, grey)
        return v

    def run(self, v0: torch.Tensor, movie: np.ndarray, noise: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Integrate through the movie: recorded v(t) (T, N) and clean dv/dt at v(t) (T, N), float32."""
        frames = torch.from_numpy(movie).to(v0)
        states = np.empty((len(movie), self.n), dtype=np.float32)
        targets = np.empty_like(states)
        v = v0
        for t in range(len(movie)):
            dv = self.derivative(v, frames[t])
            states[t], targets[t] = v.cpu().numpy(), dv.cpu().numpy()
            v = v + DT * dv
            if noise > 0:
                v = v + noise * torch.from_numpy(rng.standard_normal(self.n)).to(v)
        return states, targets


def data_key(s: FlyVisSettings) -> dict[str, Any]:
    """Everything the simulated data depend on (the checkpoint by content)."""
    path = checkpoint_file(s)
    return {"version": DATA_VERSION, "extent": s.extent, "n_frames": s.n_frames, "n_test_frames": s.n_test_frames,
            "sequence_frames": s.sequence_frames, "noise_model_level": s.noise_model_level, "sim_seed": s.sim_seed,
            "params": hashlib.sha256(path.read_bytes()).hexdigest() if path else f"sampled:{s.params_seed}"}


def simulate(s: FlyVisSettings) -> dict[str, np.ndarray]:
    """Training data (noisy trajectory) and the held-out test trajectory (noise-free, new movies).

    Keys: v, y (n_frames, N); stim (n_frames, C); v_test (n_test_frames, N); stim_test; tau, V_rest (N); W (E)."""
    graph = build_connectome(s.extent)
    params = ground_truth(graph, s)
    dynamics = Dynamics(graph, params)
    movie_rng, noise_rng, test_rng = (np.random.default_rng([s.sim_seed, k]) for k in range(3))
    stim = stimulus_movie(graph, s.n_frames, s.sequence_frames, movie_rng)
    stim_test = stimulus_movie(graph, s.n_test_frames, s.sequence_frames, test_rng)   # held-out sequences
    with torch.no_grad():
        v0 = dynamics.steady_state()
        v, y = dynamics.run(v0, stim, s.noise_model_level, noise_rng)
        v_test, _ = dynamics.run(v0, stim_test, 0.0, noise_rng)                     # test: no noise, reset
    return {"v": v, "y": y, "stim": stim, "v_test": v_test, "stim_test": stim_test,
            "tau": params["tau"], "V_rest": params["V_rest"], "W": params["W"]}


def load_or_simulate(s: FlyVisSettings) -> dict[str, np.ndarray]:
    """`simulate(s)`, cached on disk by `data_key(s)` (same settings and seed -> same arrays)."""
    return cached_arrays("flyvis", data_key(s), lambda: simulate(s))
