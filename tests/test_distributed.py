"""Distributed sweeps for real, each through the CLI in its own process: a multi-node Ray cluster with
fake GPUs that loses a node, the fake autoscaler of cluster.local.yaml, S3 storage on a local S3 server
(moto) with the driver killed, and an MLflow server that goes away mid-sweep."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from cli_process import Cli
from mlflow.tracking import MlflowClient

import tuner.cluster
from tuner.cluster import SHARED_ENV, storage_is_shared

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
REPORTS = 6
# `full` asks 1 CPU + 0.25 GPU per trial; these cost knobs keep a trial to seconds on a CPU
GPU_TRIALS = ["--space", "chaotic_10k", "--scale", "full", "--scheduler", "none", "--set",
              "data_augmentation_loop=8", f"n_reports={REPORTS}", "n_rollout_frames=50", "batch_size=8"]
CPU_TRIALS = ["--space", "chaotic_10k", "--scale", "smoke", "--scheduler", "none"]  # 6 reports, 1 CPU


def test_shared_storage_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SHARED_ENV, raising=False)
    assert storage_is_shared("s3://bucket/sweeps") and storage_is_shared("gs://bucket/sweeps")
    assert not storage_is_shared("memory://sweeps") and not storage_is_shared(str(tmp_path / "ray"))
    monkeypatch.setenv(SHARED_ENV, f"/elsewhere{os.pathsep}{tmp_path}")
    assert storage_is_shared(str(tmp_path / "ray" / "deeper")) and not storage_is_shared(str(tmp_path.parent))
    monkeypatch.setattr(tuner.cluster, "NETWORK_FILESYSTEMS", frozenset({"proc"}))  # as if /proc were NFS
    assert storage_is_shared("/proc/self/ray")


# ---- processes this module starts, and stops by their own process group ------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group the test started (the process and its children), SIGKILL if it lingers."""
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _start(cmd: list[str], log: Path, env: dict[str, str], ready: Callable[[], bool],
           timeout_s: float = 120) -> subprocess.Popen:
    """A background process in its own session, returned once `ready()`."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise AssertionError(f"{cmd[:3]} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    return proc


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class MlflowServer:
    """`mlflow server` on loopback: sqlite backend, artifacts served over HTTP from a local folder."""

    def __init__(self, root: Path):
        self.root, self.port = root, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = _start(cmd, self.root / "server.log", env, lambda: _answers(f"{self.uri}/health"))

    def stop(self) -> None:
        _stop(self.proc)


def _assert_complete(uri: str, parent: str, trials: int) -> list:
    """One child run per trial, each FINISHED with every report logged once; the parent FINISHED with its table."""
    client = MlflowClient(uri)
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.metrics["n_trials"] == trials
    assert {"regime_row.json", "regime_table.md"} <= {a.path for a in client.list_artifacts(parent)}
    children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(children) == trials and len({c.data.tags["tuner.trial_id"] for c in children}) == trials
    for child in children:
        assert child.info.status == "FINISHED"
        for name in ("connectivity_R2", "loss"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, name)]
            assert sorted(steps) == list(range(1, REPORTS + 1)), (name, steps)  # complete, none doubled
    return children


@pytest.fixture(scope="module")
def ray_tmpdir() -> Iterator[str]:
    """Ray's temp folder for this module's clusters. Ray records the last cluster started on a machine in
    <temp>/ray/ray_current_cluster, and a plain `ray.init()` joins it: kept here, no other Ray joins ours."""
    path = tempfile.mkdtemp(prefix="tuner-ray-", dir="/tmp")  # short: Ray's unix sockets live below it
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", path)
        yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(tmp_path: Path, isolated_cache: Path, ray_tmpdir: str) -> dict[str, str]:
    """Environment of the CLI runs: own results folder, the session's data cache, no Ray token auth."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", SHARED_ENV)}
    return {**env, "TUNER_RESULTS": str(tmp_path / "results"), "TUNER_CACHE_DIR": str(isolated_cache),
            "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": ray_tmpdir, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


# ---- a multi-node cluster ---------------------------------------------------------------------------
@pytest.mark.slow
class TestMultiNode:
    @pytest.fixture(scope="class")
    def gpu_cluster(self, ray_tmpdir: str):
        """A head that runs the driver only (1 CPU, no GPU) and 2 workers with 1 CPU and 1 fake GPU each."""
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
        workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        yield cluster, workers
        cluster.shutdown()

    def test_refuses_storage_and_tracking_nodes_cannot_share(self, gpu_cluster, env, tmp_path: Path) -> None:
        cluster, _ = gpu_cluster
        storage = tmp_path / "ray"
        argv = [sys.executable, "-m", "tuner", "sweep", *CPU_TRIALS, "--address", cluster.address,
                "--storage", str(storage)]
        local = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert local.returncode == 2, local.stdout + local.stderr
        assert "3 alive nodes" in local.stderr and "s3://" in local.stderr and SHARED_ENV in local.stderr
        sqlite = subprocess.run(argv, env={**env, SHARED_ENV: str(tmp_path)}, capture_output=True, text=True,
                                timeout=300)
        assert sqlite.returncode == 2, sqlite.stdout + sqlite.stderr
        assert "--tracking-uri: sqlite:///" in sqlite.stderr and "http://HOST:5000" in sqlite.stderr
        assert not storage.exists() and not (tmp_path / "results").exists()  # nothing written, no trial started

    def test_trial_of_a_lost_node_resumes_from_its_checkpoint(self, gpu_cluster, mlflow_server, env,
                                                              tmp_path: Path) -> None:
        cluster, workers = gpu_cluster
        run = Cli(["sweep", *GPU_TRIALS, "--samples", "4", "--name", "nodeloss", "--address", cluster.address,
                   "--storage", str(tmp_path / "ray"), "--tracking-uri", mlflow_server.uri],
                  {**env, SHARED_ENV: str(tmp_path)})
        run.wait_until(lambda: len(run.running()) == 2, "two trials part-way")  # both GPU workers busy
        cluster.remove_node(workers[1], allow_graceful=False)
        assert run.finish() == 0, run.output

        children = _assert_complete(mlflow_server.uri, run.parent_run_id(), 4)
        assert all(c.data.metrics["ray_gpus"] == 1 for c in children)  # placed on GPU nodes: the head has none
        started = re.findall(r"trial (\w+) started", run.output)
        restarted = {t for t in started if started.count(t) > 1}
        assert restarted, run.output  # the trial on the lost node ran again...
        reports = run.reports()
        assert all(reports[t] == list(range(1, REPORTS + 1)) for t in restarted)  # ...from its checkpoint
        assert (tmp_path / "results" / "chaotic_10k" / "nodeloss" / "regime_table.md").exists()


# ---- the fake autoscaler of cluster.local.yaml ----------------------------------------------------------
def _gpu_nodes(address: str) -> int:
    """Alive nodes with a GPU, as the cluster's GCS knows them."""
    from ray._raylet import GcsClient

    nodes = GcsClient(address=address).get_all_node_info(timeout=5).values()
    return sum(1 for n in nodes if n.state == 0 and n.resources_total.get("GPU", 0) > 0)


@pytest.mark.slow
def test_fake_autoscaler_scales_gpu_workers_up_and_down(mlflow_server, env, tmp_path: Path) -> None:
    import ray
    from ray._common.utils import reset_ray_address

    address = f"{ray.util.get_node_ip_address()}:{_free_port()}"
    config = yaml.safe_load((ROOT / "cluster.local.yaml").read_text())
    config["provider"]["gcs_address"] = address  # its own port, not the machine's default 6379
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(config))
    head = _start([str(BIN / "ray"), "start", "--head", "--block", f"--port={address.rsplit(':', 1)[1]}",
                   f"--autoscaling-config={tmp_path / 'cluster.yaml'}", "--num-cpus=0", "--num-gpus=0",
                   "--include-dashboard=false", f"--dashboard-agent-listen-port={_free_port()}"],
                  tmp_path / "head.log", {**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"},
                  ready=lambda: _gcs_answers(address))
    try:
        assert _gpu_nodes(address) == 0  # min_workers 0: nothing before the sweep
        seen: list[int] = []
        run = Cli(["sweep", *GPU_TRIALS, "--samples", "2", "--name", "autoscaled", "--address", address,
                   "--storage", str(tmp_path / "ray"), "--tracking-uri", mlflow_server.uri],
                  {**env, SHARED_ENV: str(tmp_path)})
        while run.proc.poll() is None:
            seen.append(_gpu_nodes(address))
            time.sleep(0.5)
        assert run.finish() == 0, run.output
        assert max(seen) == 2, seen  # one 1-CPU GPU worker per concurrent trial, up to max_workers
        _assert_complete(mlflow_server.uri, run.parent_run_id(), 2)
        deadline = time.monotonic() + 120
        while _gpu_nodes(address) > 0:  # idle_timeout_minutes: back down to the head alone
            assert time.monotonic() < deadline, (tmp_path / "head.log").read_text()[-3000:]
            time.sleep(1)
    finally:
        _stop(head)
        reset_ray_address()  # as `ray stop` would: a later plain `ray.init()` (under RAY_TMPDIR) starts its own


def _gcs_answers(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        _gpu_nodes(address)
        return True
    except Exception:
        return False


# ---- S3 storage, the driver killed ------------------------------------------------------------------------
def _s3_client(creds: dict[str, str]):
    import boto3

    return boto3.client("s3", endpoint_url=creds["AWS_ENDPOINT_URL"], aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"], region_name=creds["AWS_DEFAULT_REGION"])


@pytest.fixture
def s3(tmp_path: Path) -> dict[str, str]:
    """A local S3 server (moto) with a bucket `sweeps`; the environment that points clients at it."""
    port = _free_port()
    creds = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
             "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    server = _start([sys.executable, "-m", "moto.server", "-p", str(port)], tmp_path / "moto.log", dict(os.environ),
                    ready=lambda: _answers(f"{creds['AWS_ENDPOINT_URL']}/moto-api/"))
    _s3_client(creds).create_bucket(Bucket="sweeps")
    yield creds
    _stop(server)


@pytest.mark.slow
def test_s3_storage_survives_a_killed_driver(s3, env, tmp_path: Path) -> None:
    env = {**env, **s3}
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    run = Cli(["sweep", *CPU_TRIALS, "--samples", "4", "--max-concurrent", "2", "--name", "killed",
               "--storage", "s3://sweeps/sweeps"], env)
    run.wait_for(r"ended\)")  # a trial done...
    run.wait_for(r"report 2/", count=3)  # ...and a third one part-way
    os.kill(run.proc.pid, signal.SIGKILL)  # the driver dies; its local Ray goes with its process group
    _stop(run.proc)
    run.finish()

    done = Cli(["resume", "s3://sweeps/sweeps/killed"], env)
    assert done.finish() == 0, run.output + done.output
    _assert_complete(uri, done.parent_run_id(), 4)
    assert (tmp_path / "results" / "chaotic_10k" / "killed" / "regime_table.md").exists()
    keys = [o["Key"] for o in _s3_client(s3).list_objects_v2(Bucket="sweeps", Prefix="sweeps/killed/")["Contents"]]
    assert "sweeps/killed/tuner_sweep.json" in keys
    assert len({k.split("/checkpoint_")[0] for k in keys if "/checkpoint_" in k}) == 4  # each trial's last one


# ---- an MLflow server outage mid-sweep -------------------------------------------------------------------
@pytest.mark.slow
def test_mlflow_outage_loses_nothing_and_doubles_nothing(mlflow_server, env, tmp_path: Path) -> None:
    run = Cli(["sweep", *CPU_TRIALS, "--samples", "4", "--max-concurrent", "1", "--name", "outage",
               "--tracking-uri", mlflow_server.uri], env)
    run.wait_for(r"report 2/")
    mlflow_server.stop()  # down across a trial's end and the next trial's start
    down_at = len(run.lines)
    run.wait_for(r"started", count=2)
    run.wait_for(r"report 2/", count=2)
    mlflow_server.start()
    assert run.finish() == 0, run.output
    assert "MLflow flush failed" in "".join(run.lines[down_at:])  # the outage was seen, and outlived
    _assert_complete(mlflow_server.uri, run.parent_run_id(), 4)
