import pytest


@pytest.fixture(scope="session")
def _session_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tuner-cache")


@pytest.fixture(autouse=True)
def tuner_cache_dir(_session_cache_dir, monkeypatch):
    """Keep the data cache of tests out of ~/.cache: one temporary cache per test session."""
    monkeypatch.setenv("TUNER_CACHE_DIR", str(_session_cache_dir))
    return _session_cache_dir
