"""The fly visual-system connectome on a hexagonal lattice (spec §1.1, §4, §5.3).

The connectome description (cell types with their lattice pattern, type-to-type edges with column
offsets and mean synapse counts) is the JSON shipped inside the `flyvis` wheel. It is read here as a
data file located through the installed distribution's metadata: `flyvis` itself is never imported.
The lattice is rebuilt in flyvis' order (types in file order, then u, then v; edges per file entry,
per column offset, per source neuron), so per-type parameters of a flyvis checkpoint map by key.

Hex coordinates are oblique (u, v); a column lies within radius R when max(|u|, |v|, |u + v|) <= R.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import ConvexHull

CONNECTOME_FILE = "fib25-fib19_v2.2.json"
CHECKPOINT_EXTENT = 15  # the lattice the flyvis ensemble was trained on: the order of its parameter keys


def connectome_path() -> Path:
    """Path of the connectome JSON inside the installed `flyvis` distribution (not imported)."""
    try:
        dist = distribution("flyvis")
    except PackageNotFoundError as err:
        raise RuntimeError("the flyvis family reads its connectome from the `flyvis` wheel; install it with "
                           "`pip install --no-deps flyvis==1.2.0` (its dependencies are not needed)") from err
    for file in dist.files or []:
        if file.name == CONNECTOME_FILE:
            return Path(str(dist.locate_file(file)))
    raise RuntimeError(f"flyvis {dist.version} does not ship {CONNECTOME_FILE}")


@cache
def load_spec() -> dict[str, Any]:
    """The connectome JSON: nodes {name, pattern}, edges {src, tar, alpha, offsets}, input_units."""
    return json.loads(connectome_path().read_text())


def hex_radius(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Hex distance of columns (u, v) from the centre."""
    return np.maximum(np.maximum(np.abs(u), np.abs(v)), np.abs(u + v))


def hull_offsets(offsets: list[list[Any]], n_syn_fill: float) -> list[tuple[int, int, float]]:
    """The reported (du, dv, n_syn) offsets plus, with n_syn_fill, every lattice point inside their convex
    hull that was not reported (gaps in the data), listed in (du, dv) grid order."""
    known = [(int(du), int(dv), float(n)) for (du, dv), n in offsets]
    if n_syn_fill <= 0 or len(known) < 3:
        return known
    points = np.array([(du, dv) for du, dv, _ in known], dtype=float)
    hull = ConvexHull(points * (1 + 1e-6), qhull_options="QJ")       # joggled: collinear sets still work
    corners = points[hull.vertices]
    lo, hi = points.min(axis=0).astype(int), points.max(axis=0).astype(int)
    grid = np.stack(np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij"), -1)
    grid = grid.reshape(-1, 2)
    x, y = grid[:, 0].astype(float), grid[:, 1].astype(float)
    inside = np.zeros(len(grid), dtype=bool)
    # even-odd crossing test with half-open edges (y0 >= y), the convention that decides boundary points
    for (x0, y0), (x1, y1) in zip(corners, np.roll(corners, -1, axis=0)):
        above0, above1 = y0 >= y, y1 >= y
        inside ^= (above0 != above1) & (((y1 - y) * (x0 - x1) >= (x1 - x) * (y0 - y1)) == above1)
    seen = {(du, dv) for du, dv, _ in known}
    return known + [(int(du), int(dv), float(n_syn_fill)) for du, dv in grid[inside] if (du, dv) not in seen]


@dataclass(frozen=True)
class Connectome:
    """Nodes and directed edges j -> i of the lattice, with the keys that share parameters.

    types:       (N,) type index in file order (0..64); `type_names[types]` is the name
    labels:      (N,) type index in alphabetical order (the label used by the metrics, spec §1.1)
    u, v:        (N,) column of each neuron
    source, target: (E,) presynaptic j, postsynaptic i
    pair:        (E,) index into `pairs` (source type, target type)
    offset_key:  (E,) index into `offset_keys` (source type, target type, du, dv)
    sign, n_syn: (E,) the file's sign (alpha) and mean synapse count
    """

    extent: int
    type_names: tuple[str, ...]
    input_types: tuple[str, ...]
    types: np.ndarray
    labels: np.ndarray
    u: np.ndarray
    v: np.ndarray
    source: np.ndarray
    target: np.ndarray
    pair: np.ndarray
    offset_key: np.ndarray
    pairs: tuple[tuple[str, str], ...]
    offset_keys: tuple[tuple[str, str, int, int], ...]
    sign: np.ndarray
    n_syn: np.ndarray

    @property
    def n_neurons(self) -> int:
        return len(self.types)

    @property
    def n_edges(self) -> int:
        return len(self.source)

    @property
    def input_mask(self) -> np.ndarray:
        """(N,) True for the photoreceptors R1..R8, which receive the stimulus."""
        return np.isin(np.asarray(self.type_names)[self.types], self.input_types)

    def columns(self) -> tuple[np.ndarray, np.ndarray]:
        """(u, v) of the lattice columns in the photoreceptors' order; `column_of` indexes them."""
        first = self.types == self.types[self.input_mask][0]
        return self.u[first], self.v[first]

    def column_of(self) -> np.ndarray:
        """(N,) index of each input neuron's column (-1 for non-input neurons)."""
        cu, cv = self.columns()
        lookup = {(a, b): k for k, (a, b) in enumerate(zip(cu.tolist(), cv.tolist()))}
        out = np.full(self.n_neurons, -1)
        for i in np.flatnonzero(self.input_mask):
            out[i] = lookup[(int(self.u[i]), int(self.v[i]))]
        return out


def _lattice(extent: int, stride: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Columns of a strided population within radius `extent`, u-major then v."""
    cols = [(u, v) for u in range(-extent, extent + 1)
            for v in range(max(-extent, -extent - u), min(extent, extent - u) + 1)
            if u % stride[0] == 0 and v % stride[1] == 0]
    arr = np.array(cols, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


@cache
def build_connectome(extent: int, n_syn_fill: float = 1.0) -> Connectome:
    """The lattice of hex radius `extent` in flyvis' node and edge order (spec §5.3 counts)."""
    spec = load_spec()
    names = tuple(n["name"] for n in spec["nodes"])
    type_index = {name: k for k, name in enumerate(names)}
    us, vs, ts = [], [], []
    for k, node in enumerate(spec["nodes"]):
        pattern, args = node["pattern"]
        if pattern == "stride":
            stride = (int(args[0]), int(args[1]))
        elif pattern == "tile":
            stride = (int(args), int(args))
        else:  # "single": one neuron at the centre
            stride = (1, 1)
        u, v = _lattice(0 if pattern == "single" else extent, stride)
        us.append(u), vs.append(v), ts.append(np.full(len(u), k))
    u, v, types = np.concatenate(us), np.concatenate(vs), np.concatenate(ts)
    size = 2 * extent + 1
    lookup = np.full((len(names), size, size), -1, dtype=np.int64)    # (type, u + extent, v + extent) -> node
    lookup[types, u + extent, v + extent] = np.arange(len(types))
    start = np.searchsorted(types, np.arange(len(names) + 1))

    src, tgt, pair_idx, key_idx, sign, n_syn = [], [], [], [], [], []
    pairs: dict[tuple[str, str], int] = {}
    keys: dict[tuple[str, str, int, int], int] = {}
    for entry in spec["edges"]:
        s, t = type_index[entry["src"]], type_index[entry["tar"]]
        sources = np.arange(start[s], start[s + 1])
        for du, dv, count in hull_offsets(entry["offsets"], n_syn_fill):
            tu, tv = u[sources] + du, v[sources] + dv
            ok = (np.abs(tu) <= extent) & (np.abs(tv) <= extent)
            targets = np.full(len(sources), -1)
            targets[ok] = lookup[t, tu[ok] + extent, tv[ok] + extent]
            hit = targets >= 0
            if not hit.any():
                continue
            p = pairs.setdefault((entry["src"], entry["tar"]), len(pairs))
            q = keys.setdefault((entry["src"], entry["tar"], du, dv), len(keys))
            n = int(hit.sum())
            src.append(sources[hit]), tgt.append(targets[hit])
            pair_idx.append(np.full(n, p)), key_idx.append(np.full(n, q))
            sign.append(np.full(n, float(entry["alpha"]))), n_syn.append(np.full(n, count))
    alphabetical = {name: k for k, name in enumerate(sorted(names))}
    return Connectome(
        extent=extent, type_names=names, input_types=tuple(spec["input_units"]), types=types,
        labels=np.array([alphabetical[names[k]] for k in types]), u=u, v=v,
        source=np.concatenate(src), target=np.concatenate(tgt), pair=np.concatenate(pair_idx),
        offset_key=np.concatenate(key_idx), pairs=tuple(pairs), offset_keys=tuple(keys),
        sign=np.concatenate(sign), n_syn=np.concatenate(n_syn))


def sub_lattice(graph: Connectome, radius: int) -> Connectome:
    """The induced subgraph of the columns within hex radius `radius` (same keys, same order)."""
    keep = hex_radius(graph.u, graph.v) <= radius
    new_index = np.cumsum(keep) - 1
    edge_keep = keep[graph.source] & keep[graph.target]
    return Connectome(
        extent=radius, type_names=graph.type_names, input_types=graph.input_types, types=graph.types[keep],
        labels=graph.labels[keep], u=graph.u[keep], v=graph.v[keep],
        source=new_index[graph.source[edge_keep]], target=new_index[graph.target[edge_keep]],
        pair=graph.pair[edge_keep], offset_key=graph.offset_key[edge_keep], pairs=graph.pairs,
        offset_keys=graph.offset_keys, sign=graph.sign[edge_keep], n_syn=graph.n_syn[edge_keep])
