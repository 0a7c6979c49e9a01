"""The `flyvis` family, wired for the orchestrator: recover connectivity, time constants and resting potentials
of the fly visual system. Wiring only: the schema is in settings.py, the trainer in train.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainables.flyvis.metrics import classify
from trainables.flyvis.settings import FlyVisSettings
from tuner.family import Family, RegimeTable, Resources, Session


def regime(s: Mapping[str, Any]) -> dict[str, Any]:
    """Leading columns of the regime table, e.g. 'noise=0.05, extent=8'."""
    return {"Regime": f"noise={s['noise_model_level']:g}, extent={s['extent']}, params={s['params_source']}",
            "n_frames": s["n_frames"]}


def run(settings: FlyVisSettings, session: Session) -> None:
    """Train one trial; the trainer (and torch) loads only when a trial runs."""
    from trainables.flyvis.train import run as train

    train(settings, session)


FAMILY = Family(
    name="flyvis",
    settings=FlyVisSettings,
    metric="conn_R2",
    mode="max",
    run=run,
    classify=classify,
    success="converged",
    cost_knobs=frozenset({"extent", "n_frames", "data_augmentation_loop", "n_epochs", "n_test_frames",
                          "n_reports", "gmm_components", "n_threads", "device"}),
    resources={"smoke": Resources(cpu=1), "cpu": Resources(cpu=1), "full": Resources(cpu=4, gpu=1)},
    table=RegimeTable(
        regime=regime,
        descriptors={},
        best="Best conn_R2",
        key_params={"lr_W": "lr_W", "lr": "lr", "lr_emb": "lr_emb", "aug_loop": "data_augmentation_loop",
                    "n_layers": "n_layers", "n_layers_update": "n_layers_update"},
        best_metrics={"tau_R2": "tau_R2", "V_rest_R2": "V_rest_R2", "Cluster_Acc": "cluster_accuracy",
                      "Time_min": "training_time_min"},
    ),
    draw="sim_seed",
    description="Drosophila visual system (65 cell types on a hex lattice, flyvis connectome): tau dv/dt = -v + "
                "V_rest + sum W ReLU(v_j) + I (PDE_N9_A); a GNN dv/dt = f_theta(v, a, sum W g_phi(v_j, a_j)^2, I) "
                "learns W, tau, V_rest. Metrics: conn_R2 (primary), tau_R2, V_rest_R2, cluster_accuracy.",
)
