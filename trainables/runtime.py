"""What every family's trainer needs from its surroundings: a device, a thread budget, a divergence report.

Shared by all families so that they agree (an explicit ``"cuda"`` means the same everywhere). Imports
torch only: nothing here knows of Ray, MLflow or Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

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
