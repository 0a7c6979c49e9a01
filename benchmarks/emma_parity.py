"""Parity runs against the seed's logged numbers: each space's first warm start (the logged best config).

    python benchmarks/emma_parity.py needle_len256 [needle_len512 ...] [--mode reference|ours] [--threads 1]

--mode reference: the reference's batch-shared memory and a fresh validation draw per epoch (spec §1, §7.4);
--mode ours: per-sequence memory and the fixed validation set (the family's defaults).
Prints, per epoch, the assisted val_acc (as the reference computes it) next to the honest one, lambda and
the gate, then the best values and the logged ones. The seed is the settings' default (42), never searched.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from trainables.emma.train import run
from tuner.family import get_family
from tuner.space import load_space
from tuner.validation import parse_set_args, validate_settings


class Printer:
    """A session printing one line per report."""

    checkpoint = None

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def report(self, metrics, save=None) -> None:
        self.history.append(dict(metrics))
        m = metrics
        print(f"  epoch {m['epoch']:.0f}: val_acc {m['val_acc']:.3f} | honest {m['val_acc_honest']:.3f} | "
              f"lambda {m['lambda_nce']:.4f} | alpha {m['oracle_mix_alpha']:.2f} oracle {m['oracle_write']:.0f} | "
              f"read_ema {m['nce_read_ema_cos']:.3f} | train read_cos {m.get('train_read_cos', float('nan')):.3f} "
              f"raw {m.get('train_read_cos_raw', float('nan')):.3f} | write_cos {m.get('train_write_cos', float('nan')):.3f} | "
              f"prototype cos {m['prototype_cos']:.3f} | train acc {m['train_acc']:.3f} | honest top-class share "
              f"{m['honest_pred_top_share']:.2f}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spaces", nargs="+")
    parser.add_argument("--mode", choices=["reference", "ours"], default="reference")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override settings (e.g. a smaller train_size), printed with the results")
    args = parser.parse_args()
    family = get_family("emma")
    mode = {"memory_mode": "shared", "val_resample": True} if args.mode == "reference" else {}
    overrides = parse_set_args(args.set)
    for name in args.spaces:
        space = load_space(name)
        warm = space.warm_starts[0]
        values = space.resolve(space.base_settings("cpu", {"threads": args.threads, **mode}), warm.params, family)
        values |= overrides                                               # --set wins over the warm start too
        values["n_reports"] = int(values["epochs"])
        settings = validate_settings(family.settings, values)
        print(f"{name} [{args.mode}{', ' + ' '.join(args.set) if args.set else ''}] logged {warm.recorded} — "
              f"{warm.source}", flush=True)
        session = Printer()
        started = time.perf_counter()
        torch.set_num_threads(args.threads)
        run(settings, session)
        f = session.history[-1]
        keys = ("best_val_acc", "best_val_acc_honest", "val_acc", "val_acc_honest", "nce_gate_epoch", "gate_open_epoch",
                "gate_open_fraction", "pre_gate_best_acc", "post_gate_best_acc", "early_stop_epoch", "majority_acc")
        print(f"  => {json.dumps({k: round(f[k], 4) for k in keys})} in {time.perf_counter() - started:.0f} s",
              flush=True)


if __name__ == "__main__":
    main()
