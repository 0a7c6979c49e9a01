"""What runs inside a Ray trial: the `Session` a family sees, and the function trainable around `Family.run`."""

from __future__ import annotations

import logging
import signal
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune

from tuner.family import get_family
from tuner.space import SearchSpace
from tuner.storage import is_storage_full

SPACE_RETRY_S = 5.0  # a trial whose checkpoint found the disk full tries again this often


def ignore_terminal_interrupts() -> None:
    """Ray worker setup hook (local Ray): a Ctrl-C in the terminal reaches every process of its group, but only
    the driver should act on it (Ray then stops the trials); workers would print KeyboardInterrupt tracebacks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class RaySession:
    """The `Session` a family sees inside a Ray trial: reports and checkpoints go through ray.tune."""

    def __init__(self) -> None:
        ckpt = tune.get_checkpoint()
        self._checkpoint = Path(ckpt.to_directory()) if ckpt is not None else None

    @property
    def checkpoint(self) -> Path | None:
        return self._checkpoint

    def report(self, metrics: Mapping[str, float], save: Callable[[Path], None] | None = None) -> None:
        """Report `metrics` with a checkpoint written by `save`. While the disk is full the trial waits and
        retries (nothing is lost): the driver's `StorageGuard` stops the sweep for a resume, or space returns."""
        result = {**metrics, "ray_gpus": float(len(ray.get_gpu_ids()))}  # GPUs Ray assigned to this trial
        if save is None:
            tune.report(result)
            return
        waiting = False
        while True:
            try:
                with tempfile.TemporaryDirectory() as d:
                    save(Path(d))
                    tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
                return
            except OSError as err:  # a full disk is not the trial's fault: wait; the driver stops the sweep
                if not is_storage_full(err):
                    raise
                if not waiting:
                    print(f"trial waits for disk space to store its checkpoint: {err}", flush=True)
                waiting = True
                time.sleep(SPACE_RETRY_S)


def make_trainable(space: Mapping[str, Any], base: Mapping[str, Any], resources: Mapping[str, float]) -> Any:
    """The Ray function trainable of a sweep over `space` (a dumped SearchSpace) with `base` settings:
    each trial resolves its settings and runs the family, with `resources` per trial."""
    family_name, space_data, base_settings = space["family"], dict(space), dict(base)

    def trial(config: dict[str, Any]) -> None:
        logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per report
        family = get_family(family_name)
        settings = SearchSpace.model_validate(space_data).trial_settings(base_settings, config, family)
        family.run(settings, RaySession())

    trial.__name__ = family_name
    return tune.with_resources(trial, dict(resources))
