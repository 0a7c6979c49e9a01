"""What every family's trainer needs from its surroundings: a device, a thread budget, a divergence report.

Shared by all families so that they agree (an explicit ``"cuda"`` means the same everywhere). Imports
torch only: nothing here knows of Ray, MLflow or Optuna.
"""

from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from contextlib import contextmanager

import numpy as np
import torch

from tuner.family import DEVICES


def pick_device(name: str) -> torch.device:
    """'auto' -> CUDA when available (Ray sets CUDA_VISIBLE_DEVICES for GPU trials), else CPU.

    An explicit 'cuda' on a machine without one is an error, not a silent fallback to the CPU."""
    if name not in DEVICES:
        raise ValueError(f"device {name!r} is not one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA device here; use device=auto or cpu")
    return torch.device(name)


@contextmanager
def thread_limit(n_threads: int) -> Iterator[None]:
    """Run the block with torch using `n_threads` intra-op threads (a trial's CPU request), then restore."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def is_finite(*values: float) -> bool:
    """Whether every value is a finite number."""
    return all(math.isfinite(v) for v in values)


def diverged_report(metric_names: Iterable[str], known: Mapping[str, float] | None = None) -> dict[str, float]:
    """The one report of a diverged run: every named metric NaN, what is still known, and ``diverged = 1``."""
    return {**dict.fromkeys(metric_names, math.nan), **dict(known or {}), "diverged": 1.0}


TRAINER_CHECKPOINT = "checkpoint.pt"  # a trainer's model, optimizer, random states and progress counters


def save_trainer(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 rng: np.random.Generator | None, state: Mapping[str, Any]) -> None:
    """Write a trainer checkpoint (read back by `load_trainer`) into `directory`: model, optimizer, the trainer's
    sampling generator `rng` (if it has one), torch's global random states (CPU, and CUDA once initialised: what
    dropout draws from) and the progress counters `state`."""
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": None if rng is None else rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
                "state": dict(state)}, Path(directory) / TRAINER_CHECKPOINT)


def load_trainer(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 rng: np.random.Generator | None) -> dict[str, Any]:
    """Restore model, optimizer and random states from the checkpoint in `directory`; its progress counters.

    Read onto the CPU: `load_state_dict` copies each tensor to its parameter's device, and torch's random states
    must be CPU tensors. CUDA states are restored on as many devices as were saved and are visible now."""
    saved = torch.load(Path(directory) / TRAINER_CHECKPOINT, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if rng is not None:
        rng.bit_generator.state = saved["rng"]
    if "torch_rng" in saved:                          # absent from checkpoints written before it was saved
        torch.set_rng_state(saved["torch_rng"])
    for index, cuda_state in enumerate(saved.get("cuda_rng", [])[:torch.cuda.device_count()]):
        torch.cuda.set_rng_state(cuda_state, index)
    return saved["state"]
