"""Does ASHA stop trials that would have ended near the top? (issue 14, point 5)

For each seed: one sweep with ASHA (`python -m tuner sweep --space S --scale X --seed k [--set ...]`), then every
trial's configuration (its resolved settings from `trials.parquet`) run again to the last report, unpruned, in
this process (the family's own `run`, as `python -m trainables.<family>` does); with `--rerun stopped` only the
trials ASHA stopped (the others keep their final metric; no rank correlation then). Reported per seed and in total:
trials, trials ASHA stopped, stopped trials that rank in the final top 3 of all trials run unpruned (their
share of the stopped, and of the top 3: the false-prune rate), and the Spearman rank correlation between each
rung's metric and the final one (how informative a low fidelity is).

Unpruned curves are kept in `<workdir>/curves/` by the trial's settings, so a second run reruns nothing it has
run. With `--rerun all`, `--replay GRACE:FACTOR ...` replays the sweep's ASHA scheduler over the unpruned curves
(trials in start order, one at a time) for each candidate grace period and reduction factor: how many trials it
stops, how many of the top 3 among them, and the reports it runs as a share of running every trial to the end.
`--sweeps T.parquet ...` studies sweeps already run (their `trials.parquet`, e.g. a benchmark's) instead of
running `--seeds` new ones.

    OMP_NUM_THREADS=1 python benchmarks/pruning_quality.py --space hartmann3_good --scale cpu --seeds 3
        [--set noise=0.1] [--samples N] [--rerun all|stopped] [--workdir DIR] [--replay 2:3 3:2 ...]
        [--sweeps RESULTS/SPACE/NAME/trials.parquet ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from ray.tune.schedulers import TrialScheduler
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prior_value import sweep_trials

from tuner.family import get_family
from tuner.schedule import make_scheduler
from tuner.single_run import LocalSession
from tuner.space import Scheduler, SearchSpace, load_space
from tuner.validation import validate_settings


def sweep(space: str, scale: str, seed: int, overrides: list[str], samples: int | None, workdir: Path
          ) -> pd.DataFrame:
    """The trials of this seed's ASHA sweep, run into `workdir` unless an earlier run left them there."""
    name = f"{space}-prune-{scale}-{seed}" + ("-" + "-".join(overrides).replace("=", "") if overrides else "")
    args = ["--scale", scale, "--seed", str(seed)]
    args += ["--samples", str(samples)] if samples else []
    args += ["--set", *overrides] if overrides else []
    start = time.time()
    trials = sweep_trials(workdir, space, name, args)
    print(f"  sweep {name}: {time.time() - start:.0f} s", flush=True)
    return trials


def unpruned_curve(family_name: str, row: pd.Series, workdir: Path) -> list[float]:
    """The trial's metric at every report, run to the end (or read from an earlier run's `curves/`)."""
    family = get_family(family_name)
    given = {k.removeprefix("setting."): v for k, v in row.items() if k.startswith("setting.")}
    given = {k: v for k, v in given.items() if not (isinstance(v, float) and math.isnan(v)) and v is not None}
    settings = validate_settings(family.settings, given, where="trials.parquet")
    key = hashlib.sha1(json.dumps([family_name, settings.model_dump(mode="json")], sort_keys=True).encode())
    cached = workdir / "curves" / f"{key.hexdigest()}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    session = LocalSession(quiet=True)
    family.run(settings, session)
    curve = [float(m[family.metric]) for m in session.history if family.metric in m]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(curve))
    return curve


class _ReplayedTrial:
    """What ASHA reads of a trial: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def replay_asha(curves: list[list[float]], space: SearchSpace, metric: str, mode: str, grace: int, factor: int
                ) -> list[int]:
    """The report at which the sweep's ASHA (`tuner.schedule.make_scheduler`, with this grace period and reduction
    factor) stops each trial, fed the curves one trial at a time in order; a trial it never stops gets its last."""
    candidate = space.model_copy(update={"scheduler": Scheduler(grace_period=grace, reduction_factor=factor)})
    scheduler = make_scheduler("asha", candidate, metric, mode, max(len(c) for c in curves))
    ends = []
    for number, curve in enumerate(curves):
        trial = _ReplayedTrial(str(number))
        scheduler.on_trial_add(None, trial)
        for report, value in enumerate(curve, start=1):
            result = {"training_iteration": report, metric: value}
            if report == len(curve):
                scheduler.on_trial_complete(None, trial, result)
            elif scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                scheduler.on_trial_remove(None, trial)
                break
        ends.append(report)
    return ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", required=True)
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--set", nargs="*", default=[], dest="overrides")
    parser.add_argument("--rerun", choices=["all", "stopped"], default="all")
    parser.add_argument("--workdir", default="/tmp/pruning_quality", help="sweeps here are reused by a rerun")
    parser.add_argument("--sweeps", nargs="*", type=Path, default=[], metavar="TRIALS_PARQUET",
                        help="study these finished sweeps instead of running --seeds new ones")
    parser.add_argument("--replay", nargs="*", default=[], metavar="GRACE:FACTOR",
                        help="replay ASHA with these settings over the unpruned curves (needs --rerun all)")
    args = parser.parse_args()
    if args.replay and args.rerun != "all":
        parser.error("--replay needs every trial's unpruned curve: --rerun all")
    candidates = [tuple(int(x) for x in item.split(":")) for item in args.replay]
    space = load_space(args.space)
    family = get_family(space.family)
    sign = 1.0 if family.mode == "max" else -1.0
    workdir = Path(args.workdir)
    rows, rung_values, finals, replays = [], {}, [], []
    tables = {path.parent.name: pd.read_parquet(path) for path in args.sweeps}
    for seed in range(args.seeds) if not tables else []:
        tables[seed] = sweep(args.space, args.scale, seed, args.overrides, args.samples, workdir)
    for seed, trials in tables.items():
        stopped_rows = trials["status"].to_numpy() == "pruned"
        curves = [unpruned_curve(space.family, row, workdir) if (args.rerun == "all" or stopped)
                  else [float(row[f"metric.{family.metric}"])]
                  for (_, row), stopped in zip(trials.iterrows(), stopped_rows, strict=True)]
        final = np.array([c[-1] if c else np.nan for c in curves])
        order = np.argsort(-sign * np.nan_to_num(final, nan=-sign * np.inf))
        top3 = set(order[:3].tolist())
        stopped = set(np.flatnonzero(stopped_rows).tolist())
        false = stopped & top3
        for i in sorted(stopped):
            print(f"  sweep {seed} trial {i}: stopped at report {trials['reports'].iloc[i]} with "
                  f"{trials[f'metric.{family.metric}'].iloc[i]:.4g}, unpruned final {final[i]:.4g}, "
                  f"rank {int(np.flatnonzero(order == i)[0]) + 1} of {len(trials)}")
        rows.append({"sweep": seed, "trials": len(trials), "stopped": len(stopped), "stopped in top 3": len(false),
                     "share of stopped": f"{len(false) / len(stopped):.2f}" if stopped else "–",
                     "best unpruned": f"{final[order[0]]:.4g}",
                     "best the sweep found": f"{trials[f'metric.{family.metric}'].agg(family.mode):.4g}"})
        for curve in curves if args.rerun == "all" else []:
            for report, value in enumerate(curve[:-1], start=1):
                rung_values.setdefault(report, []).append((value, curve[-1]))
        finals.append(final)
        for grace, factor in candidates:
            ends = np.array(replay_asha(curves, space, family.metric, family.mode, grace, factor))
            full = np.array([len(c) for c in curves])
            cut = set(np.flatnonzero(ends < full).tolist())
            replays.append({"sweep": seed, "grace:factor": f"{grace}:{factor}", "stopped": len(cut),
                            "stopped in top 3": len(cut & top3), "reports run": f"{ends.sum() / full.sum():.2f}",
                            "best kept": f"{final[next(i for i in order if i not in cut)]:.4g}"})
    frame = pd.DataFrame(rows)
    stopped, false = frame["stopped"].sum(), frame["stopped in top 3"].sum()
    print(frame.to_markdown(index=False))
    print(f"\ntotal: {frame['trials'].sum()} trials, {stopped} stopped, {false} of them in their sweep's top 3 "
          f"({false / max(stopped, 1):.1%} of the stopped; {false / (3 * len(tables)):.1%} of the top-3 trials)")
    correlations = {r: spearmanr(*zip(*pairs, strict=True)).statistic for r, pairs in sorted(rung_values.items())
                    if len(pairs) > 3}
    print("Spearman(metric at report r, final metric), all trials run unpruned: "
          + ", ".join(f"r={r}: {c:.3f}" for r, c in correlations.items()))
    if replays:
        table = pd.DataFrame(replays)
        print("\nASHA replayed over the unpruned curves (trials in start order, one at a time):\n"
              + table.to_markdown(index=False))
        total = table.groupby("grace:factor", sort=False)[["stopped", "stopped in top 3"]].sum()
        print("\n" + total.assign(**{"false-prune rate (top-3 trials stopped)":
                                    total["stopped in top 3"] / (3 * len(tables))}).to_markdown())


if __name__ == "__main__":
    main()
