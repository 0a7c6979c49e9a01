"""Does ASHA stop trials that would have ended near the top? (issue 14, point 5)

For each seed: one sweep with ASHA (`python -m tuner sweep --space S --scale X --seed k [--set ...]`), then every
trial's configuration (its resolved settings from `trials.parquet`) run again to the last report, unpruned, in
this process (the family's own `run`, as `python -m trainables.<family>` does); with `--rerun stopped` only the
trials ASHA stopped (the others keep their final metric; no rank correlation then). Reported per seed and in total:
trials, trials ASHA stopped, stopped trials that rank in the final top 3 of all trials run unpruned (their
share of the stopped, and of the top 3: the false-prune rate), and the Spearman rank correlation between each
rung's metric and the final one (how informative a low fidelity is).

Unpruned histories (every reported metric at every report) are kept in `<workdir>/curves/` by the trial's settings,
so a second run reruns nothing it has run; a trial its sweep already ran to the last report (a sweep with
`--scheduler none`) is read from the sweep's MLflow store instead of being run again. With `--rerun all`,
`--replay GRACE:FACTOR ...` replays the sweep's ASHA scheduler over the unpruned curves (trials in start order, one
at a time) for each candidate grace period and reduction factor: how many trials it stops, how many of the top 3
among them, and the reports it runs as a share of running every trial to the end; `GRACE:FACTOR:best` replays it
with the rung value `best` (each trial enters a rung with its best report so far). `--signals METRIC:MODE ...`
replays it on other reported metrics too (e.g. `loss:min`, the mean training loss since the previous report), the
top 3 still being those of the family's metric at the end.
`--sweeps T.parquet ...` studies sweeps already run (their `trials.parquet`, e.g. a benchmark's) instead of
running `--seeds` new ones; their MLflow records are found through the plan in `<results>/ray/<name>/`.

    OMP_NUM_THREADS=1 python benchmarks/pruning_quality.py --space hartmann3_good --scale cpu --seeds 3
        [--set noise=0.1] [--samples N] [--rerun all|stopped] [--workdir DIR] [--replay 2:3 3:2 ...]
        [--sweeps RESULTS/SPACE/NAME/trials.parquet ...] [--signals final_r2:max loss:min]
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
from tuner.plan import PLAN_FILE, read_plan
from tuner.schedule import make_scheduler
from tuner.single_run import LocalSession
from tuner.space import Scheduler, SearchSpace, load_space
from tuner.tracking import metric_histories, numeric_metrics
from tuner.validation import validate_settings


def sweep(space: str, scale: str, seed: int, overrides: list[str], samples: int | None, workdir: Path
          ) -> tuple[pd.DataFrame, Path]:
    """The trials of this seed's ASHA sweep and its Ray folder, run into `workdir` unless an earlier run left them
    there."""
    name = f"{space}-prune-{scale}-{seed}" + ("-" + "-".join(overrides).replace("=", "") if overrides else "")
    args = ["--scale", scale, "--seed", str(seed)]
    args += ["--samples", str(samples)] if samples else []
    args += ["--set", *overrides] if overrides else []
    start = time.time()
    trials = sweep_trials(workdir, space, name, args)
    print(f"  sweep {name}: {time.time() - start:.0f} s", flush=True)
    return trials, workdir / "results" / "ray" / name


def unpruned_history(family_name: str, row: pd.Series, workdir: Path) -> list[dict[str, float]]:
    """The trial's reported metrics at every report, run to the end (or read from an earlier run's `curves/`)."""
    family = get_family(family_name)
    given = {k.removeprefix("setting."): v for k, v in row.items() if k.startswith("setting.")}
    given = {k: v for k, v in given.items() if not (isinstance(v, float) and math.isnan(v)) and v is not None}
    settings = validate_settings(family.settings, given, where="trials.parquet")
    key = hashlib.sha1(json.dumps([family_name, settings.model_dump(mode="json")], sort_keys=True).encode())
    cached = workdir / "curves" / f"history-{key.hexdigest()}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    session = LocalSession(quiet=True)
    family.run(settings, session)
    history = [numeric_metrics(m) for m in session.history]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(history))
    return history


def recorded_histories(experiment: Path, metrics: list[str]) -> dict[str, list[dict[str, float]]]:
    """Each trial's reports of `metrics` as its sweep logged them to MLflow (trial id → one dict per report, in
    order), found through the plan in the sweep's Ray folder; empty when that folder is not there."""
    if not (experiment / PLAN_FILE).exists():
        return {}
    plan, ids = read_plan(str(experiment))
    logged = pd.concat([metric_histories(plan.tracking_uri, ids.experiment_id, ids.parent_run_id, metric)
                        .assign(metric=metric) for metric in metrics])
    return {trial: [report.set_index("metric")["value"].to_dict() for _, report in reports.groupby("step")]
            for trial, reports in logged.groupby("trial_id")}


class _ReplayedTrial:
    """What ASHA reads of a trial: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def replay_asha(curves: list[list[float]], space: SearchSpace, metric: str, mode: str, settings: Scheduler
                ) -> list[int]:
    """The report at which the sweep's ASHA (`tuner.schedule.make_scheduler`, with these scheduler settings) stops
    each trial, fed the curves one trial at a time in order; a trial it never stops gets its last."""
    candidate = space.model_copy(update={"scheduler": settings})
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


def trial_histories(trials: pd.DataFrame, family_name: str, recorded: dict[str, list[dict[str, float]]],
                    rerun_all: bool, workdir: Path) -> list[list[dict[str, float]]]:
    """Every trial's reports to the end: as its sweep logged them (`recorded`) when it ran every report, else run
    again unpruned here (with `rerun_all` False, a trial ASHA did not stop keeps only its final metrics)."""
    family = get_family(family_name)
    histories = []
    for _, row in trials.iterrows():
        ran_to_end = row["status"] == "finished" and row["reports"] == row["setting.n_reports"]
        if ran_to_end and row["trial_id"] in recorded:
            histories.append(recorded[row["trial_id"]])
        elif rerun_all or row["status"] == "pruned":
            histories.append(unpruned_history(family_name, row, workdir))
        else:
            histories.append([{family.metric: float(row[f"metric.{family.metric}"])}])
    return histories


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
    parser.add_argument("--replay", nargs="*", default=[], metavar="GRACE:FACTOR[:best]",
                        help="replay ASHA with these settings over the unpruned curves (needs --rerun all)")
    parser.add_argument("--signals", nargs="*", default=[], metavar="METRIC:MODE",
                        help="what the replayed ASHA compares at its rungs (default: the family's metric)")
    args = parser.parse_args()
    if (args.replay or args.signals) and args.rerun != "all":
        parser.error("--replay and --signals need every trial's unpruned curve: --rerun all")
    candidates = {}
    for item in args.replay:
        grace, factor, *rung_value = item.split(":")
        candidates[item] = Scheduler(grace_period=int(grace), reduction_factor=int(factor),
                                     rung_value=rung_value[0] if rung_value else "last")
    space = load_space(args.space)
    family = get_family(space.family)
    signals = args.signals or [f"{family.metric}:{family.mode}"]
    logged_metrics = sorted({family.metric} | {signal.split(":")[0] for signal in signals})
    sign = 1.0 if family.mode == "max" else -1.0
    workdir = Path(args.workdir)
    rows, rung_values, replays = [], {}, []
    # results/<space>/<name>/trials.parquet; the sweep's Ray folder is results/ray/<name>
    tables = {path.parent.name: (pd.read_parquet(path), path.parents[2] / "ray" / path.parent.name)
              for path in args.sweeps}
    for seed in range(args.seeds) if not tables else []:
        tables[seed] = sweep(args.space, args.scale, seed, args.overrides, args.samples, workdir)
    for seed, (trials, experiment) in tables.items():
        recorded = recorded_histories(experiment, logged_metrics)
        histories = trial_histories(trials, space.family, recorded, args.rerun == "all", workdir)
        curves = [[h[family.metric] for h in history if family.metric in h] for history in histories]
        stopped_rows = trials["status"].to_numpy() == "pruned"
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
        full = np.array([len(c) for c in curves])
        for signal in signals if args.rerun == "all" else []:
            metric, mode = signal.split(":")
            signal_curves = [[h.get(metric, math.nan) for h in history] for history in histories]
            for values, curve in zip(signal_curves, curves, strict=True):
                for report, value in enumerate(values[:-1], start=1):
                    rung_values.setdefault((signal, report), []).append((value, curve[-1]))
            for candidate, scheduler in candidates.items():
                ends = np.array(replay_asha(signal_curves, space, metric, mode, scheduler))
                cut = set(np.flatnonzero(ends < full).tolist())
                replays.append({"sweep": seed, "signal": signal, "scheduler": candidate,
                                "stopped": len(cut), "stopped in top 3": len(cut & top3),
                                "reports run": f"{ends.sum() / full.sum():.2f}",
                                "best kept": f"{final[next(i for i in order if i not in cut)]:.4g}"})
    frame = pd.DataFrame(rows)
    stopped, false = frame["stopped"].sum(), frame["stopped in top 3"].sum()
    print(frame.to_markdown(index=False))
    print(f"\ntotal: {frame['trials'].sum()} trials, {stopped} stopped, {false} of them in their sweep's top 3 "
          f"({false / max(stopped, 1):.1%} of the stopped; {false / (3 * len(tables)):.1%} of the top-3 trials)")
    for signal in signals if rung_values else []:
        correlations = {r: spearmanr(*zip(*pairs, strict=True)).statistic
                        for (name, r), pairs in sorted(rung_values.items()) if name == signal and len(pairs) > 3}
        agree = 1.0 if signal.endswith(f":{family.mode}") else -1.0  # a min signal ranks a max metric reversed
        print(f"Spearman({signal} at report r, final {family.metric}), all trials run unpruned, sign so that "
              f"1 is the same ranking: " + ", ".join(f"r={r}: {agree * c:.3f}" for r, c in correlations.items()))
    if replays:
        table = pd.DataFrame(replays)
        print("\nASHA replayed over the unpruned curves (trials in start order, one at a time):\n"
              + table.to_markdown(index=False))
        total = table.groupby(["signal", "scheduler"], sort=False)[["stopped", "stopped in top 3"]].sum()
        print("\n" + total.assign(**{"false-prune rate (top-3 trials stopped)":
                                    total["stopped in top 3"] / (3 * len(tables))}).to_markdown())


if __name__ == "__main__":
    main()
