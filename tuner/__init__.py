"""tuner: Ray Tune sweeps over scientific training families, with priors, ASHA and MLflow regime tables."""

from tuner.space import load_space
from tuner.sweep import SweepOutcome, build_tuner, finish, fit, resume, sweep

__all__ = ["SweepOutcome", "build_tuner", "finish", "fit", "load_space", "resume", "sweep"]
