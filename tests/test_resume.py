"""A sweep interrupted mid-way (Ctrl-C on the CLI) and resumed ends with exactly one child run per trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

SAMPLES = 5


def _children(uri: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("signal")
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_duplicate_runs(results: Path, isolated_cache: Path) -> None:
    env = {**os.environ, "TUNER_RESULTS": str(results), "TUNER_CACHE_DIR": str(isolated_cache)}
    uri = f"sqlite:///{results / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "tuner", "sweep", "--space", "chaotic_10k", "--scale", "smoke", "--samples",
           str(SAMPLES), "--max-concurrent", "1", "--scheduler", "none", "--name", "interrupted"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:  # wait until the 2nd trial has reported once (progress lines)
        seen.append(line)
        if sum(" started: " in s for s in seen) >= 2 and " report 1/" in line:
            break
    assert proc.poll() is None, "".join(seen)
    proc.send_signal(signal.SIGINT)
    output = "".join(seen) + proc.communicate(timeout=180)[0]
    assert proc.returncode == 130, output
    assert "python -m tuner resume" in output
    assert len(_children(uri)) < SAMPLES

    experiment = results / "ray" / "interrupted"
    done = subprocess.run([sys.executable, "-m", "tuner", "resume", str(experiment)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    children = _children(uri)
    assert len(children) == SAMPLES and len({c.data.tags["tuner.trial_id"] for c in children}) == SAMPLES
    client = MlflowClient(uri)
    for child in children:
        assert child.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "connectivity_R2")]
        assert steps == list(range(1, len(steps) + 1)) and len(steps) == 6  # complete, none doubled
    assert (results / "chaotic_10k" / "interrupted" / "regime_table.md").exists()
