"""tuner: Ray Tune sweeps over scientific training families, with priors, ASHA and MLflow regime tables.

The public names load lazily, so that a family's science code can import `tuner.family` (its contract)
without pulling in Ray, MLflow or Optuna.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_PUBLIC = {"load_space": "tuner.space", "Sweep": "tuner.driver", "SweepOutcome": "tuner.driver",
           "build": "tuner.driver", "finish": "tuner.driver", "fit": "tuner.driver", "resume": "tuner.driver",
           "sweep": "tuner.driver"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tuner' has no attribute {name!r}")
    return getattr(import_module(_PUBLIC[name]), name)
