"""Replicates over data draws: the best config re-run on further draws of the family's data, as Ray trials
logged as child runs with tag replicate=true, and summarised in the regime row as mean ± sd over draws."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tuner.driver import sweep
from tuner.table import fmt

SMOKE = ["n_reports=3", "n_rollout_frames=50"]


@pytest.mark.slow
def test_best_config_is_replicated_on_further_draws(results: Path, ray_2gpu) -> None:
    out = sweep("chaotic_10k", scale="smoke", samples=2, scheduler="none", overrides=SMOKE, replicates=2)
    best = out.trials.sort_values("metric.connectivity_R2", ascending=False).iloc[0]
    draw = int(best["setting.sim_seed"])
    assert sorted(out.replicates["setting.sim_seed"]) == [draw + 1, draw + 2]
    for name in ("lr", "lr_W_ratio", "coeff_W_L1", "batch_size"):
        assert set(out.replicates[f"param.{name}"]) == {best[f"param.{name}"]}

    client = MlflowClient(out.plan.tracking_uri)
    children = client.search_runs([client.get_experiment_by_name("signal").experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{out.parent_run_id}'")
    assert sorted(c.data.tags["replicate"] for c in children) == ["false", "false", "true", "true"]
    assert all(c.info.status == "FINISHED" for c in children)  # the replicate logger deleted none of the search's

    row = out.table.iloc[0]
    values = pd.concat([pd.Series([best["metric.connectivity_R2"]]), out.replicates["metric.connectivity_R2"]])
    assert row["Best over draws"] == f"{fmt(values.mean())} ± {fmt(values.std(ddof=1))} (n=3)"
    per_draw = row["eff_rank per draw"].split(", ")
    assert len(per_draw) == 3 and len(set(per_draw)) > 1  # three different networks
    assert (results / "chaotic_10k" / out.plan.name / "replicates.parquet").exists()
