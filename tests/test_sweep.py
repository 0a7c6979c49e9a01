"""End-to-end sweeps of the `signal` family at smoke scale on a local Ray with 2 fake GPUs."""

from __future__ import annotations

import glob
import math
import pickle
from html.parser import HTMLParser

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tuner import sweep
from tuner.cli import main as cli
from tuner.plan import choose_scale

SEED_COLUMNS = ["Block", "Regime", "E/I", "n_frames", "n_neurons", "n_types", "eff_rank", "Best R²",
                "Optimal lr_W", "Optimal L1", "Key finding"]
pytestmark = pytest.mark.usefixtures("ray_2gpu")


def _runs(results):
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name("signal")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("tuner.kind") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def test_smoke_sweep_parent_children_pruning_and_table(results, capsys) -> None:
    out = sweep("chaotic_10k", scale="smoke", samples=6, seed=1, max_concurrent=2)
    client, parents, children = _runs(results)

    assert len(parents) == 1 and parents[0].info.run_id == out.parent_run_id
    tags = parents[0].data.tags
    assert {tags["space"], tags["scale"], tags["seed"], tags["searcher"]} == {"chaotic_10k", "smoke", "1", "tpe"}
    assert tags["git_commit"] and parents[0].info.status == "FINISHED"
    assert len(children) == 6 and {c.data.tags["mlflow.parentRunId"] for c in children} == {out.parent_run_id}
    assert len({c.data.tags["tuner.trial_id"] for c in children}) == 6

    max_reports = out.plan.max_reports
    for child in children:
        history = client.get_metric_history(child.info.run_id, "connectivity_R2")
        steps = [m.step for m in history]
        assert steps == sorted(set(steps)) and steps[0] == 1  # every report once, none doubled
        assert child.data.params["lr_W"] and "tuned.lr_W_ratio" in child.data.params
        if child.data.tags["pruned"] == "true":
            assert child.info.status == "KILLED" and len(steps) < max_reports
        else:
            assert child.info.status == "FINISHED" and len(steps) == max_reports
            assert {"test_R2", "test_pearson", "eff_rank_99", "spectral_radius"} <= set(child.data.metrics)
    assert sum(c.data.tags["pruned"] == "true" for c in children) >= 1, "ASHA pruned nothing"

    # the warm start ran first, and the seed's columns are in the one-row regime table
    first = out.trials.iloc[0]
    assert first["param.lr_W_ratio"] == 80 and first["param.batch_size"] == 32
    # both slots start within ~0.1 s, so "first" means among the first max_concurrent trials to start
    first_started = sorted(children, key=lambda c: c.info.start_time)[:2]
    assert 80 in {float(c.data.params["tuned.lr_W_ratio"]) for c in first_started}
    assert len(out.table) == 1 and all(c in out.table.columns for c in SEED_COLUMNS)
    assert out.table_path.exists() and out.table_path.with_suffix(".parquet").exists()
    artifacts = {a.path for a in client.list_artifacts(out.parent_run_id)}
    assert {"regime_row.json", "regime_table.md"} <= artifacts
    assert (results / "mlartifacts" / "signal").is_dir()  # artifacts beside the sqlite store, not in ./mlruns

    assert cli(["table", "--family", "signal"]) == 0
    printed = capsys.readouterr().out
    assert "| Block" in printed and "chaotic, Dale=False" in printed and "1 sweeps" in printed


def test_gpu_requests_are_honoured_and_default_scale(results) -> None:
    assert choose_scale(None)[0] == "full"  # the fixture's Ray has 2 (fake) GPUs
    out = sweep("chaotic_10k", scale="full", samples=2, scheduler="none",
                overrides=["data_augmentation_loop=1", "n_reports=3", "n_rollout_frames=50"])
    trials = out.results._experiment_analysis.trials
    assert all(t.placement_group_factory.required_resources == {"CPU": 1.0, "GPU": 0.25} for t in trials)
    assert all(r.metrics["ray_gpus"] == 1.0 for r in out.results)


def test_diverging_trial_is_stopped_failed_and_told_fail(results) -> None:
    out = sweep("chaotic_10k", scale="smoke", samples=2, scheduler="none", overrides=["lr_W=1e35"])
    client, _, children = _runs(results)
    assert len(children) == 2
    for child in children:
        history = client.get_metric_history(child.info.run_id, "connectivity_R2")
        assert not math.isfinite(history[-1].value) and all(math.isfinite(m.value) for m in history[:-1])
        assert child.info.status == "FAILED" and child.data.tags["diverged"] == "true"
    assert set(out.trials["status"]) == {"diverged"}
    state_file = glob.glob(f"{out.plan.experiment_path}/searcher-state-*.pkl")[0]
    with open(state_file, "rb") as f:
        searcher = pickle.load(f)
    assert set(searcher["told"].values()) == {"FAIL"}
    assert "2 diverged" in out.table["Key finding"].iloc[0]


def test_mlflow_the_way_its_ui_expects(results) -> None:
    """Experiment in the model-training view; the parent run carries the scale, the fixed regime, every --set
    and the best trial's params and metrics; child runs are named by their parameters; the row shows overrides."""
    out = sweep("chaotic_10k", scale="smoke", samples=2, scheduler="none", overrides=["n_rollout_frames=50"])
    client, parents, children = _runs(results)
    experiment = client.get_experiment_by_name("signal")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    params = parents[0].data.params
    assert params["scale"] == "smoke" and params["fixed.connectivity_type"] == "chaotic"
    assert params["set.n_rollout_frames"] == "50"
    best = out.trials.sort_values("metric.connectivity_R2", ascending=False).iloc[0]
    assert float(params["best.lr"]) == pytest.approx(best["param.lr"])
    assert parents[0].data.metrics["best.connectivity_R2"] == pytest.approx(best["metric.connectivity_R2"])
    names = {c.info.run_name for c in children}
    assert all("lr=" in name and "batch_size=" in name for name in names)
    assert out.table["Sweep"].iloc[0] == f"{out.plan.name} (--set n_rollout_frames=50)"
    # the Optuna study, in its own database, named after the sweep
    study = optuna.load_study(study_name=out.plan.name, storage=f"sqlite:///{results / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.best_value == pytest.approx(best["metric.connectivity_R2"])


def test_the_same_seeded_sweep_gives_the_same_key_finding(results) -> None:
    findings = [sweep("chaotic_10k", scale="smoke", samples=6, seed=4, max_concurrent=1, scheduler="none",
                      overrides=["n_reports=3", "n_rollout_frames=50"], name=f"again{i}").table["Key finding"].iloc[0]
                for i in range(2)]
    assert findings[0] == findings[1]
    assert "6 finished trials" in findings[0] or "matters most" in findings[0]


def _script_sources(page: str) -> list[str]:
    """The src attributes of the page's <script> tags (script bodies are not parsed as markup)."""
    sources: list[str] = []

    class Scripts(HTMLParser):
        def handle_starttag(self, tag, attrs):
            sources.extend(v for k, v in attrs if tag == "script" and k == "src")

    Scripts().feed(page)
    return sources


def test_report_page_is_self_contained_and_logged(results, capsys) -> None:
    out = sweep("chaotic_10k", scale="smoke", samples=3, scheduler="none", overrides=["n_reports=3"], name="paged")
    page = (results / "chaotic_10k" / "paged" / "report.html").read_text()
    best = out.table["Best R²"].iloc[0]
    assert 'id="regime-table"' in page and f"<td>{best}</td>" in page
    for element in ("search-history", "learning-curves", "parallel-coordinates"):
        assert f'id="{element}"' in page
    assert _script_sources(page) == []  # works offline: plotly.js and the data are inlined
    assert page.count('"type":"scatter"') >= 3 + 1  # one learning curve per trial, at least
    assert all(p.text[:30] in page for p in out.plan.search_space.principles)
    client = MlflowClient(out.plan.tracking_uri)
    assert "report.html" in {a.path for a in client.list_artifacts(out.parent_run_id)}

    (results / "chaotic_10k" / "paged" / "report.html").unlink()
    assert cli(["report", out.parent_run_id]) == 0  # by run id, from the embedded store
    assert (results / "chaotic_10k" / "paged" / "report.html").exists()
