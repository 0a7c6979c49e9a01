"""Storage access: where results go, and every read or write of a sweep's Ray experiment folder.

A sweep's experiment lives at a local path or a URI (`s3://...`, `gs://...`); pyarrow's filesystems
reach both, and `filesystem(location)` is the one place that opens them.
"""

from __future__ import annotations

import os
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
