"""The `emma` family: wiring of settings, trainer, metrics, resources and the regime table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainables.emma.outcome import classify
from trainables.emma.settings import EmmaSettings, slots_per_bucket
from tuner.family import Family, RegimeTable, Resources, Session


def regime(s: Mapping[str, Any]) -> dict[str, Any]:
    """Leading columns: task, length, pairs, the DEQ update (the seed's residual one or the contractive variant),
    memory size and mode."""
    name = f"needle L={s['seq_len']}, n_pairs={s['n_pairs']}" if s["task"] == "needle" else f"listops L={s['seq_len']}"
    per_bucket = slots_per_bucket(EmmaSettings.model_construct(**s))
    return {"Regime": name, "DEQ": s["deq_update"], "D": s["mem_dim"], "slots": f"{s['memory_slots']} ({per_bucket}/bucket, top-"
            f"{min(s['memory_k_top'], per_bucket)})", "memory": s["memory_mode"],
            "train/val": f"{s['train_size']}/{s['val_size']}"}


def run(settings: EmmaSettings, session: Session) -> None:
    """Train one trial; the trainer (and torch) loads only when a trial runs."""
    from trainables.emma.train import run as train

    train(settings, session)


FAMILY = Family(
    name="emma",
    settings=EmmaSettings,
    metric="val_acc_honest",
    mode="max",
    run=run,
    classify=classify,
    success="retrieves",
    cost_knobs=frozenset({"train_size", "val_size", "epochs", "n_reports", "threads", "device"}),
    resources={"smoke": Resources(cpu=1), "cpu": Resources(cpu=1), "full": Resources(cpu=1, gpu=1)},
    table=RegimeTable(
        regime=regime,
        descriptors={"majority": "majority_acc"},
        best="Best honest acc",
        key_params={"λ cap": "nce_lambda_max", "gate thr": "nce_gate_read_threshold", "lr": "lr",
                    "β": "write_strength"},
        best_metrics={"assisted acc": "val_acc", "best assisted": "best_val_acc", "gate epoch": "nce_gate_epoch",
                      "walltime s": "walltime_sec"},
    ),
    draw="seed",
    description="EMMA: a DEQ + liquid-cell backbone with a bucketed HRR key-value memory, on Needle-in-a-Haystack "
                "(oracle addressing, one queried pair) or ListOps-lite. Metric: val_acc_honest (validation writes "
                "from the model's own value prediction, label never read); val_acc is the reference's "
                "label-assisted score.",
)
