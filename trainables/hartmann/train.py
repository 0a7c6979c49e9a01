"""One `hartmann` trial: observe f(x, z) at the fidelities z = 1/n, 2/n, ..., 1, one report each."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import numpy as np

from trainables.hartmann.functions import F_MIN, argmin_distance, hartmann, regret
from trainables.hartmann.settings import HartmannSettings
from tuner.family import Session

CHECKPOINT_FILE = "progress.json"


def observation_noise(s: HartmannSettings, x: np.ndarray) -> np.ndarray:
    """The noise of each report, N(0, noise^2), seeded by `seed` and the point's exact bits: the same point and
    seed give the same values (a resumed trial too), two points of one sweep get independent noise."""
    entropy = [s.seed, *(int(bits) for bits in x.view(np.uint64))]
    return np.random.default_rng(np.random.SeedSequence(entropy)).normal(0.0, s.noise, size=s.n_reports)


def save_progress(directory: Path, reports_done: int) -> None:
    """The checkpoint: how many reports were made."""
    (Path(directory) / CHECKPOINT_FILE).write_text(json.dumps({"reports_done": reports_done}))


def run(s: HartmannSettings, session: Session) -> None:
    """Report `n_reports` times, report i at fidelity z = i/n; resumes after the reports of `session.checkpoint`."""
    # ---- the point and its noise ----
    x = s.point()
    noise = observation_noise(s, x)

    # ---- resume ----
    done = 0
    if session.checkpoint is not None:
        done = json.loads((Path(session.checkpoint) / CHECKPOINT_FILE).read_text())["reports_done"]

    # ---- one report per fidelity ----
    for i in range(done + 1, s.n_reports + 1):
        z = i / s.n_reports
        if s.seconds_per_report > 0:
            time.sleep(s.seconds_per_report)
        value = hartmann(x, z) + float(noise[i - 1])
        report = {"regret": value - F_MIN[s.dim], "value": value, "fidelity": z}
        if i == s.n_reports:
            report |= {"regret_full": regret(x, 1.0), "argmin_distance": argmin_distance(x)}
        session.report(report, partial(save_progress, reports_done=i))
