"""Do the priors pay on the real families? Sweeps of named spaces with the space's priors and warm starts, without
them (`--no-priors`), with random search and with the seeds' tree search, over several searcher seeds; for each,
the trials and trial-minutes to reach 99% of the seed's recorded best (issue 14, point 4, real families).

    OMP_NUM_THREADS=1 python benchmarks/real_family_priors.py --results /work/pv_real/results \
        [--spaces chaotic_10k low_rank20_10k chaotic_dale_10k] [--methods priors no-priors random tree] \
        [--seeds 0 1 2 3 4] [--scale cpu] [--max-concurrent 2] [--target SPACE=VALUE ...] [--out notes/real_family_priors]

Every sweep is `python -m tuner sweep --space S --scale cpu --seed k --replicates 0 --name pv-S-METHOD-sK` with the
method's flags (priors: none; no-priors: `--no-priors`; random: `--searcher random --no-priors`; tree: `--searcher
tree`), ASHA as configured by the space, into the `--results` folder (its own MLflow store). A sweep whose name
already has a finished run there is not run again, so an interrupted benchmark continues where it stopped. The
loops go seed by seed, so a partial run has every method at the seeds it reached.

The target is 0.99 × the seed's best: for signal spaces the "Best R²" of the seed-000 regime table row of the
space's block (`benchmarks/campaign_vs_seed.py`), otherwise `--target SPACE=VALUE`. Trials count in start order up
to the first that reaches it; trial-minutes sum those trials' run times. When no method's sweep reached it, the
table says so, and "best" shows what each method found.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from campaign_vs_seed import SHARE, seed_table, to_target

from tuner.family import get_family
from tuner.space import load_space
from tuner.tracking import family_trials

METHOD_FLAGS = {"priors": [], "no-priors": ["--no-priors"], "random": ["--searcher", "random", "--no-priors"],
                "tree": ["--searcher", "tree"]}


def sweep_name(space: str, method: str, seed: int) -> str:
    return f"pv-{space}-{method}-s{seed}"


def finished_sweeps(tracking_uri: str, experiment: str) -> set[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return set()
    runs = client.search_runs([exp.experiment_id], "tags.`tuner.kind` = 'sweep' and attributes.status = 'FINISHED'",
                              max_results=50000)
    return {r.info.run_name for r in runs}


def run_sweeps(args: argparse.Namespace, tracking_uri: str, family: str) -> None:
    env = {**os.environ, "TUNER_RESULTS": str(args.results), "OMP_NUM_THREADS": "1"}
    for seed in args.seeds:
        for space in args.spaces:
            for method in args.methods:
                name = sweep_name(space, method, seed)
                if name in finished_sweeps(tracking_uri, family):
                    continue
                cmd = [sys.executable, "-m", "tuner", "sweep", "--space", space, "--scale", args.scale, "--seed",
                       str(seed), "--replicates", "0", "--max-concurrent", str(args.max_concurrent), "--name", name,
                       *METHOD_FLAGS[method]]
                print("$", " ".join(cmd[1:]), flush=True)
                log = args.results.parent / "logs" / f"{name}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                with log.open("w") as out:
                    code = subprocess.run(cmd, check=False, cwd=ROOT, env=env, stdout=out,
                                          stderr=subprocess.STDOUT).returncode
                print(f"  exit {code} ({log})", flush=True)


def targets(spaces: list[str], given: list[str], seed_file: Path) -> dict[str, float]:
    out = {}
    table = seed_table(seed_file) if seed_file is not None else None
    for space_name in spaces:
        space = load_space(space_name)
        if table is not None and space.family == "signal":
            row = table[table["Block"] == str(space.source.block)]
            if len(row):
                out[space_name] = SHARE * float(row["Best R²"].iloc[0])
    for item in given:
        key, _, value = item.partition("=")
        out[key] = SHARE * float(value)
    missing = [s for s in spaces if s not in out]
    if missing:
        raise SystemExit(f"--target: no seed best for {', '.join(missing)}; give SPACE=VALUE")
    return out


def per_sweep(trials: pd.DataFrame, goal: dict[str, float], metric: str, args: argparse.Namespace) -> pd.DataFrame:
    rows = []
    for space in args.spaces:
        for method in args.methods:
            for seed in args.seeds:
                own = trials[trials["sweep"] == sweep_name(space, method, seed)]
                if own.empty:
                    continue
                needed, minutes = to_target(own, metric, goal[space])
                rows.append({"space": space, "method": method, "seed": seed, "trials": len(own),
                             "best": pd.to_numeric(own[f"metric.{metric}"], errors="coerce").max(),
                             "trial_min": float(pd.to_numeric(own["minutes"], errors="coerce").sum()),
                             "to_target": needed, "min_to_target": minutes})
    return pd.DataFrame(rows)


def summary(runs: pd.DataFrame, goal: dict[str, float]) -> pd.DataFrame:
    rows = []
    for (space, method), group in runs.groupby(["space", "method"], sort=False):
        hit = group.dropna(subset=["to_target"])
        # a seed that never reached the target counts as its whole sweep (a lower bound on what it would need)
        trials = group["to_target"].fillna(group["trials"])
        minutes = group["min_to_target"].fillna(group["trial_min"])
        rows.append({"space": space, "target": round(goal[space], 4), "method": method,
                     "reached": f"{len(hit)}/{len(group)}",
                     "trials to target (median)": float(trials.median()),
                     "trial-min to target (median)": round(float(minutes.median()), 2),
                     "best (median)": round(float(group["best"].median()), 5),
                     "trial-min per sweep": round(float(group["trial_min"].mean()), 2)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="TUNER_RESULTS of the benchmark's sweeps")
    parser.add_argument("--family", default="signal")
    parser.add_argument("--spaces", nargs="+", default=["chaotic_10k", "low_rank20_10k", "chaotic_dale_10k"])
    parser.add_argument("--methods", nargs="+", default=list(METHOD_FLAGS), choices=list(METHOD_FLAGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--target", nargs="*", default=[], help="SPACE=VALUE: the seed's best where no table has it")
    parser.add_argument("--seed-file", type=Path,
                        default=next((ROOT.parent / "shared" / "seeds").glob("000_*.txt"), None))
    parser.add_argument("--analyse-only", action="store_true", help="tabulate the sweeps already in --results")
    parser.add_argument("--out", type=Path, help="write <out>.md with the tables")
    args = parser.parse_args()
    args.results = args.results.resolve()
    family = get_family(args.family)
    tracking_uri = f"sqlite:///{args.results / 'mlflow.db'}"
    goal = targets(args.spaces, args.target, args.seed_file)
    if not args.analyse_only:
        run_sweeps(args, tracking_uri, family.name)
    trials = family_trials(tracking_uri, family.name)
    if trials.empty:
        raise SystemExit(f"--results {args.results}: no {family.name} trials are recorded there")
    runs = per_sweep(trials, goal, family.metric, args)
    if runs.empty:
        raise SystemExit(f"--results {args.results}: no sweep of {', '.join(args.spaces)} × {', '.join(args.methods)}")
    table = summary(runs, goal)
    text = ("## Per sweep\n\n" + runs.to_markdown(index=False, floatfmt=".4g") + "\n\n## Summary (a seed that did not "
            "reach the target counts its whole sweep)\n\n" + table.to_markdown(index=False, floatfmt=".4g") + "\n")
    print(text)
    if args.out:
        args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
