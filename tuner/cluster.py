"""Cluster mode: what a sweep needs when its trials may run on other machines.

A sweep is in cluster mode when it connects to a running Ray cluster (`--address` or `RAY_ADDRESS`,
which `ray job submit` sets) or when its Ray has more than one alive node. Then, before anything is
written:
- `--storage` must be reachable from every node: a remote URI (`s3://`, `gs://`, ...), a path on a
  network filesystem (NFS/EFS, Lustre, CephFS, ... as /proc/mounts says), or a path under a directory
  listed in `TUNER_SHARED_STORAGE` (`os.pathsep`-separated: the opt-in for a mount every node sees);
- `--tracking-uri` must be an `http(s)://` MLflow server: a sqlite file lives on one machine only;
- `--study-storage`, when given, must be a database server (postgresql://, mysql://), for the same reason;
  without it the Optuna study lives in the searcher's state, saved with the Ray experiment;
- each trial may fail `CLUSTER_MAX_FAILURES` times (node lost, spot instance reclaimed) and resumes
  from its last checkpoint on another node. Locally a failing trial fails at once, so a bug shows.
"""

from __future__ import annotations

import os
from pathlib import Path

import ray

from tuner.validation import TunerInputError

SHARED_ENV = "TUNER_SHARED_STORAGE"
REMOTE_SCHEMES = frozenset({"s3", "gs", "gcs", "hdfs", "abfs", "abfss"})
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "lustre", "ceph", "glusterfs", "fuse.glusterfs",
                                 "gpfs", "beegfs", "fuse.juicefs"})
CLUSTER_MAX_FAILURES = 3


def cluster_reason(address: str | None) -> str | None:
    """Why this sweep is in cluster mode (for messages), or None when it runs on one machine."""
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    if nodes > 1:
        return f"the Ray cluster has {nodes} alive nodes"
    if address or os.environ.get("RAY_ADDRESS"):
        return f"it connects to the Ray cluster at {address or os.environ['RAY_ADDRESS']}"
    return None


def _filesystem_type(path: Path) -> str:
    """Type of the filesystem mounted deepest above `path`, from /proc/mounts ('' when unknown)."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return ""
    above = [(mount, kind) for mount, kind in mounts if path == Path(mount) or Path(mount) in path.parents]
    return max(above, key=lambda m: len(m[0]), default=("", ""))[1]


def storage_is_shared(storage: str) -> bool:
    """Whether every node of a cluster reaches `storage` (the rule in this module's docstring)."""
    if "://" in storage:
        return storage.split("://", 1)[0].lower() in REMOTE_SCHEMES
    path = Path(storage).expanduser().resolve()
    roots = [Path(p).expanduser().resolve() for p in os.environ.get(SHARED_ENV, "").split(os.pathsep) if p]
    return any(path == root or root in path.parents for root in roots) or _filesystem_type(path) in NETWORK_FILESYSTEMS


def check_cluster_inputs(storage: str, tracking_uri: str, study_storage: str | None, reason: str) -> None:
    """Refuse, with what to pass instead, storage or tracking that the cluster's nodes cannot share."""
    if not storage_is_shared(storage):
        raise TunerInputError(
            f"--storage: {storage} is not storage every node reaches, and {reason}: trials on other nodes could "
            f"not write their checkpoints there. Pass --storage s3://BUCKET/PREFIX (or gs://...), a path on a "
            f"network filesystem (NFS/EFS) mounted on every node, or declare such a mount with "
            f"{SHARED_ENV}=/path/to/mount.")
    if not tracking_uri.startswith(("http://", "https://")):
        raise TunerInputError(
            f"--tracking-uri: {tracking_uri} is a store on this machine only, and {reason}. Pass the URL of an "
            f"MLflow server, e.g. --tracking-uri http://HOST:5000 (start one with: mlflow server "
            f"--backend-store-uri sqlite:///mlflow.db --artifacts-destination s3://BUCKET/mlflow --host 0.0.0.0 "
            f"--port 5000).")
    if study_storage is not None and study_storage.startswith("sqlite"):
        raise TunerInputError(
            f"--study-storage: {study_storage} is a database on this machine only, and {reason}. Pass a database "
            f"server every node and the driver reach, e.g. --study-storage postgresql://USER:PASSWORD@HOST/optuna.")
