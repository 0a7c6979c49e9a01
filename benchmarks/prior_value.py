"""Do the priors pay? Regret vs evaluations on the multi-fidelity Hartmann-3/6 spaces (good / medium / bad
prior) for our samplers, plain TPE, random search and PriorBand (NePS); optionally a confirmation through the
full Ray path (issue 14, point 4).

    OMP_NUM_THREADS=1 python benchmarks/prior_value.py [--seeds 20] [--budget 100] [--jobs 2]
        [--neps-python /work/neps-venv/bin/python --priorband-seeds 10 --priorband-budget 50
         --priorband-spaces hartmann3_good ...]
        [--ray-spaces hartmann3_good hartmann3_bad --ray-seeds 3]
        [--asha-spaces hartmann3_good ... --asha-seeds 10 --asha-samples 200] [--out notes/prior_value] [--cache DIR]

In-process part: each method draws from an Optuna study and is told the full-fidelity regret at once (no Ray,
no pruning, one trial at a time), as `benchmarks/samplers_synthetic.py` does. Methods: `adaptive` (the default
prior rule), `fixed` (s/(s+n)), `tpe` (plain TPE with the space's warm starts, which the Hartmann spaces do not
have), `random`, `tree`.

PriorBand runs in its own environment (`--neps-python`: NePS would replace this project's torch) through
`benchmarks/priorband_hartmann.py`, with Hyperband brackets over the fidelity (eta 3, rungs 1, 3, 9, 27 reports
of 27). Its x-axis is the cost in full evaluations (a report-r evaluation costs r / 27), its y the best regret
it observed (at the evaluation's own fidelity: an upper bound of the full-fidelity regret).

`--cache DIR` keeps the curves (`curves_<space>_<method>_<seeds>x<budget>.npy`, `priorband_<space>.json`) and
reuses those already there with the asked seeds and budget: a rerun only computes what is missing.

Ray part: `python -m tuner sweep --space S --scale cpu --seed k --scheduler none` (cpu scale: 50 trials of 9
reports, the default searcher and prior rule, parallel trials), regret = each trial's full-fidelity
`regret_full`, in trial order from `trials.parquet`.

ASHA part (the fair comparison with PriorBand): `python -m tuner sweep --space S --scale full --seed k --samples N`
with the space's ASHA (rungs 1, 3, 9, 27 reports), for the default rule and for plain TPE (`--no-priors`); a
trial that ran r of the 27 reports costs r / 27 full evaluations and observed the regret of its last report, at
fidelity r / 27 — PriorBand's accounting. The curves end at the PriorBand budget.

Prints the tables (evaluations to regret <= 0.1: median, IQR and seeds solved; median regret after 10 / 25 / 50
evaluations) and writes `<out>.md` and `<out>.png` (median and IQR band of the best regret vs evaluations).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from samplers_synthetic import CHECKPOINTS, SPACES, add_study_arguments, regret_curve

from trainables.hartmann.functions import SOLVED_REGRET
from tuner.space import load_space

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["adaptive", "fixed", "tpe", "random", "tree"]


def _curve(job: tuple[str, str, int, int]) -> np.ndarray:
    space, method, seed, budget = job
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return regret_curve(load_space(space), method, seed, budget)


def in_process(spaces: list[str], methods: list[str], seeds: int, budget: int, jobs: int, cache: Path
               ) -> dict[tuple[str, str], np.ndarray]:
    """(space, method) -> seeds × budget array of the best regret after each evaluation."""
    def path(space: str, method: str) -> Path:
        return cache / f"curves_{space}_{method}_{seeds}x{budget}.npy"

    keys = [(s, m) for s in spaces for m in methods]
    todo = [k for k in keys if not path(*k).exists()]
    with ProcessPoolExecutor(jobs) as pool:
        flat = list(pool.map(_curve, [(s, m, seed, budget) for s, m in todo for seed in range(seeds)]))
    for i, key in enumerate(todo):
        np.save(path(*key), np.array(flat[i * seeds:(i + 1) * seeds]))
    return {k: np.load(path(*k)) for k in keys}


def best_at_costs(cost: np.ndarray, regret: np.ndarray, budget: int) -> np.ndarray:
    """The best regret observed with at most k full evaluations spent, k = 1..budget (inf before the first)."""
    best = np.minimum.accumulate(regret)
    idx = np.searchsorted(cost, np.arange(1, budget + 1), side="right") - 1
    return np.where(idx >= 0, best[np.maximum(idx, 0)], np.inf)


def sweep_trials(cache: Path, space: str, name: str, args: list[str]) -> pd.DataFrame:
    """The trials of `tuner sweep --space SPACE --name NAME ARGS` in the cache's results, run if not there yet."""
    table = cache / "results" / space / name / "trials.parquet"
    if not table.exists():
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNER_RESULTS": str(cache / "results"),
               "RAY_TMPDIR": str(cache / "ray")}
        cmd = [sys.executable, "-m", "tuner", "sweep", "--space", space, "--name", name, *args]
        done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return pd.read_parquet(table)


def priorband(spaces: list[str], seeds: int, budget: int, python: str, cache: Path, jobs: int
              ) -> dict[tuple[str, str], np.ndarray]:
    """PriorBand's best observed regret at costs 1..budget (full evaluations), per space."""
    def command(space: str) -> list[str]:
        return [python, str(ROOT / "benchmarks" / "priorband_hartmann.py"), "--space", space, "--seeds",
                str(seeds), "--budget", str(budget), "--out", str(cache / f"priorband_{space}.json")]

    def fresh(space: str) -> bool:
        path = cache / f"priorband_{space}.json"
        if not path.exists():
            return False
        runs = json.loads(path.read_text())
        return len(runs) >= seeds and all(run[-1][0] >= budget for run in runs.values())

    todo = [s for s in spaces if not fresh(s)]
    running: list[subprocess.Popen] = []
    for space in todo:
        while len(running) >= jobs:
            running.pop(0).wait()
        running.append(subprocess.Popen(command(space), env={**os.environ, "OMP_NUM_THREADS": "1"}))
    for proc in running:
        if proc.wait() != 0:
            raise RuntimeError(f"PriorBand run failed: {proc.args}")
    out = {}
    for space in spaces:
        runs = json.loads((cache / f"priorband_{space}.json").read_text())
        rows = []
        for seed in range(seeds):
            cost, regret = np.array(runs[str(seed)]).T
            rows.append(best_at_costs(cost, regret, budget))
        out[(space, "priorband")] = np.array(rows)
    return out


def ray_sweeps(spaces: list[str], seeds: int, cache: Path) -> dict[tuple[str, str], np.ndarray]:
    """Best full-fidelity regret after each trial of `tuner sweep --scale cpu --scheduler none`, per seed."""
    out = {}
    for space in spaces:
        rows = []
        for seed in range(seeds):
            start = time.time()
            trials = sweep_trials(cache, space, f"{space}-pv-{seed}",
                                  ["--scale", "cpu", "--seed", str(seed), "--scheduler", "none"])
            rows.append(np.minimum.accumulate(trials["metric.regret_full"].to_numpy(float)))
            print(f"  ray {space} seed {seed}: {len(trials)} trials, {time.time() - start:.0f} s", flush=True)
        n = min(len(r) for r in rows)
        out[(space, "adaptive (Ray)")] = np.array([r[:n] for r in rows])
    return out


ASHA_METHODS = {"adaptive (Ray, ASHA)": [], "tpe (Ray, ASHA)": ["--no-priors"]}


def asha_sweeps(spaces: list[str], seeds: int, samples: int, budget: int, cache: Path
                ) -> dict[tuple[str, str], np.ndarray]:
    """Best observed regret at costs 1..budget (full evaluations) through `tuner sweep --scale full` with the
    space's ASHA, counted as PriorBand's evaluations are: a trial that ran r of the n reports costs r / n and
    observed the regret of its last report, at fidelity r / n. Trials in start order. Plain TPE (`--no-priors`)
    does not depend on the prior, so one set of its sweeps serves every space of the same function."""
    out = {}
    for method, flags in ASHA_METHODS.items():
        for space in spaces:
            loaded = load_space(space)
            reports = int(loaded.scales["full"].settings["n_reports"])
            tag = f"hartmann{loaded.fixed['dim']}-asha-tpe" if flags else f"{space}-asha"
            rows = []
            for seed in range(seeds):
                start = time.time()
                name = f"{tag}-{seed}-{samples}"
                found = sorted((cache / "results").glob(f"*/{name}/trials.parquet"))  # TPE: any space of the function
                trials = (pd.read_parquet(found[0]) if found else sweep_trials(
                    cache, space, name, ["--scale", "full", "--seed", str(seed), "--samples", str(samples), *flags]))
                cost = np.cumsum(trials["reports"].to_numpy(float) / reports)
                rows.append(best_at_costs(cost, trials["metric.regret"].to_numpy(float), budget))
                print(f"  asha {method} {space} seed {seed}: {len(trials)} trials, cost {cost[-1]:.1f}, "
                      f"{time.time() - start:.0f} s", flush=True)
            out[(space, method)] = np.array(rows)
    return out


def summary(curves: np.ndarray) -> dict[str, str]:
    """Evaluations to regret <= 0.1 (median, IQR over the seeds that reach it), seeds solved, regret at checkpoints."""
    solved = curves <= SOLVED_REGRET
    hits = [int(np.argmax(row)) + 1 for row in solved if row.any()]
    if hits:
        q1, med, q3 = np.percentile(hits, [25, 50, 75])
        evals = f"{med:.0f} ({q1:.0f}–{q3:.0f})"
    else:
        evals = "–"
    row = {"evals to regret ≤ 0.1": evals, "solved": f"{len(hits)}/{len(curves)}"}
    for c in CHECKPOINTS:
        row[f"@{c}"] = f"{np.median(curves[:, c - 1]):.3f}" if curves.shape[1] >= c else "–"
    return row


def table(results: dict[tuple[str, str], np.ndarray]) -> str:
    rows = [{"space": s, "method": m, **summary(c)} for (s, m), c in results.items()]
    frame = pd.DataFrame(rows).sort_values("space", key=lambda col: col.map(SPACES.index), kind="stable")
    return frame.to_markdown(index=False)


def plot(results: dict[tuple[str, str], np.ndarray], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = [s for s in SPACES if any(k[0] == s for k in results)]
    methods = list(dict.fromkeys(m for _, m in results))
    colours = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    ncols = 3
    fig, axes = plt.subplots(-(-len(spaces) // ncols), ncols, figsize=(11, 3.2 * -(-len(spaces) // ncols)),
                             squeeze=False, sharey=True)
    for ax, space in zip(axes.flat, spaces, strict=False):
        for method in methods:
            curves = results.get((space, method))
            if curves is None:
                continue
            x = np.arange(1, curves.shape[1] + 1)
            q1, med, q3 = np.percentile(np.maximum(curves, 1e-4), [25, 50, 75], axis=0)
            ax.plot(x, med, color=colours[method], label=method, lw=1.3)
            ax.fill_between(x, q1, q3, color=colours[method], alpha=0.15, lw=0)
        ax.axhline(SOLVED_REGRET, color="grey", ls=":", lw=1)
        ax.set(yscale="log", title=space, xlabel="evaluations (PriorBand, ASHA: full-evaluation cost)")
    for ax in axes.flat[len(spaces):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("best regret (median, IQR)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=70)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_arguments(parser, METHODS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--neps-python", help="a Python with neural-pipeline-search installed; none: no PriorBand")
    parser.add_argument("--priorband-seeds", type=int, default=10)
    parser.add_argument("--priorband-budget", type=int, default=50, help="in full evaluations")
    parser.add_argument("--priorband-spaces", nargs="*", help="default: --spaces")
    parser.add_argument("--ray-spaces", nargs="*", default=[])
    parser.add_argument("--ray-seeds", type=int, default=3)
    parser.add_argument("--asha-spaces", nargs="*", default=[],
                        help="also sweep these through Ray with ASHA at full scale, cost in full evaluations")
    parser.add_argument("--asha-seeds", type=int, default=10)
    parser.add_argument("--asha-samples", type=int, default=200, help="trials per ASHA sweep")
    parser.add_argument("--out", default="notes/prior_value", help="writes OUT.md and OUT.png")
    parser.add_argument("--cache", help="a folder for the curves, reused by a rerun (default: none kept)")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prior_value_") as tmp:
        run(args, out, Path(args.cache or tmp))


def run(args: argparse.Namespace, out: Path, cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    start = time.time()
    results = in_process(args.spaces, args.methods, args.seeds, args.budget, args.jobs, cache)
    print(f"in-process: {time.time() - start:.0f} s", flush=True)
    if args.neps_python:
        start = time.time()
        results |= priorband(args.priorband_spaces or args.spaces, args.priorband_seeds, args.priorband_budget, args.neps_python,
                             cache, args.jobs)
        print(f"PriorBand: {time.time() - start:.0f} s", flush=True)
    main_table = table(results)
    text = f"## Hartmann, in process\n\n{main_table}\n"
    print(main_table)
    if args.ray_spaces:
        ray = ray_sweeps(args.ray_spaces, args.ray_seeds, cache)
        ray_table = table(ray | {k: v[:, :ray[next(iter(ray))].shape[1]] for k, v in results.items()
                                 if k[0] in args.ray_spaces and k[1] == "adaptive"})
        print(ray_table)
        text += f"\n## Through Ray (`tuner sweep --scale cpu --scheduler none`)\n\n{ray_table}\n"
        results |= ray
    if args.asha_spaces:
        asha = asha_sweeps(args.asha_spaces, args.asha_seeds, args.asha_samples, args.priorband_budget, cache)
        asha_table = table(asha | {k: v for k, v in results.items() if k[0] in args.asha_spaces
                                   and k[1] in ("priorband", "adaptive", "tpe")})
        print(asha_table)
        text += ("\n## Multi-fidelity, in full-evaluation cost (`tuner sweep --scale full` with ASHA; PriorBand; "
                 "in-process rows for reference)\n\n" + asha_table + "\n")
        results |= asha
    out.with_suffix(".md").write_text(text)
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
