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


TRAINER_CHECKPOINT = "checkpoint.pt"  # a trainer's model, optimizer, sampling RNG and progress counters


def save_trainer(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    """Write a trainer checkpoint (read back by `load_trainer`) into `directory`."""
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state,
                "state": dict(state)}, Path(directory) / TRAINER_CHECKPOINT)


def load_trainer(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 rng: np.random.Generator, device: torch.device) -> dict[str, Any]:
    """Restore model, optimizer and RNG from the checkpoint in `directory`; its progress counters."""
    saved = torch.load(Path(directory) / TRAINER_CHECKPOINT, map_location=device, weights_only=True)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    rng.bit_generator.state = saved["rng"]
    return saved["state"]
