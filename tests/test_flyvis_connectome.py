"""The flyvis lattice (spec §1.1, §5.3) and the ground-truth parameters mapped from the checkpoint (spec §4)."""

import numpy as np
import pytest
import torch

from trainables.flyvis.connectome import build_connectome, hex_radius, hull_offsets, sub_lattice
from trainables.flyvis.settings import DEFAULT_CHECKPOINT, FlyVisSettings, checkpoint_file
from trainables.flyvis.simulate import checkpoint_parameters, sampled_parameters

COUNTS = {1: (443, 8174), 2: (1203, 28904), 3: (2345, 63209), 4: (3865, 110794), 6: (8051, 246109),
          8: (13741, 434112)}
needs_checkpoint = pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="no shared flyvis checkpoint")


@pytest.mark.parametrize("extent", sorted(COUNTS))
def test_lattice_counts(extent):
    graph = build_connectome(extent)
    assert (graph.n_neurons, graph.n_edges) == COUNTS[extent]
    assert len(np.unique(graph.types)) == 65
    assert len(np.unique(graph.labels)) == 65


def test_full_lattice_structure():
    graph = build_connectome(8)
    assert (graph.source == graph.target).sum() == 3724
    per_type = np.bincount(graph.types)
    assert sorted(set(per_type)) == [35, 217]
    assert graph.input_mask[:1736].all() and not graph.input_mask[1736:].any()   # R1..R8 first
    in_degree = np.bincount(graph.target, minlength=graph.n_neurons)
    assert (np.median(in_degree), in_degree.max(), (in_degree == 0).sum()) == (19, 208, 44)
    names = np.asarray(graph.type_names)[graph.types]
    assert graph.labels[names == "Am"][0] == 0 and graph.labels[names == "TmY9"][0] == 64   # alphabetical


def test_sub_lattice_is_the_smaller_extent():
    cut, small = sub_lattice(build_connectome(8), 3), build_connectome(3)
    assert np.array_equal(cut.types, small.types) and np.array_equal(cut.u, small.u)
    assert np.array_equal(cut.source, small.source) and np.array_equal(cut.target, small.target)
    assert [cut.offset_keys[k] for k in cut.offset_key] == [small.offset_keys[k] for k in small.offset_key]


def test_offset_keys_per_extent():
    assert len(build_connectome(3).offset_keys) == 2353        # two (pair, offset) keys vanish at extent 3
    assert len(build_connectome(4).offset_keys) == 2355
    assert len(build_connectome(4).pairs) == 604


def test_hull_fill_adds_interior_gaps_only():
    square = [[[-2, 0], 5], [[2, 0], 5], [[0, -2], 5], [[0, 2], 5]]
    filled = hull_offsets(square, 1.0)
    assert filled[:4] == [(-2, 0, 5.0), (2, 0, 5.0), (0, -2, 5.0), (0, 2, 5.0)]
    added = {(du, dv) for du, dv, n in filled[4:]}
    assert (0, 0) in added and (1, 1) in added and (2, 2) not in added
    assert all(n == 1.0 for _, _, n in filled[4:])
    assert hull_offsets(square, 0.0) == filled[:4]


@needs_checkpoint
def test_checkpoint_maps_by_key():
    state = torch.load(DEFAULT_CHECKPOINT, map_location="cpu", weights_only=True)["network"]
    graph = build_connectome(8)
    params = checkpoint_parameters(graph, DEFAULT_CHECKPOINT)
    names = list(graph.type_names)
    l1 = graph.types == names.index("L1")
    assert np.allclose(params["tau"][l1], state["nodes_time_const"][names.index("L1")].item())
    assert np.allclose(params["V_rest"][l1], state["nodes_bias"][names.index("L1")].item())
    # R1 -> L1 at offset (0, 0): the first pair and the first (pair, offset) key of the trained lattice
    edge = np.flatnonzero((graph.source < 217) & np.isin(graph.target, np.flatnonzero(l1)))[0]
    expected = state["edges_sign"][0] * state["edges_syn_count"][0].exp() * state["edges_syn_strength"][0]
    assert params["W"][edge] == pytest.approx(expected.item(), rel=1e-6)
    assert np.exp(state["edges_syn_count"][0].item()) == pytest.approx(40.0, rel=1e-5)   # the file's count
    w = params["W"]
    assert (w.min(), w.max()) == pytest.approx((-1.503, 4.173), abs=1e-3)
    assert (w < 0).mean() == pytest.approx(0.348, abs=1e-3)
    assert len(np.unique(params["tau"])) == 65


@needs_checkpoint
def test_small_extent_parameters_agree_with_the_cut():
    full, small = build_connectome(8), build_connectome(3)
    w_full = checkpoint_parameters(full, DEFAULT_CHECKPOINT)["W"]
    by_edge = dict(zip(zip(full.source.tolist(), full.target.tolist()), w_full.tolist()))
    old = np.flatnonzero(hex_radius(full.u, full.v) <= 3)                 # small index -> full index
    w_small = checkpoint_parameters(small, DEFAULT_CHECKPOINT)["W"]
    assert np.allclose(w_small, [by_edge[(old[j], old[i])] for j, i in zip(small.source, small.target)])


def test_sampled_parameters_are_type_shared_and_seeded():
    graph = build_connectome(2)
    a, b, c = (sampled_parameters(graph, seed) for seed in (0, 0, 1))
    assert np.array_equal(a["W"], b["W"]) and not np.array_equal(a["W"], c["W"])
    for name in ("tau", "V_rest"):
        per_type = [np.unique(a[name][graph.types == t]) for t in range(65)]
        assert all(len(u) == 1 for u in per_type)
    assert np.array_equal(np.sign(a["W"][a["W"] != 0]), graph.sign[a["W"] != 0])


def test_checkpoint_file_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("TUNER_FLYVIS_CHECKPOINT", raising=False)
    assert checkpoint_file(FlyVisSettings(params_source="sampled")) is None
    fake = tmp_path / "best_chkpt"
    fake.write_bytes(b"x")
    monkeypatch.setenv("TUNER_FLYVIS_CHECKPOINT", str(fake))
    assert checkpoint_file(FlyVisSettings()) == fake
