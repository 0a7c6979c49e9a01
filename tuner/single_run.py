"""Run one trial of a family outside Ray: `python -m trainables.<family> --set key=value ...`."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tuner.family import Family
from tuner.validation import TunerInputError, describe_schema, parse_set_args, validate_settings


class LocalSession:
    """A `Session` that keeps the latest checkpoint in a directory and prints each report."""

    def __init__(self, checkpoint_dir: Path | None = None, resume_from: Path | None = None, quiet: bool = False):
        self.checkpoint_dir = checkpoint_dir
        self._resume_from = resume_from
        self.quiet = quiet
        self.history: list[dict[str, float]] = []

    @property
    def checkpoint(self) -> Path | None:
        return self._resume_from

    def report(self, metrics: Mapping[str, float], save: Callable[[Path], None] | None = None) -> None:
        self.history.append(dict(metrics))
        if not self.quiet:
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
            print(f"[report {len(self.history)}] {shown}", flush=True)
        if save is not None and self.checkpoint_dir is not None:
            # write beside, then swap: a crash mid-save never leaves a half checkpoint
            self.checkpoint_dir.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=self.checkpoint_dir.parent, prefix=".ckpt-"))
            save(staging)
            if self.checkpoint_dir.exists():
                shutil.rmtree(self.checkpoint_dir)
            staging.rename(self.checkpoint_dir)

    @property
    def final(self) -> dict[str, float]:
        """All metrics of the run, later reports overriding earlier ones."""
        merged: dict[str, float] = {}
        for m in self.history:
            merged.update(m)
        return merged


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    return str(v)


def main(family: Family, argv: Sequence[str] | None = None) -> int:
    """Parse `--set k=v`, run the family once, print `name: value` lines and write JSON."""
    parser = argparse.ArgumentParser(
        prog=f"python -m trainables.{family.name}",
        description=f"{family.description}\n\nsettings (--set name=value):\n{describe_schema(family.settings)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override a setting")
    parser.add_argument("--out", type=Path, default=Path("results") / "single" / family.name,
                        help="folder for metrics.json and the checkpoint (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--quiet", action="store_true", help="do not print intermediate reports")
    args = parser.parse_args(argv)
    try:
        settings = validate_settings(family.settings, parse_set_args(args.set), where="--set")
    except TunerInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ckpt = args.out / "checkpoint"
    if args.resume and not ckpt.is_dir():
        print(f"error: --resume: no checkpoint in {ckpt}", file=sys.stderr)
        return 2
    session = LocalSession(checkpoint_dir=ckpt, resume_from=ckpt if args.resume else None, quiet=args.quiet)
    family.run(settings, session)
    final = session.final
    final["outcome"] = family.classify(final)
    for name, value in final.items():
        print(f"{name}: {_fmt(value)}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps({"settings": settings.model_dump(), "metrics": final}, indent=2,
                                                      default=str))
    print(f"metrics written to {args.out / 'metrics.json'}")
    return 0
