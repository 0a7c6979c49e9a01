"""A `Session` for family tests: it keeps every report and checkpoint, and can stop the run after some reports."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path


class Interrupted(Exception):
    """Raised by `Recorder` after `stop_after` reports, as a killed trial would stop."""


class Recorder:
    """Every report in `history`, every checkpoint saved under `folder/report<N>` (listed in `saved`)."""

    def __init__(self, folder: Path, checkpoint: Path | None = None, stop_after: int | None = None):
        self.folder, self.checkpoint, self.stop_after = folder, checkpoint, stop_after
        self.history: list[dict] = []
        self.saved: list[Path] = []

    def report(self, metrics: Mapping[str, float], save: Callable[[Path], None] | None = None) -> None:
        self.history.append(dict(metrics))
        if save is not None:
            self.saved.append(self.folder / f"report{len(self.history)}")
            self.saved[-1].mkdir(parents=True)
            save(self.saved[-1])
        if len(self.history) == self.stop_after:
            raise Interrupted
