"""Shared fixtures: an isolated data cache and results folder, and one Ray instance with 2 fake GPUs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point the content-addressed data cache at a per-session folder (inherited by Ray workers)."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["TUNER_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def ray_2gpu(isolated_cache: Path):
    """A local Ray with 2 CPUs and 2 fake GPUs, shared by the sweep tests."""
    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh results folder (tables, MLflow sqlite store, Ray experiments) for one test."""
    path = tmp_path / "results"
    monkeypatch.setenv("TUNER_RESULTS", str(path))
    return path
