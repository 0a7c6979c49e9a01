"""Faults a user hits, each through the CLI in its own process: Ctrl-C while trials are pending and while a
sweep finishes, a killed driver, a killed trial worker, trials that raise or diverge, a device the machine does
not have, a results disk that fills up. For each: the exit code, no driver traceback, the MLflow store (one child run per trial, no step
logged twice, no run left RUNNING), the searcher's Optuna states, and what `resume` does."""

from __future__ import annotations

import glob
import os
import pickle
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from cli_process import Cli
from mlflow.tracking import MlflowClient

from tuner.outcome import Outcome

SWEEP = ["sweep", "--space", "chaotic_10k", "--scale", "smoke"]  # 6 reports per trial, seconds each
STATE_OF_LABEL = {o.label: o.optuna_state for o in Outcome}


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def _session(proc: Path) -> int:
    """The session id of a process (/proc/<pid>/stat, field 6): a CLI started in its own session owns its Ray."""
    stat = _read(proc / "stat").decode()
    return int(stat.rsplit(")", 1)[-1].split()[3]) if stat else -1


def _env(results: Path, cache: Path) -> dict[str, str]:
    return {**os.environ, "TUNER_RESULTS": str(results), "TUNER_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}


def _run(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    cli = Cli(args, env)
    return cli.finish(), cli.output


def _no_driver_traceback(output: str, trials_fail: bool = True) -> None:
    """The driver itself never crashes: lines a Ray worker printed (prefixed '(<trial> pid=N)', e.g. a trial
    actor's SystemExit traceback as Ray shuts it down) are not the driver's; where trials fail (`trials_fail`),
    Ray prints each failing trial's traceback too, so only what comes after the last trial's end is the CLI's."""
    text = output.rsplit("ended)", 1)[-1] if trials_fail else output
    driver = [line for line in text.splitlines() if not re.search(r"\(\w+ pid=\d+\)", line)]
    assert "Traceback" not in "\n".join(driver), output


def _store(results: Path) -> tuple[MlflowClient, list, list]:
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("signal").experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("tuner.kind") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def _check_store(results: Path, trials: pd.DataFrame, reports: int) -> None:
    """One child run per trial, nothing RUNNING, each trial's steps logged once, statuses as the table says."""
    client, parents, children = _store(results)
    assert [p.info.status for p in parents if p.info.status == "RUNNING"] == []
    by_trial = {c.data.tags["tuner.trial_id"]: c for c in children}
    assert len(children) == len(by_trial) == len(trials)
    for row in trials.itertuples():
        child = by_trial[row.trial_id]
        assert child.info.status == Outcome[row.status.upper()].mlflow_status
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "loss")]
        assert steps == sorted(set(steps)) and len(steps) <= reports  # none doubled
        if row.status in ("finished", "pruned"):
            assert steps == list(range(1, int(row.reports) + 1))  # none missing


def _told(experiment: Path) -> dict[str, str]:
    """What the searcher told Optuna, from its latest saved state (a resumed sweep saves a new file)."""
    with open(sorted(glob.glob(str(experiment / "searcher-state-*.pkl")))[-1], "rb") as f:
        return pickle.load(f)["told"]


def _check_optuna(experiment: Path, trials: pd.DataFrame, results: Path) -> None:
    """The searcher told Optuna each trial's outcome, once (COMPLETE only for trials that ran every report), and
    the study in its database says the same: one study trial per Ray trial, none left RUNNING (trials asked
    after a killed driver's last save are FAIL and listed in `lost_with_driver`)."""
    told = _told(experiment)
    assert told == {row.trial_id: STATE_OF_LABEL[row.status] for row in trials.itertuples()}
    study = optuna.load_study(study_name=experiment.name, storage=f"sqlite:///{results / 'optuna.db'}")
    lost = set(study.user_attrs.get("lost_with_driver", []))
    states = sorted(t.state.name for t in study.trials if t.number not in lost)
    assert states == sorted(told.values())
    assert all(t.state.name == "FAIL" for t in study.trials if t.number in lost)


def _trials(results: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(results / "chaotic_10k" / name / "trials.parquet")


def _replay_asha(experiment: Path, trials: pd.DataFrame, reduction_factor: int, max_reports: int) -> None:
    """Each trial stopped early is exactly one whose value at a rung fell under the cutoff of the values recorded
    there before it (in order, pre-interrupt records included): ASHA decided over the whole history."""
    with open(sorted(glob.glob(str(experiment / "callback-states-*.pkl")))[-1], "rb") as f:  # SchedulerState's
        state = next(v for v in pickle.load(f).values() if isinstance(v, dict) and "rungs" in v)
    expected: dict[str, int] = {}
    for rungs in state["rungs"]:
        for milestone, recorded in rungs:
            values = list(recorded.values())
            for i, trial_id in enumerate(recorded):
                if milestone < max_reports and i and values[i] < np.nanpercentile(values[:i],
                                                                                  (1 - 1 / reduction_factor) * 100):
                    expected[trial_id] = milestone
    pruned = {r.trial_id: int(r.reports) for r in trials.itertuples() if r.status == "pruned"}
    assert pruned, "ASHA stopped nothing: the replay would check nothing"
    assert pruned == expected and set(state["stopped"]) == set(pruned)


def _configs(trials: pd.DataFrame) -> list[tuple]:
    cols = sorted(c for c in trials.columns if c.startswith("param."))
    return sorted(tuple(round(float(v), 12) for v in row) for row in trials[cols].itertuples(index=False))


SEEDED = [*SWEEP, "--samples", "8", "--max-concurrent", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, isolated_cache: Path) -> pd.DataFrame:
    """The trials of the seeded sweep run without interruption."""
    results = tmp_path_factory.mktemp("plain")
    rc, output = _run([*SEEDED, "--name", "plain"], _env(results, isolated_cache))
    assert rc == 0, output
    return _trials(results, "plain")


@pytest.mark.slow
@pytest.mark.parametrize("after_reports", [1, 5], ids=["first-report", "mid-sweep"])
def test_ctrl_c_with_pending_trials_then_resume_matches_an_uninterrupted_sweep(
        tmp_path: Path, isolated_cache: Path, uninterrupted: pd.DataFrame, after_reports: int) -> None:
    results = tmp_path / "cut"
    env = _env(results, isolated_cache)
    cli = Cli([*SEEDED, "--name", "cut"], env)
    cli.wait_for(r" report \d+/", count=after_reports)  # 2 trials running, 6 pending
    os.killpg(cli.proc.pid, signal.SIGINT)
    assert cli.finish() == 130, cli.output
    assert "python -m tuner resume" in cli.output, cli.output
    _no_driver_traceback(cli.output, trials_fail=False)
    _, parents, children = _store(results)
    assert [r.info.status for r in parents + children if r.info.status == "RUNNING"] == []  # KILLED, interrupted
    assert parents[0].data.tags["interrupted"] == "true"

    experiment = results / "ray" / "cut"
    rc, output = _run(["resume", str(experiment)], env)
    assert rc == 0, output
    _no_driver_traceback(output, trials_fail=False)
    trials = _trials(results, "cut")
    _check_store(results, trials, reports=6)
    _check_optuna(experiment, trials, results)
    _replay_asha(experiment, trials, reduction_factor=3, max_reports=6)
    assert _configs(trials) == _configs(uninterrupted)  # the same trials as without the interrupt


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 64 MiB tmpfs (needs root, as CI and the dev machine have): a results folder that can fill up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True)
    assert mounted.returncode == 0, f"cannot mount a tmpfs (root needed): {mounted.stderr.decode()}"
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.slow
def test_results_disk_filling_up_stops_the_sweep_and_resume_matches_an_uninterrupted_sweep(
        small_disk: Path, isolated_cache: Path, uninterrupted: pd.DataFrame) -> None:
    """Every byte of the results folder's disk taken mid-sweep (by another program): trials wait instead of
    failing, the sweep stops (exit 75) for a resume, its last writes made in the space it held back; resume is
    refused while the disk is full; once space is back it ends with the trials and pruning decisions of an
    uninterrupted sweep."""
    results = small_disk / "results"
    env = {**_env(results, isolated_cache), "TUNER_MIN_FREE_MB": "16"}
    cli = Cli([*SEEDED, "--name", "cut"], env)
    cli.wait_for(r" report \d+/", count=3)
    filler = small_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)  # until ENOSPC
    assert cli.finish() == 75, cli.output
    free = re.search(r"sweep stopped: .*results has (\d+\.\d) MiB free", cli.output)
    assert free and float(free[1]) < 16, cli.output  # the held-back space (8 MiB) less the sweep's last writes
    assert "python -m tuner resume" in cli.output, cli.output
    _no_driver_traceback(cli.output, trials_fail=False)

    experiment = results / "ray" / "cut"
    rc, output = _run(["resume", str(experiment)], env)
    assert rc == 2 and "free space first" in output, output
    filler.unlink()
    rc, output = _run(["resume", str(experiment)], env)
    assert rc == 0, output
    _no_driver_traceback(output, trials_fail=False)
    trials = _trials(results, "cut")
    _check_store(results, trials, reports=6)
    _check_optuna(experiment, trials, results)
    _replay_asha(experiment, trials, reduction_factor=3, max_reports=6)
    assert "cut short" not in output, output  # Ray's final save fitted in the held-back space
    assert _configs(trials) == _configs(uninterrupted)


@pytest.mark.slow
def test_killed_driver_then_resume(tmp_path: Path, isolated_cache: Path) -> None:
    results = tmp_path / "results"
    env = _env(results, isolated_cache)
    cli = Cli([*SWEEP, "--samples", "4", "--name", "killed"], env)
    cli.wait_for(r" report \d+/", count=3)
    os.killpg(cli.proc.pid, signal.SIGKILL)
    cli.finish()
    experiment = results / "ray" / "killed"
    rc, output = _run(["resume", str(experiment)], env)
    assert rc == 0, output
    _no_driver_traceback(output, trials_fail=False)
    trials = _trials(results, "killed")
    assert len(trials) == 4
    _check_store(results, trials, reports=6)
    _check_optuna(experiment, trials, results)


@pytest.mark.slow
def test_killed_trial_worker_fails_that_trial_only(tmp_path: Path, isolated_cache: Path) -> None:
    results = tmp_path / "results"
    env = _env(results, isolated_cache)
    cli = Cli([*SWEEP, "--samples", "3", "--max-concurrent", "1", "--scheduler", "none", "--name", "worker"], env)
    cli.wait_for(r" report 2/")
    workers = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/cmdline")  # this sweep's trial actors
               if b"ImplicitFunc" in _read(p) and _session(p.parent) == cli.proc.pid]
    assert workers, "no trial worker found"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    assert cli.finish() == 0, cli.output
    trials = _trials(results, "worker")
    assert sorted(trials["status"]) == ["error", "finished", "finished"]
    _check_store(results, trials, reports=6)
    _check_optuna(results / "ray" / "worker", trials, results)


@pytest.mark.slow
def test_ctrl_c_while_finishing_then_resume_finishes(tmp_path: Path, ray_2gpu, monkeypatch) -> None:
    """A Ctrl-C that lands in `finish` (after every trial ended) leaves the sweep interrupted; resume finishes it."""
    import tuner.driver as driver

    results = tmp_path / "results"
    monkeypatch.setenv("TUNER_RESULTS", str(results))
    real_regime_row, calls = driver.regime_row, []

    def interrupted_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real_regime_row(*args, **kwargs)

    monkeypatch.setattr(driver, "regime_row", interrupted_once)
    out = driver.sweep("chaotic_10k", scale="smoke", samples=2, scheduler="none", name="finishing")
    assert out.interrupted and out.table is None
    _, parents, _ = _store(results)
    assert parents[0].info.status == "KILLED" and parents[0].data.tags["interrupted"] == "true"
    resumed = driver.resume(out.plan.experiment_path)
    assert not resumed.interrupted and resumed.failure is None
    _, parents, _ = _store(results)
    assert parents[0].info.status == "FINISHED" and (results / "chaotic_10k" / "finishing" / "regime_table.md").exists()
    _check_store(results, resumed.trials, reports=6)


@pytest.mark.slow
def test_every_trial_raising_fails_the_sweep_cleanly_and_resume_does_not_loop(tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = _env(results, Path("/proc/no-cache-here"))  # every trial fails to store its simulated data
    rc, output = _run([*SWEEP, "--samples", "2", "--name", "raising"], env)
    assert rc == 1 and "sweep FAILED: no trial reported a finite connectivity_R2 (2 error)" in output, output
    _no_driver_traceback(output)
    client, parents, children = _store(results)
    assert parents[0].info.status == "FAILED" and "2 error" in parents[0].data.tags["failure_reason"]
    assert sorted(c.info.status for c in children) == ["FAILED", "FAILED"]
    table = (results / "chaotic_10k" / "raising" / "regime_table.md").read_text()
    assert "no trial reported a finite connectivity_R2" in table
    assert set(_told(results / "ray" / "raising").values()) == {"FAIL"}

    rc, again = _run(["resume", str(results / "ray" / "raising")], env)
    assert rc == 1 and " started: " not in again, again  # nothing re-run
    assert len(_store(results)[2]) == 2


@pytest.mark.slow
def test_all_trials_diverging_fails_the_sweep_without_a_traceback(tmp_path: Path, isolated_cache: Path) -> None:
    results = tmp_path / "results"
    rc, output = _run([*SWEEP, "--samples", "2", "--scheduler", "none", "--set", "lr_W=1e35", "--name", "nan"],
                      _env(results, isolated_cache))
    assert rc == 1 and "(2 diverged)" in output and "Traceback" not in output, output
    trials = _trials(results, "nan")
    assert set(trials["status"]) == {"diverged"}
    _check_store(results, trials, reports=6)
    _check_optuna(results / "ray" / "nan", trials, results)


@pytest.mark.parametrize("extra, message", [
    (["--set", "device=cuda"], "device=cuda: this Ray has no GPU"),
    (["--scale", "full"], "--scale full: each signal trial requests 0.25 GPU"),
])
def test_a_gpu_the_machine_lacks_is_refused_at_plan_time(tmp_path: Path, extra, message) -> None:
    results = tmp_path / "results"
    env = {**_env(results, tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": ""}
    rc, output = _run(["sweep", "--space", "chaotic_10k", *extra], env)
    assert rc == 2 and message in output and "Traceback" not in output, output
    assert not results.exists()
