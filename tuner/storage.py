"""Storage access: where results go, and every read or write of a sweep's Ray experiment folder.

A sweep's experiment lives at a local path or a URI (`s3://...`, `gs://...`); pyarrow's filesystems
reach both, and `filesystem(location)` is the one place that opens them.
"""

from __future__ import annotations

import errno
import json
import os
import pickletools
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pyarrow import fs as pafs

from tuner.validation import TunerInputError


def results_dir() -> Path:
    """Where tables (and, by default, the MLflow store and Ray experiments) go: $TUNER_RESULTS or ./results."""
    return Path(os.environ.get("TUNER_RESULTS", "results")).absolute()


def unwritable_reason(folder: Path) -> str | None:
    """Why files cannot be written under `folder` (created if needed), or None. Leaves nothing behind:
    it makes and removes a scratch folder in the deepest existing ancestor."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{folder}: {existing} is not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".tuner-write-check-"))
    except OSError as err:
        return f"{folder} cannot be written ({err.strerror or err} in {existing})"
    return None


MIN_FREE_ENV = "TUNER_MIN_FREE_MB"  # the free space a sweep keeps in its results folder, in MiB
STORAGE_FULL_MARKERS = ("no space left on device", "database or disk is full", "disk quota exceeded")


def min_free_bytes() -> int:
    """The free space (bytes) below which a sweep does not start, and a running one stops for `resume`."""
    return int(float(os.environ.get(MIN_FREE_ENV, "100")) * 2**20)


def free_bytes(folder: Path) -> int:
    """Free bytes on the filesystem that holds `folder` (or its deepest existing ancestor)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def low_space_reason(folder: Path) -> str | None:
    """'<folder> has N MiB free (below the M MiB a sweep keeps: TUNER_MIN_FREE_MB)', or None."""
    free, needed = free_bytes(folder), min_free_bytes()
    if free >= needed:
        return None
    return (f"{folder} has {free / 2**20:.1f} MiB free (below the {needed / 2**20:.0f} MiB a sweep keeps: "
            f"{MIN_FREE_ENV})")


def is_storage_full(err: BaseException) -> bool:
    """Whether `err`, or an error it was raised from, says the disk (or quota) is full: OSError ENOSPC/EDQUOT,
    sqlite's 'database or disk is full', or such an error carried as text (a Ray task error from a worker)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(marker in str(err).lower() for marker in STORAGE_FULL_MARKERS):
            return True
        err = err.__cause__ or err.__context__
    return False


# Ray's state files at the top of an experiment folder, rewritten in place (all in one save) while a sweep runs
RAY_STATE_PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl",
                      "callback-states-*.pkl")
STATE_BACKUP = ".restorable"  # <experiment>/.restorable/<mtime_ns>/: the last complete, consistent set of them
ONE_SAVE_NS = 1_000_000_000  # files of one save are written within this of each other
SPACE_RESERVE = "reserve"  # <experiment>/.restorable/reserve: disk space held back for the sweep's last writes
RESERVE_BYTES = 8 * 2**20


def _complete(path: Path) -> bool:
    """Whether a JSON or pickle file is whole (a write cut short by a full disk leaves it truncated)."""
    try:
        data = path.read_bytes()
        if data.startswith(b"\x80"):  # a pickle (Ray's search_gen_state "json" is one too)
            return list(pickletools.genops(data))[-1][0].name == "STOP"
        json.loads(data)
        return True
    except (OSError, ValueError, IndexError):
        return False


def _state_files(experiment: Path) -> list[Path]:
    """The state files Ray restores from: the newest (by name, as Ray picks them) of each kind."""
    return [max(found) for found in (sorted(experiment.glob(p)) for p in RAY_STATE_PATTERNS) if found]


def _snapshots(experiment: Path) -> list[Path]:
    """The kept sets of state files, oldest first."""
    backup = experiment / STATE_BACKUP
    return sorted((d for d in backup.iterdir() if d.name.isdigit()), key=lambda d: int(d.name)) \
        if backup.is_dir() else []


def back_up_state(experiment: Path) -> None:
    """Keep the last complete set of Ray's state files from one save in `experiment/.restorable/<stamp>/`: the
    files are copied, checked to parse and not to have changed meanwhile, then the folder is renamed into place
    and older sets removed, so a full disk never leaves a truncated or mixed set. Local experiment folders only."""
    files = _state_files(experiment)
    if not files:
        return
    before = [f.stat().st_mtime_ns for f in files]
    stamp = max(before)
    kept = _snapshots(experiment)
    if (kept and int(kept[-1].name) >= stamp) or stamp - min(before) > ONE_SAVE_NS:
        return  # already kept, or a save is being written
    fresh = experiment / STATE_BACKUP / f".{stamp}.tmp"
    try:
        fresh.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, fresh / f.name)
        if [f.stat().st_mtime_ns for f in files] == before and all(_complete(fresh / f.name) for f in files):
            fresh.rename(fresh.with_name(str(stamp)))
            for old in kept:
                shutil.rmtree(old, ignore_errors=True)
    except OSError:  # no space for the copy: the previous set stays
        pass
    shutil.rmtree(fresh, ignore_errors=True)


def hold_reserve(experiment: Path) -> None:
    """Hold RESERVE_BYTES of the experiment's disk (allocated blocks, not a sparse file) until `release_reserve`:
    a disk filled to the last byte by another program then still has room for Ray's final save of its state
    and the stores' last writes when the sweep stops. Nothing is held where there is no room for it."""
    reserve = experiment / STATE_BACKUP / SPACE_RESERVE
    if reserve.exists():
        return
    try:
        reserve.parent.mkdir(parents=True, exist_ok=True)
        with open(reserve, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
    except OSError:
        reserve.unlink(missing_ok=True)


def release_reserve(experiment: Path) -> None:
    """Give back the space `hold_reserve` held."""
    (experiment / STATE_BACKUP / SPACE_RESERVE).unlink(missing_ok=True)


def repair_state(experiment: Path) -> tuple[list[str], list[str]]:
    """When a full disk truncated one of Ray's state files in `experiment`, put back the whole last kept set
    (state files from different saves disagree, e.g. on how many trials were created). Returns the names put
    back, and the truncated ones when no set was kept."""
    broken = [f.name for f in _state_files(experiment) if not _complete(f)]
    kept = _snapshots(experiment)
    if not broken or not kept:
        return [], broken
    for f in sorted(kept[-1].iterdir()):
        shutil.copy2(f, experiment / f.name)
    return sorted(f.name for f in kept[-1].iterdir()), []


def check_store_url(url: str, flag: str, schemes: Sequence[str], example: str) -> str:
    """The scheme of a store's URL (`postgresql+psycopg://` -> 'postgresql'). Raises TunerInputError naming
    `flag` for a scheme not in `schemes`, or for a sqlite file in a folder that cannot be written."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme not in schemes:
        raise TunerInputError(f"{flag}: {url!r} has none of the schemes allowed here: "
                              f"{', '.join(s + '://' for s in schemes)} (e.g. {example})")
    if scheme == "sqlite":
        problem = unwritable_reason(Path(url.removeprefix("sqlite:///")).parent)
        if problem:
            raise TunerInputError(f"{flag}: {url}: the database's folder {problem}")
    return scheme


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding `location` (a local path or a URI) and the path inside it."""
    return pafs.FileSystem.from_uri(location if "://" in location else str(Path(location).absolute()))


def exists(location: str) -> bool:
    """Whether anything (file or folder) is at `location`."""
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def write_text(location: str, name: str, text: str) -> None:
    """Write `text` to the file `name` inside the folder `location`, creating the folder."""
    fs, path = filesystem(location)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path.rstrip('/')}/{name}") as out:
        out.write(text.encode())


def read_text(location: str, name: str) -> str:
    """The text of the file `name` inside the folder `location` (FileNotFoundError/OSError if absent)."""
    fs, path = filesystem(location)
    with fs.open_input_stream(f"{path.rstrip('/')}/{name}") as f:
        return f.read().decode()


def prune_checkpoints(experiment: str, trial_ids: set[str]) -> None:
    """Keep each trial's last checkpoint only, and drop the folders of lost trials (started after the last
    experiment state a killed driver stored). While a sweep runs, every checkpoint is kept: Ray deletes an
    old one before the experiment state that stops pointing at it is stored, so after a killed driver a
    trial could otherwise have to resume from a checkpoint that is gone."""
    fs, root = filesystem(experiment)
    for folder in fs.get_file_info(pafs.FileSelector(root)):
        if folder.type != pafs.FileType.Directory:
            continue
        saved = sorted(c.path for c in fs.get_file_info(pafs.FileSelector(folder.path))
                       if c.base_name.startswith("checkpoint_"))
        if folder.base_name not in trial_ids:
            if saved:  # a lost trial's folder
                fs.delete_dir(folder.path)
            continue
        for path in saved[:-1]:
            fs.delete_dir(path)
