"""Ray's state files kept as one consistent set, and put back as one when a full disk truncated one of them."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

from tuner.storage import back_up_state, repair_state


def _save(experiment: Path, n: int, truncate: bool = False) -> None:
    """What one of Ray's saves writes: every state file, counters agreeing (optionally one cut short)."""
    state = json.dumps({"trials": n})
    (experiment / "experiment_state-s.json").write_text(state[:-3] if truncate else state)
    (experiment / "searcher-state-s.pkl").write_bytes(pickle.dumps({"asked": n}))
    (experiment / "search_gen_state-s.json").write_bytes(pickle.dumps({"counter": n}))
    stamp = 1_000_000_000 * (1 + n)
    for f in experiment.iterdir():
        if f.is_file():
            os.utime(f, ns=(stamp, stamp))


def test_a_truncated_state_file_brings_back_the_whole_last_complete_save(tmp_path: Path) -> None:
    _save(tmp_path, 7)
    back_up_state(tmp_path)
    _save(tmp_path, 8, truncate=True)  # the disk filled while the experiment state was written
    back_up_state(tmp_path)  # a truncated save is never kept
    repaired, broken = repair_state(tmp_path)
    assert broken == [] and repaired == ["experiment_state-s.json", "search_gen_state-s.json",
                                         "searcher-state-s.pkl"]
    assert json.loads((tmp_path / "experiment_state-s.json").read_text()) == {"trials": 7}
    assert pickle.loads((tmp_path / "search_gen_state-s.json").read_bytes()) == {"counter": 7}  # not 8: one save


def test_complete_state_is_left_alone_and_nothing_kept_is_reported(tmp_path: Path) -> None:
    _save(tmp_path, 3)
    assert repair_state(tmp_path) == ([], [])
    _save(tmp_path, 4, truncate=True)
    assert repair_state(tmp_path) == ([], ["experiment_state-s.json"])  # no kept set: resume refuses
