"""Block 1 parity of the signal family over simulation seeds (issue 3).

Runs the seed's Block 1 recipe (chaotic W, N=100, 10k frames, 1 epoch, aug 60, lr_W 8e-3, lr 1e-4,
L1 1e-5) once per simulation seed and prints, per seed, the data descriptors (eff_rank 90/99,
spectral radius) next to the recovered connectivity_R2 and the wall time. The seed's log gives
eff_rank(99%) 31-35 for this regime; draws far below that are poorly excited and recover less.

    python benchmarks/signal_parity.py                       # seeds 0-9 and 42, batch 16
    python benchmarks/signal_parity.py --seeds 0 42 --set batch_size=8 connectivity_type=low_rank
    python benchmarks/signal_parity.py --draws               # every signal space's pinned draw (issue 15)
    python benchmarks/signal_parity.py --draws --spaces chaotic_dale_10k --frames 10000 20000  # one draw, two lengths

`--draws` simulates each signal space's pinned data (no training) and prints rho(W) and the effective
rank by both formulas (full SVD, and the reference's top-100 normalized one, `_ref`); `--seeds` and
`--frames` replace the pinned sim_seed and n_frames.
"""

from __future__ import annotations

import argparse
import time

import torch

from trainables.signal.family import FAMILY
from trainables.signal.simulate import SIMULATION_SETTINGS, simulate
from tuner.single_run import LocalSession
from tuner.space import load_space, space_files
from tuner.validation import parse_set_args

BLOCK_1 = {"connectivity_type": "chaotic", "n_neurons": 100, "n_frames": 10000, "n_epochs": 1,
           "data_augmentation_loop": 60, "lr_W": 8e-3, "lr": 1e-4, "coeff_W_L1": 1e-5, "batch_size": 16,
           "n_reports": 2, "device": "cpu"}


def draws(seeds: list[int] | None, frames: list[int] | None, names: list[str] | None = None) -> None:
    """Descriptors of every signal space's draw (its fixed simulation settings), no training."""
    print(f"{'space':<22} {'block':>5} {'sim_seed':>8} {'n_frames':>8} {'rho':>6} {'er90':>5} {'er99':>5} "
          f"{'er90_ref':>8} {'er99_ref':>8} {'wall_s':>6}")
    for name, path in sorted(space_files().items()):
        if names and name not in names:
            continue
        space = load_space(path)
        if space.family != "signal":
            continue
        base = FAMILY.settings.model_validate(space.resolve(space.base_settings("cpu"), space.prior_centers(), FAMILY))
        for seed in seeds or [base.sim_seed]:
            for n_frames in frames or [base.n_frames]:
                sim = {k: getattr(base, k) for k in SIMULATION_SETTINGS} | {"sim_seed": seed, "n_frames": n_frames}
                start = time.perf_counter()
                d = simulate(**sim)
                print(f"{name:<22} {space.source.block:>5} {seed:>8} {n_frames:>8} {d['spectral_radius']:>6.3f} "
                      f"{d['eff_rank_90']:>5} {d['eff_rank_99']:>5} {d['eff_rank_90_ref']:>8} {d['eff_rank_99_ref']:>8} "
                      f"{time.perf_counter() - start:>6.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override Block 1 settings")
    parser.add_argument("--draws", action="store_true", help="print every signal space's draw, no training")
    parser.add_argument("--frames", type=int, nargs="+", default=None, help="with --draws: these n_frames")
    parser.add_argument("--spaces", nargs="+", default=None, help="with --draws: only these spaces")
    args = parser.parse_args()
    if args.draws:
        draws(args.seeds, args.frames, args.spaces)
        return
    args.seeds = args.seeds or [*range(10), 42]
    torch.set_num_threads(2)
    print(f"torch threads: {torch.get_num_threads()}; recipe: {BLOCK_1 | parse_set_args(args.set)}")
    print(f"{'sim_seed':>8} {'eff_rank_90':>11} {'eff_rank_99':>11} {'er99_ref':>8} {'rho':>6} {'conn_R2':>8} "
          f"{'outcome':>10} {'wall_s':>7}")
    reached = 0
    for seed in args.seeds:
        settings = FAMILY.settings.model_validate(BLOCK_1 | parse_set_args(args.set) | {"sim_seed": seed})
        session = LocalSession(quiet=True)
        start = time.perf_counter()
        FAMILY.run(settings, session)
        wall = time.perf_counter() - start
        m = session.final
        reached += m["connectivity_R2"] >= 0.99
        print(f"{seed:>8} {m['eff_rank_90']:>11.0f} {m['eff_rank_99']:>11.0f} {m['eff_rank_99_ref']:>8.0f} "
              f"{m['spectral_radius']:>6.3f} "
              f"{m['connectivity_R2']:>8.4f} {FAMILY.classify(m):>10} {wall:>7.1f}", flush=True)
    print(f"connectivity_R2 >= 0.99 for {reached}/{len(args.seeds)} seeds")


if __name__ == "__main__":
    main()
