"""Settings of one `mpm_inr` trial: the simulated field and window (the regime), then the SIREN and its training."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuner.family import DEVICES


class MpmInrSettings(BaseModel):
    """One SIREN fit of one MPM particle field over a centred frame window."""

    model_config = ConfigDict(extra="forbid")

    field: Literal["F", "Jp", "C", "S"] = Field(
        "F", description="particle field to fit: F deformation gradient, Jp plastic volume ratio, "
                         "C APIC affine velocity, S stress (4 components except Jp)")
    inr_type: Literal["siren_txy", "siren_t"] = Field(
        "siren_txy", description="siren_txy: (t, x, y) -> one particle's field; siren_t: t -> all particles at once")
    n_training_frames: int = Field(400, ge=7, description="window length T (frames n_frames//2 - T//2 ... + T); "
                                                         ">= 7 for the 7x7 SSIM window")
    n_frames: int = Field(10000, ge=7, description="simulated run length whose centre the window is cut from "
                                                   "(one step of dt 7.5e-5 per frame)")
    sim_particles: int = Field(9000, ge=9, multiple_of=9, description="particles simulated (9 discs)")
    n_particles: int = Field(9000, ge=7, description="fixed random subset of the simulated particles that is fitted")
    sim_seed: int = Field(42, description="seed of the initial condition and of the particle subset")
    hidden_dim: int = Field(256, ge=1, description="SIREN width H")
    n_layers: int = Field(4, ge=0, description="hidden sine layers after the first one (then a linear head)")
    omega: float = Field(8.0, gt=0, description="SIREN frequency ω of all sine layers: sin(ω(Wx + b))")
    xy_period: float = Field(1.0, gt=0, description="positions are divided by this before entering the network")
    t_period: float = Field(1.0, gt=0, description="time k/T is divided by this (in training and evaluation)")
    lr: float = Field(1.2e-4, gt=0, description="Adam learning rate; cosine-annealed to 0.01*lr")
    total_steps: int = Field(320000, ge=1, description="optimizer steps")
    batch_frames: int = Field(1, ge=1, description="frames per step, each with all fitted particles")
    normalize_targets: bool = Field(False, description="z-score each field component for training "
                                                       "(metrics use predictions mapped back); off = reference recipe")
    train_seed: int = Field(0, description="seed of the network initialisation and the frame order")
    n_reports: int = Field(10, ge=1, description="progress reports (R² on all training frames) per run")
    device: Literal[DEVICES] = Field("auto", description="auto | cpu | cuda; auto = CUDA when available")

    @model_validator(mode="after")
    def _consistent(self) -> MpmInrSettings:
        if self.n_training_frames > self.n_frames:
            raise ValueError(f"n_training_frames={self.n_training_frames} is longer than the simulation: "
                             f"n_frames={self.n_frames}")
        if self.n_particles > self.sim_particles:
            raise ValueError(f"n_particles={self.n_particles} exceeds sim_particles={self.sim_particles}")
        if self.batch_frames > self.n_training_frames:
            raise ValueError(f"batch_frames={self.batch_frames} exceeds n_training_frames={self.n_training_frames}")
        if self.n_reports > self.total_steps:
            raise ValueError(f"n_reports={self.n_reports} exceeds total_steps={self.total_steps}")
        return self
