"""The samplers alone, in one process: Hartmann-3/6 at full fidelity under the good / medium / bad prior spaces,
no Ray, no pruning, one trial at a time. A fast check of a sampler change; the full path (Ray, ASHA, parallel
slots, PriorBand) is measured by `benchmarks/prior_value.py`.

For each space and method: evaluations to regret <= 0.1 (median over the seeds that reach it, and how many do)
and the median regret after 10 / 25 / 50 evaluations and at the budget. Methods: `tpe` (plain TPE, the space's
warm starts only), `fixed` (the s/(s+n) rule), `adaptive`, `adaptive:KEY=VALUE,...` (the adaptive rule with
other keyword arguments, e.g. `adaptive:patience=5,tolerance=0.001`; `patience=none` turns the stall rule off),
`random`, `tree` (default exploration constant) and `tree:C` (exploration constant C).

`--late-tpe K ...` adds, per space, how many seeds plain TPE solves by the budget when it starts K evaluations
late (its first budget − K evaluations): the best any sampler can do under a misleading prior if it spends K
evaluations on the prior and then hands every later one to an unhindered TPE.

    OMP_NUM_THREADS=1 python benchmarks/samplers_synthetic.py [--seeds 20] [--budget 100]
        [--spaces hartmann3_good ...] [--methods tpe fixed adaptive tree ...] [--late-tpe 1 5 10] [--first-seed 20]
"""

from __future__ import annotations

import argparse

import numpy as np
import optuna

from trainables.hartmann.functions import SOLVED_REGRET, regret
from tuner.samplers import AdaptivePriorSampler, TreeSampler
from tuner.search import distributions, make_sampler
from tuner.space import SearchSpace, load_space

SPACES = [f"hartmann{d}_{prior}" for d in (3, 6) for prior in ("good", "medium", "bad")]
METHODS = ["tpe", "fixed", "adaptive", "random", "tree"]
CHECKPOINTS = (10, 25, 50)


def sampler_for(method: str, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    if method.startswith("adaptive:"):
        options = dict(item.split("=") for item in method.split(":", 1)[1].split(","))
        kwargs = {k: None if v == "none" else float(v) for k, v in options.items()}
        return AdaptivePriorSampler(optuna.samplers.TPESampler(seed=seed), space, seed=seed, **kwargs)
    if method.startswith("tree:"):
        return TreeSampler(space, seed=seed, exploration=float(method.split(":")[1]))
    if method == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if method == "tree":
        return make_sampler(space, "tree", True, seed)
    return make_sampler(space, "tpe", True, seed, prior_rule=method)


def regret_curve(space: SearchSpace, method: str, seed: int, budget: int) -> np.ndarray:
    """Best regret after each evaluation; the warm starts (if any) are evaluated first, as in a sweep."""
    study = optuna.create_study(direction="minimize", sampler=sampler_for(method, space, seed))
    for warm in space.warm_starts:
        study.enqueue_trial(dict(warm.params))
    names = list(space.params)
    dist = distributions(space)
    values = []
    for _ in range(budget):
        trial = study.ask(dist)
        value = regret(np.array([trial.params[n] for n in names]))
        study.tell(trial, value)
        values.append(value)
    return np.minimum.accumulate(values)


def add_study_arguments(parser: argparse.ArgumentParser, methods: list[str]) -> None:
    """The options both Hartmann benchmarks take: seeds, budget, spaces, methods."""
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--spaces", nargs="*", default=SPACES)
    parser.add_argument("--methods", nargs="*", default=methods)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_arguments(parser, METHODS)
    parser.add_argument("--late-tpe", nargs="*", type=int, default=[], metavar="K")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds FIRST .. FIRST + seeds - 1 (e.g. 20: held out from the default 0..19)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    checkpoints = [c for c in CHECKPOINTS if c < args.budget] + [args.budget]
    header = (f"| space | method | evals to regret ≤ {SOLVED_REGRET} (median, IQR) | solved | "
              + " | ".join(f"regret @{c}" for c in checkpoints) + " |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in args.spaces:
        space = load_space(name)
        for method in args.methods:
            curves = np.array([regret_curve(space, method, seed, args.budget) for seed in seeds])
            solved = curves <= SOLVED_REGRET
            hits = [int(np.argmax(row)) + 1 for row in solved if row.any()]
            q1, med, q3 = np.percentile(hits, [25, 50, 75]) if hits else (np.nan,) * 3
            at = " | ".join(f"{np.median(curves[:, c - 1]):.3f}" for c in checkpoints)
            print(f"| {name} | {method} | {med:.0f} ({q1:.0f}–{q3:.0f}) | {len(hits)}/{args.seeds} | {at} |", flush=True)
        if args.late_tpe:
            tpe = np.array([regret_curve(space, "tpe", seed, args.budget) for seed in seeds])
            late = ", ".join(f"{k} late: {int((tpe[:, :args.budget - k] <= SOLVED_REGRET).any(1).sum())}"
                             for k in args.late_tpe)
            print(f"| {name} | plain TPE started K evaluations late, seeds solved by {args.budget} | {late} |")


if __name__ == "__main__":
    main()
