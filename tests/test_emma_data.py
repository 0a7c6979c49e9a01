"""Needle and ListOps-lite generators (spec §1-2): vocabulary, block placement, labels, seeding."""

from itertools import pairwise

import numpy as np
import pytest
import torch

from trainables.emma.data import (
    DIGIT0,
    LISTOPS_MAX_DEPTH,
    PAD,
    listops_arrays,
    needle_ids,
    train_set,
    val_set,
)
from trainables.emma.settings import LISTOPS_MAX_TOKENS, EmmaSettings, vocab_size


def test_preset_vocabulary_is_227():
    assert vocab_size(EmmaSettings()) == 227
    assert vocab_size(EmmaSettings(seq_len=768, n_pairs=4)) == 227
    assert needle_ids(96, 64) == {"S": 96, "END": 97, "Q": 98, "K0": 99, "V0": 163, "ANSWER": 96}


@pytest.mark.parametrize("length, n_pairs", [(256, 2), (64, 8), (768, 4)])
def test_needle_blocks_positions_and_label(length, n_pairs):
    s = EmmaSettings(seq_len=length, n_pairs=n_pairs, train_size=200)
    ids = needle_ids(s.vocab_extra, s.num_values)
    d = train_set(s, 0)
    tok = d.tokens.numpy()
    split = 3 * length // 4
    assert tok.shape == (200, length) and tok.max() < vocab_size(s)
    for i in range(200):
        starts = np.flatnonzero(tok[i] == ids["S"])
        starts = [p for p in starts if p + 3 < length and tok[i, p + 3] == ids["END"] and ids["K0"] <= tok[i, p + 1] < ids["V0"]]
        assert len(starts) == n_pairs                                   # every pair block is intact
        assert all(2 <= p < split for p in starts)
        assert all(b - a >= 4 for a, b in pairwise(starts))     # non-overlapping
        keys = [tok[i, p + 1] - ids["K0"] for p in starts]
        assert len(set(keys)) == n_pairs                                # distinct keys
        w, q = int(d.write_pos[i]), int(d.query_pos[i])
        assert w - 2 in starts and w <= split + 1 < q <= length - 1     # writes precede every query
        assert tok[i, w] == ids["V0"] + int(d.target[i])                # label = the queried value
        assert tok[i, w - 1] == ids["K0"] + int(d.key_id[i])
        assert list(tok[i, q - 2:q + 1]) == [ids["Q"], ids["K0"] + int(d.key_id[i]), ids["ANSWER"]]
        assert q - 2 >= split and all(q - 2 >= p + 4 or q + 1 <= p for p in starts)  # query block clear of pairs


def test_needle_fresh_per_epoch_and_seeded():
    s = EmmaSettings(train_size=32, val_size=16)
    assert torch.equal(train_set(s, 1).tokens, train_set(s, 1).tokens)
    assert not torch.equal(train_set(s, 0).tokens, train_set(s, 1).tokens)
    assert torch.equal(val_set(s, 0).tokens, val_set(s, 5).tokens)     # fixed validation set
    fresh = EmmaSettings(train_size=32, val_size=16, val_resample=True)
    assert not torch.equal(val_set(fresh, 0).tokens, val_set(fresh, 1).tokens)
    assert not torch.equal(val_set(s, 0).tokens[:, :16], train_set(s, 0).tokens[:16, :16])


def test_listops_label_is_the_max_digit():
    a = listops_arrays(3000, 512, np.random.default_rng(0))
    tok, y = a["tokens"], a["target"]
    for row, label in zip(tok[:500], y[:500]):
        digits = row[(row >= DIGIT0) & (row < DIGIT0 + 10)] - DIGIT0
        assert label == digits.max()
    lengths = (tok != PAD).sum(1)
    assert lengths.max() <= LISTOPS_MAX_TOKENS and LISTOPS_MAX_DEPTH == 3
    assert 0.52 < np.mean(y == 9) < 0.58                              # majority baseline about 55%
    assert 25 < lengths.mean() < 45                                    # spec: mean length 34
