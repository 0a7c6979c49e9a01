"""Settings of one flyvis trial (spec §1-§3) and the sizes derived from them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CHECKPOINT_ENV = "TUNER_FLYVIS_CHECKPOINT"
# the shared copy beside the project checkout (never inside the repository: it has its own licence)
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2].parent / "shared/data/flyvis/flow/0000/000/best_chkpt"


class FlyVisSettings(BaseModel):
    """Settings of one flyvis trial: the simulated regime, then the GNN and its training."""

    model_config = ConfigDict(extra="forbid")

    # ---- data (regime) ----------------------------------------------------------------------
    extent: int = Field(8, ge=1, le=15, description="hex radius of the lattice, 1..15 (8: 13,741 neurons, the "
                        "seed's graph; 3 or 4: the CPU sub-lattice, identical to the central radius-R part of 8)")
    n_frames: int = Field(64000, ge=200, description="training frames simulated (>= 200), one Euler step each")
    n_test_frames: int = Field(1000, ge=10, description="frames of the held-out test rollout (>= 10)")
    sequence_frames: int = Field(100, ge=10, description="frames per procedural stimulus sequence (>= 10)")
    noise_model_level: float = Field(0.05, ge=0, description="process noise sigma per Euler step (>= 0; "
                                     "0 = fly_N9_62_0, 0.05 = fly_N9_62_1)")
    sim_seed: int = Field(0, description="seed of the stimulus movies and the process noise (any int)")
    params_source: Literal["auto", "checkpoint", "sampled"] = Field(
        "auto", description="ground-truth tau, V_rest, W: 'checkpoint' (flyvis flow/0000/000), 'sampled' "
        "(spec §5.4, from params_seed), or 'auto' (the checkpoint when one is found, else sampled)")
    checkpoint_path: str | None = Field(None, description=f"path of flyvis' best_chkpt; None: ${CHECKPOINT_ENV}, "
                                        "else ../shared/data/flyvis/flow/0000/000/best_chkpt beside the repo")
    params_seed: int = Field(0, description="seed of the sampled ground-truth parameters (any int)")
    # ---- model -----------------------------------------------------------------------------
    embedding_dim: int = Field(2, ge=1, description="size of the per-neuron embedding a (>= 1; seed: 2)")
    hidden_dim: int = Field(64, ge=1, description="hidden width of g_phi, the edge MLP (>= 1)")
    n_layers: int = Field(3, ge=2, description="Linear layers of g_phi (>= 2)")
    hidden_dim_update: int = Field(64, ge=1, description="hidden width of f_theta, the update MLP (>= 1)")
    n_layers_update: int = Field(3, ge=2, description="Linear layers of f_theta (>= 2)")
    w_init: Literal["zeros", "randn_scaled"] = Field("zeros", description="initial W: 'zeros' (NeuralGraph) or "
                                                     "'randn_scaled' (std w_init_scale/sqrt(E))")
    w_init_scale: float = Field(1.0, gt=0, description="scale of the randn_scaled W init (> 0)")
    # ---- training --------------------------------------------------------------------------
    lr_W: float = Field(1e-3, ge=0, description="Adam learning rate of W (>= 0)")
    lr: float = Field(1e-3, ge=0, description="Adam learning rate of g_phi and f_theta (>= 0)")
    lr_emb: float = Field(1.5e-3, ge=0, description="Adam learning rate of the embeddings a (>= 0)")
    coeff_edge_diff: float = Field(500.0, ge=0, description="mu0, weight of the g_phi monotonicity penalty (>= 0)")
    edge_diff_mode: Literal["additive", "multiplicative"] = Field(
        "additive", description="v+ of the monotonicity penalty: 'additive' v + 0.05 xnorm (flyvis-gnn) or "
        "'multiplicative' 1.05 v (NeuralGraph)")
    coeff_edge_norm: float = Field(1.0, ge=0, description="mu1, weight of ||g(2 xnorm)^2 - 2 xnorm|| (>= 0)")
    coeff_W_L1: float = Field(5e-5, ge=0, description="lambda_W, weight of ||W||_1 (>= 0)")
    coeff_edge_weight_L1: float = Field(0.0, ge=0, description="L1 weight on g_phi's parameters (>= 0)")
    coeff_phi_weight_L1: float = Field(0.0, ge=0, description="L1 weight on f_theta's parameters (>= 0)")
    coeff_phi_weight_L2: float = Field(1e-3, ge=0, description="L2 weight on f_theta's parameters (>= 0)")
    regul_annealing_rate: float = Field(0.0, ge=0, description="L1/L2 terms scaled by 1 - exp(-rate * epoch) "
                                        "when > 0 (NeuralGraph: 0.5, i.e. off in epoch 0); 0: full strength")
    batch_size: int = Field(1, ge=1, description="frames per step, as disjoint graph copies (>= 1)")
    n_epochs: int = Field(1, ge=1, description="epochs of steps_per_epoch steps (>= 1; the seed ran 1)")
    data_augmentation_loop: int = Field(25, ge=1, description="aug, a multiplier of the steps per epoch (>= 1)")
    recurrent_training: bool = Field(False, description="roll out time_step Euler steps and regress each "
                                     "derivative (the seed found it harmful)")
    time_step: int = Field(1, ge=1, description="rollout length of recurrent_training (>= 2 when it is on)")
    train_seed: int = Field(0, description="seed of the model init and the frame sampling (any int)")
    gmm_components: int = Field(100, ge=2, description="Gaussian components of cluster_accuracy (>= 2)")
    n_reports: int = Field(10, ge=1, description="progress reports per run, evenly spread over the steps (>= 1)")
    n_threads: int = Field(1, ge=1, description="torch CPU threads of the trial (>= 1)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' (CUDA when available), 'cpu', "
                                                   "'cuda'")

    @field_validator("checkpoint_path")
    @classmethod
    def _checkpoint_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"no file at {value!r}; give the path of flyvis' flow/0000/000/best_chkpt")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FlyVisSettings:
        if self.recurrent_training and self.time_step < 2:
            raise ValueError(f"time_step ({self.time_step}) must be >= 2 when recurrent_training is on")
        if self.n_frames - 4 - self.time_step < 1:
            raise ValueError(f"n_frames ({self.n_frames}) leaves no frame to sample with time_step "
                             f"{self.time_step}")
        if self.params_source == "checkpoint" and checkpoint_file(self) is None:
            raise ValueError(f"params_source 'checkpoint': no checkpoint_path, ${CHECKPOINT_ENV} unset and no "
                             f"file at {DEFAULT_CHECKPOINT}")
        total = total_steps(self)
        if total < self.n_reports:
            raise ValueError(f"n_epochs * int(n_frames * data_augmentation_loop // batch_size * 0.2) = {total} "
                             f"steps, fewer than n_reports ({self.n_reports})")
        return self


def checkpoint_file(s: FlyVisSettings) -> Path | None:
    """The checkpoint to read, or None for sampled parameters: checkpoint_path, $TUNER_FLYVIS_CHECKPOINT, the
    shared copy beside the repository, in that order (params_source 'sampled' never reads one)."""
    if s.params_source == "sampled":
        return None
    for candidate in (s.checkpoint_path, os.environ.get(CHECKPOINT_ENV)):
        if candidate:
            return Path(candidate).expanduser()
    return DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None


def steps_per_epoch(s: FlyVisSettings) -> int:
    """Niter = int(n_frames * data_augmentation_loop // batch_size * 0.2) (spec §2.3)."""
    return int(s.n_frames * s.data_augmentation_loop // s.batch_size * 0.2)


def total_steps(s: FlyVisSettings) -> int:
    """Optimizer steps of the whole run."""
    return s.n_epochs * steps_per_epoch(s)
