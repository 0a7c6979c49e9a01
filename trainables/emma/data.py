"""Needle-in-a-Haystack (spec §1) and ListOps-lite (spec §2) generators, seeded with numpy.

The reference draws every sample on the fly from Python's global `random`, so each epoch sees fresh
training and validation samples. Here epoch e's training set is drawn from the seed sequence
(seed, e) — fresh every epoch, as in the reference, and reproducible on resume without RNG state.
Validation is one fixed draw from seed + 1, or a fresh draw (seed + 1, e) per epoch (`val_resample`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainables.emma.settings import EmmaSettings

# ListOps-lite token ids (spec §2)
PAD, DIGIT0, MAX_OP, MIN_OP, OPEN, CLOSE = 0, 1, 11, 12, 13, 14
LISTOPS_MAX_DEPTH, LISTOPS_MAX_ITEMS, LISTOPS_LEAF_P = 3, 6, 0.4


@dataclass
class Batch:
    """A batch of sequences; needle fields are None for ListOps."""

    tokens: torch.Tensor                   # (B, L) long
    target: torch.Tensor                   # (B,) class: value id (needle) or max digit (listops)
    key_id: torch.Tensor | None = None     # (B,) queried key id in [0, N)
    write_pos: torch.Tensor | None = None  # (B,) position of the queried pair's value token
    query_pos: torch.Tensor | None = None  # (B,) position of the "?" token

    def __len__(self) -> int:
        return len(self.tokens)

    def to(self, device: torch.device) -> Batch:
        return Batch(*(None if t is None else t.to(device) for t in
                       (self.tokens, self.target, self.key_id, self.write_pos, self.query_pos)))

    def rows(self, index: slice | torch.Tensor) -> Batch:
        """The sub-batch of the given rows."""
        return Batch(*(None if t is None else t[index] for t in
                       (self.tokens, self.target, self.key_id, self.write_pos, self.query_pos)))


def needle_ids(vocab_extra: int, num_values: int) -> dict[str, int]:
    """Special ids: S = E, E_tok = E+1, Q = E+2, keys from K0 = E+3, values from V0 = K0+N; "?" = S (quirk §7.9)."""
    e = vocab_extra
    return {"S": e, "END": e + 1, "Q": e + 2, "K0": e + 3, "V0": e + 3 + num_values, "ANSWER": e}


def _free_start(occupied: np.ndarray, low: int, high: int, width: int, rng: np.random.Generator) -> int:
    """A start p in [low, high) with occupied[p:p+width] free: 200 random tries, then a linear scan."""
    for _ in range(200):
        p = int(rng.integers(low, high))
        if not occupied[p:p + width].any():
            return p
    for p in range(low, high):
        if not occupied[p:p + width].any():
            return p
    raise RuntimeError(f"no free {width}-token block in [{low}, {high})")


def needle_arrays(n: int, length: int, num_values: int, vocab_extra: int, n_pairs: int, decouple_kv: bool,
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n Needle samples (spec §1): tokens (n, L), key_id, write_pos, query_pos, target (n,)."""
    ids = needle_ids(vocab_extra, num_values)
    tokens = rng.integers(0, vocab_extra, size=(n, length))              # filler 0..E-1, i.i.d.
    key_id, write_pos, query_pos, target = (np.empty(n, dtype=np.int64) for _ in range(4))
    split = 3 * length // 4
    for i in range(n):
        occupied = np.zeros(length + 4, dtype=bool)
        keys = rng.choice(num_values, size=min(n_pairs, num_values), replace=False)    # distinct keys
        values = rng.integers(0, num_values, size=len(keys)) if decouple_kv else keys  # values may repeat
        positions = []
        for k, v in zip(keys, values):
            p = _free_start(occupied, 2, split, 4, rng)                  # p in [2, 3L/4), no overlap
            occupied[p:p + 4] = True
            tokens[i, p:p + 4] = (ids["S"], ids["K0"] + k, ids["V0"] + v, ids["END"])
            positions.append(p + 2)                                      # the value token
        j = int(rng.integers(len(keys)))                                 # queried pair
        p1 = _free_start(occupied, split, length - 3, 3, rng)            # [3L/4, L-3), clear of pair blocks
        tokens[i, p1:p1 + 3] = (ids["Q"], ids["K0"] + keys[j], ids["ANSWER"])
        key_id[i], write_pos[i], query_pos[i], target[i] = keys[j], positions[j], p1 + 2, values[j]
    return {"tokens": tokens, "key_id": key_id, "write_pos": write_pos, "query_pos": query_pos, "target": target}


def listops_expression(rng: np.random.Generator, depth: int = 0) -> list[int]:
    """One ListOps-lite expression: a digit leaf (depth >= 3 or p = 0.4), else [ op child*2..6 ]."""
    if depth >= LISTOPS_MAX_DEPTH or rng.random() < LISTOPS_LEAF_P:
        return [DIGIT0 + int(rng.integers(10))]
    out = [OPEN, int(rng.choice([MAX_OP, MIN_OP]))]
    for _ in range(int(rng.integers(2, LISTOPS_MAX_ITEMS + 1))):
        out += listops_expression(rng, depth + 1)
    return out + [CLOSE]


def listops_arrays(n: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n ListOps-lite samples (spec §2): tokens right-padded with PAD to L, target = max digit (ops ignored)."""
    tokens = np.full((n, length), PAD, dtype=np.int64)
    target = np.empty(n, dtype=np.int64)
    for i in range(n):
        expr = listops_expression(rng)
        tokens[i, :len(expr)] = expr[:length]
        target[i] = max(t - DIGIT0 for t in expr if DIGIT0 <= t < DIGIT0 + 10)   # label = max digit
    return {"tokens": tokens, "target": target}


def generate(s: EmmaSettings, n: int, seed: list[int]) -> Batch:
    """n samples of the settings' task from the seed sequence `seed`."""
    rng = np.random.default_rng(seed)
    if s.task == "needle":
        a = needle_arrays(n, s.seq_len, s.num_values, s.vocab_extra, s.n_pairs, s.decouple_kv, rng)
        return Batch(*(torch.from_numpy(a[k]) for k in ("tokens", "target", "key_id", "write_pos", "query_pos")))
    a = listops_arrays(n, s.seq_len, rng)
    return Batch(torch.from_numpy(a["tokens"]), torch.from_numpy(a["target"]))


def train_set(s: EmmaSettings, epoch: int) -> Batch:
    """The fresh training samples of 0-based `epoch`."""
    return generate(s, s.train_size, [s.seed, epoch])


def val_set(s: EmmaSettings, epoch: int) -> Batch:
    """The validation samples scored after `epoch`: fixed (seed + 1), or fresh per epoch with `val_resample`."""
    return generate(s, s.val_size, [s.seed + 1, epoch] if s.val_resample else [s.seed + 1])


def batches(data: Batch, batch_size: int, order: torch.Tensor | None = None) -> list[Batch]:
    """Consecutive batches of `data`, in `order` when given (the training shuffle)."""
    if order is not None:
        data = data.rows(order)
    return [data.rows(slice(i, i + batch_size)) for i in range(0, len(data), batch_size)]
