"""Does ASHA stop trials that would have ended near the top? (issue 14, point 5)

For each seed: one sweep with ASHA (`python -m tuner sweep --space S --scale X --seed k [--set ...]`), then every
trial's configuration (its resolved settings from `trials.parquet`) run again to the last report, unpruned, in
this process (the family's own `run`, as `python -m trainables.<family>` does); with `--rerun stopped` only the
trials ASHA stopped (the others keep their final metric; no rank correlation then). Reported per seed and in total:
trials, trials ASHA stopped, stopped trials that rank in the final top 3 of all trials run unpruned (their
share of the stopped, and of the top 3: the false-prune rate), and the Spearman rank correlation between each
rung's metric and the final one (how informative a low fidelity is).

    OMP_NUM_THREADS=1 python benchmarks/pruning_quality.py --space hartmann3_good --scale cpu --seeds 3
        [--set noise=0.1] [--samples N] [--rerun all|stopped] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from tuner.family import get_family
from tuner.single_run import LocalSession
from tuner.space import load_space
from tuner.validation import validate_settings

ROOT = Path(__file__).resolve().parents[1]


def sweep(space: str, scale: str, seed: int, overrides: list[str], samples: int | None, workdir: Path
          ) -> pd.DataFrame:
    name = f"{space}-prune-{scale}-{seed}" + ("-" + "-".join(overrides).replace("=", "") if overrides else "")
    table = workdir / "results" / space / name / "trials.parquet"
    if not table.exists():
        cmd = [sys.executable, "-m", "tuner", "sweep", "--space", space, "--scale", scale, "--seed", str(seed),
               "--name", name]
        cmd += ["--samples", str(samples)] if samples else []
        cmd += ["--set", *overrides] if overrides else []
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNER_RESULTS": str(workdir / "results"),
               "RAY_TMPDIR": str(workdir / "ray")}
        start = time.time()
        done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
        print(f"  sweep {name}: {time.time() - start:.0f} s", flush=True)
    return pd.read_parquet(table)


def unpruned_curve(family_name: str, row: pd.Series) -> list[float]:
    """The trial's metric at every report, run to the end."""
    family = get_family(family_name)
    given = {k.removeprefix("setting."): v for k, v in row.items() if k.startswith("setting.")}
    given = {k: v for k, v in given.items() if not (isinstance(v, float) and math.isnan(v)) and v is not None}
    settings = validate_settings(family.settings, given, where="trials.parquet")
    session = LocalSession(quiet=True)
    family.run(settings, session)
    return [float(m[family.metric]) for m in session.history if family.metric in m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", required=True)
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--set", nargs="*", default=[], dest="overrides")
    parser.add_argument("--rerun", choices=["all", "stopped"], default="all")
    parser.add_argument("--workdir", default="/tmp/pruning_quality", help="sweeps here are reused by a rerun")
    args = parser.parse_args()
    space = load_space(args.space)
    family = get_family(space.family)
    sign = 1.0 if family.mode == "max" else -1.0
    workdir = Path(args.workdir)
    rows, rung_values, finals = [], {}, []
    for seed in range(args.seeds):
        trials = sweep(args.space, args.scale, seed, args.overrides, args.samples, workdir)
        stopped_rows = trials["status"].to_numpy() == "pruned"
        curves = [unpruned_curve(space.family, row) if (args.rerun == "all" or stopped)
                  else [float(row[f"metric.{family.metric}"])]
                  for (_, row), stopped in zip(trials.iterrows(), stopped_rows, strict=True)]
        final = np.array([c[-1] if c else np.nan for c in curves])
        order = np.argsort(-sign * np.nan_to_num(final, nan=-sign * np.inf))
        top3 = set(order[:3].tolist())
        stopped = set(np.flatnonzero(stopped_rows).tolist())
        false = stopped & top3
        for i in sorted(stopped):
            print(f"  seed {seed} trial {i}: stopped at report {trials['reports'].iloc[i]} with "
                  f"{trials[f'metric.{family.metric}'].iloc[i]:.4g}, unpruned final {final[i]:.4g}, "
                  f"rank {int(np.flatnonzero(order == i)[0]) + 1} of {len(trials)}")
        rows.append({"seed": seed, "trials": len(trials), "stopped": len(stopped), "stopped in top 3": len(false),
                     "share of stopped": f"{len(false) / len(stopped):.2f}" if stopped else "–",
                     "best unpruned": f"{final[order[0]]:.4g}",
                     "best the sweep found": f"{trials[f'metric.{family.metric}'].agg(family.mode):.4g}"})
        for curve in curves if args.rerun == "all" else []:
            for report, value in enumerate(curve[:-1], start=1):
                rung_values.setdefault(report, []).append((value, curve[-1]))
        finals.append(final)
    frame = pd.DataFrame(rows)
    stopped, false = frame["stopped"].sum(), frame["stopped in top 3"].sum()
    print(frame.to_markdown(index=False))
    print(f"\ntotal: {frame['trials'].sum()} trials, {stopped} stopped, {false} of them in their sweep's top 3 "
          f"({false / max(stopped, 1):.1%} of the stopped; {false / (3 * args.seeds):.1%} of the top-3 trials)")
    correlations = {r: spearmanr(*zip(*pairs, strict=True)).statistic for r, pairs in sorted(rung_values.items())
                    if len(pairs) > 3}
    print("Spearman(metric at report r, final metric), all trials run unpruned: "
          + ", ".join(f"r={r}: {c:.3f}" for r, c in correlations.items()))


if __name__ == "__main__":
    main()
