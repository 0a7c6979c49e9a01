"""Ray's state files kept as one consistent set, and put back as one when a full disk truncated one of them."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

from tuner.schedule import StorageGuard
from tuner.storage import (
    RESERVE_BYTES,
    SPACE_RESERVE,
    STATE_BACKUP,
    back_up_state,
    repair_state,
)


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


def test_the_guard_keeps_each_save_at_the_next_step_of_the_tune_loop(tmp_path: Path) -> None:
    """Ray saves its state at the loop's first step; a disk that fills a moment later (before the guard's next
    free-space check) must still find that save kept, or the sweep cannot be resumed (a CI failure)."""
    guard = StorageGuard([tmp_path], tmp_path, every_s=3600)
    guard.on_step_begin(0, [])  # nothing saved yet
    _save(tmp_path, 1)
    guard.on_step_begin(1, [])
    _save(tmp_path, 2, truncate=True)
    assert repair_state(tmp_path)[1] == []
    assert json.loads((tmp_path / "experiment_state-s.json").read_text()) == {"trials": 1}


def test_the_reserve_is_held_from_the_start_and_given_back_when_space_runs_low(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    """Another program taking every byte of the disk leaves the sweep the space it held for its last writes."""
    reserve = tmp_path / STATE_BACKUP / SPACE_RESERVE
    guard = StorageGuard([tmp_path], tmp_path, every_s=0)
    guard.setup()
    assert reserve.stat().st_blocks * 512 >= RESERVE_BYTES  # allocated, not a sparse promise
    monkeypatch.setenv("TUNER_MIN_FREE_MB", str(2**40))  # "the disk is full"
    guard.on_step_begin(1, [])
    assert guard.reason and not reserve.exists()
    guard.on_step_begin(2, [])
    assert not reserve.exists()  # not taken again while the sweep stops


def test_a_finished_experiment_leaves_no_reserve(tmp_path: Path) -> None:
    guard = StorageGuard([tmp_path], tmp_path, every_s=3600)
    guard.setup()
    assert (tmp_path / STATE_BACKUP / SPACE_RESERVE).exists()
    guard.on_experiment_end([])
    assert not (tmp_path / STATE_BACKUP / SPACE_RESERVE).exists()
