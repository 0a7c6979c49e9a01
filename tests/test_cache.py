import multiprocessing as mp
import os
import time

import numpy as np

from tuner.cache import cache_root, cached_arrays, key_digest


def _build(counter):
    def build():
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(1.0)  # long enough for the other process to ask meanwhile
        return {"x": np.arange(10.0), "y": np.eye(3, dtype=np.float32)}
    return build


def _ask(counter, cache_dir, out):
    os.environ["TUNER_CACHE_DIR"] = cache_dir
    arrays = cached_arrays("test", {"a": 1, "b": [1, 2]}, _build(counter))
    np.savez(out, **arrays)


def test_builds_once_and_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / "cache"))
    counter = tmp_path / "count"
    first = cached_arrays("test", {"a": 1, "b": [1, 2]}, _build(counter))
    second = cached_arrays("test", {"b": [1, 2], "a": 1}, _build(counter))  # same key, other order
    assert counter.read_text().count("built") == 1
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
        assert first[name].dtype == second[name].dtype
    cached_arrays("test", {"a": 2, "b": [1, 2]}, _build(counter))  # other key: built again
    assert counter.read_text().count("built") == 2
    assert cache_root() == tmp_path / "cache"
    assert (tmp_path / "cache" / "test" / f"{key_digest({'a': 1, 'b': [1, 2]})}.npz").exists()


def test_two_processes_build_once(tmp_path):
    counter, cache_dir = tmp_path / "count", str(tmp_path / "cache")
    ctx = mp.get_context("spawn")
    outs = [tmp_path / f"out{i}.npz" for i in range(2)]
    procs = [ctx.Process(target=_ask, args=(counter, cache_dir, out)) for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert counter.read_text().count("built") == 1
    with np.load(outs[0]) as a, np.load(outs[1]) as b:
        for name in ("x", "y"):
            np.testing.assert_array_equal(a[name], b[name])


def test_each_node_regenerates_the_same_data(tmp_path, monkeypatch):
    """Cluster nodes do not share a cache: each builds its own, and the same key gives the same arrays."""
    from trainables.signal.settings import SignalSettings
    from trainables.signal.simulate import load_or_simulate

    settings = SignalSettings().model_dump() | {"n_neurons": 20, "n_frames": 300, "noise_model_level": 0.1}
    built = []
    for node in ("node1", "node2"):
        monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / node))
        built.append(load_or_simulate(settings))
        assert len(list((tmp_path / node / "signal").glob("*.npz"))) == 1
    assert built[0].keys() == built[1].keys()
    for name in built[0]:
        np.testing.assert_array_equal(built[0][name], built[1][name])
