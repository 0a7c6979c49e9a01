"""Settings of one `signal` trial (the simulated regime, then training) and the sizes derived from them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainables.signal.simulate import TYPE_PARAMS
from tuner.family import DEVICES


def steps_per_epoch(s: SignalSettings) -> int:
    """Niter = int((n_frames * aug // B) * 0.2)."""
    return int((s.n_frames * s.data_augmentation_loop // s.batch_size) * 0.2)


class SignalSettings(BaseModel):
    """Settings of one signal trial: the simulated regime, then training."""

    model_config = ConfigDict(extra="forbid")

    # simulation (regime)
    n_neurons: int = Field(100, ge=2, description="number of neurons N")
    n_frames: int = Field(10000, gt=5, description="stored frames after warm-up (frames k < n_frames-5 are sampled)")
    connectivity_type: Literal["chaotic", "low_rank"] = Field("chaotic", description="ground-truth W generator")
    connectivity_rank: int = Field(20, ge=1, description="rank r of a low_rank W (must be <= n_neurons)")
    Dale_law: bool = Field(False, description="sign W by presynaptic neuron: first E columns +, rest -")
    Dale_law_factor: float = Field(0.5, ge=0, le=1, description="excitatory fraction E/N under Dale's law")
    connectivity_filling_factor: float = Field(1.0, gt=0, le=1, description="probability that an edge is kept")
    n_types: int = Field(1, description="neuron types: 1, or 4 (the landscape type rows)")
    gain: float = Field(7.0, ge=0, description="gain g on the recurrent input, all types")
    self_coupling: float | None = Field(None, description="self-coupling s for all types (None: the type rows)")
    noise_model_level: float = Field(0.0, ge=0, description="process noise sigma added after each Euler step")
    sim_seed: int = Field(42, description="seed of W, the initial state and the noise")
    # training
    lr_W: float = Field(2e-3, ge=0, description="Adam learning rate of W (or W_L, W_R)")
    lr: float = Field(1e-4, ge=0, description="Adam learning rate of the MLPs f_edge, f_phi")
    lr_emb: float = Field(2.5e-4, ge=0, description="Adam learning rate of the embeddings a (n_types > 1)")
    coeff_W_L1: float = Field(1e-5, ge=0, description="L1 penalty on W")
    coeff_edge_diff: float = Field(100.0, ge=0, description="weight of the f_edge monotonicity penalty")
    coeff_lin_phi_zero: float = Field(0.0, ge=0, description="weight of the ||f_phi(0, a)|| penalty")
    batch_size: int = Field(8, gt=0, description="frames per optimizer step")
    n_epochs: int = Field(1, ge=1, description="epochs of Niter = int((n_frames*aug // batch_size)*0.2) steps")
    data_augmentation_loop: int = Field(60, ge=1, description="aug: multiplier of the steps per epoch")
    n_epochs_init: int = Field(0, ge=0, description="phase-1 epochs with first_coeff_L1 (0: single phase)")
    first_coeff_L1: float = Field(0.0, ge=0, description="L1 penalty during the n_epochs_init first epochs")
    low_rank_factorization: bool = Field(False, description="learn W = W_L W_R")
    low_rank: int = Field(20, ge=1, description="rank of W_L W_R (must be <= n_neurons)")
    embedding_dim: int = Field(2, ge=1, description="size of the neuron embeddings a")
    hidden_dim: int = Field(64, ge=1, description="hidden width of both MLPs")
    train_seed: int = Field(24, description="seed of the model init and the frame sampling")
    n_reports: int = Field(10, ge=1, description="progress reports per run, evenly spread over the steps")
    n_rollout_frames: int = Field(1000, gt=10, description="frames of the test rollout (<= n_frames + 1)")
    device: Literal[DEVICES] = Field("auto", description="auto: CUDA when available; cpu; cuda")

    @field_validator("n_types")
    @classmethod
    def _known_types(cls, value: int) -> int:
        if value not in TYPE_PARAMS:
            raise ValueError(f"must be one of {sorted(TYPE_PARAMS)} (the type rows defined for PDE_N4)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SignalSettings:
        if self.connectivity_rank > self.n_neurons:
            raise ValueError(f"connectivity_rank ({self.connectivity_rank}) must be <= n_neurons ({self.n_neurons})")
        if self.low_rank > self.n_neurons:
            raise ValueError(f"low_rank ({self.low_rank}) must be <= n_neurons ({self.n_neurons})")
        if self.n_rollout_frames > self.n_frames + 1:
            raise ValueError(f"n_rollout_frames ({self.n_rollout_frames}) must be <= n_frames + 1 "
                             f"({self.n_frames + 1})")
        total = self.n_epochs * steps_per_epoch(self)
        if total < self.n_reports:
            raise ValueError(f"n_epochs * int((n_frames * data_augmentation_loop // batch_size) * 0.2) = {total} "
                             f"training steps, fewer than n_reports ({self.n_reports})")
        return self
