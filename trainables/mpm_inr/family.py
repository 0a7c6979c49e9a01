"""The `mpm_inr` family, wired for the orchestrator: regime table and the `FAMILY` entry point. Wiring only:
the schema is in settings.py, the trainer in train.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainables.mpm_inr.metrics import classify
from trainables.mpm_inr.settings import MpmInrSettings
from tuner.family import Family, RegimeTable, Resources, Session


def regime(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The leading columns of the regime table."""
    return {"INR Type": settings["inr_type"], "Field": settings["field"],
            "n_training_frames": settings["n_training_frames"]}


def run(settings: MpmInrSettings, session: Session) -> None:
    """Train one trial; the trainer (and torch) loads only when a trial runs."""
    from trainables.mpm_inr.train import run as train

    train(settings, session)


FAMILY = Family(
    name="mpm_inr",
    settings=MpmInrSettings,
    metric="final_r2",
    mode="max",
    run=run,
    classify=classify,
    success="excellent",
    cost_knobs=frozenset({"sim_particles", "n_particles", "total_steps", "hidden_dim", "n_reports", "device"}),
    resources={"smoke": Resources(cpu=1), "cpu": Resources(cpu=1), "full": Resources(cpu=1, gpu=1)},
    table=RegimeTable(
        regime=regime,
        descriptors={"Target std": "target_std"},
        best="Best R²",
        best_metrics={"Best slope": "slope", "kino_R2": "kinograph_R2", "kino_SSIM": "kinograph_SSIM",
                      "Training time (min)": "training_time_min"},
        key_params={"Optimal lr": "lr", "Optimal hidden_dim": "hidden_dim", "Optimal n_layers": "n_layers",
                    "Optimal omega": "omega", "Optimal total_steps": "total_steps"},
    ),
    draw="sim_seed",
    description="SIREN fit of one per-particle field (F, Jp, C, S) of a 2D MLS-MPM simulation of nine "
                "liquid/jelly/snow discs, over a centred window of n_training_frames frames; metric: final_r2 "
                "(squared Pearson r on all training frames).",
)
