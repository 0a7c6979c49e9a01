"""`python -m tuner`: sweep, spaces, show, resume, table. Bad input exits with code 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tuner.family import SCALES
from tuner.schedule import SCHEDULERS
from tuner.search import SEARCHERS
from tuner.settings import TunerInputError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tuner", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sweep", help="run a sweep over a named space")
    s.add_argument("--space", required=True, help="space name (see `spaces`) or path to a space YAML file")
    s.add_argument("--scale", choices=SCALES, help="cost scale (default: full if the Ray cluster has GPUs, else cpu)")
    s.add_argument("--samples", type=int, help="number of trials (default: the space's, per scale)")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override a setting, or pin a tunable parameter")
    s.add_argument("--searcher", choices=SEARCHERS, default="tpe")
    s.add_argument("--no-priors", action="store_true", help="uniform over the bounds, no warm starts")
    s.add_argument("--scheduler", choices=SCHEDULERS, default="asha")
    s.add_argument("--max-concurrent", type=int, help="cap on trials running at once")
    s.add_argument("--seed", type=int, default=0, help="searcher seed")
    s.add_argument("--name", help="sweep name (default: <space>-<scale>-<time>)")
    s.add_argument("--storage", help="Ray experiment storage: a path or s3://... (default: results/ray)")
    s.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<abs>/results/mlflow.db)")
    s.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")

    sub.add_parser("spaces", help="list the named spaces")
    sh = sub.add_parser("show", help="show a space: priors, warm starts, principles")
    sh.add_argument("name")
    r = sub.add_parser("resume", help="continue an interrupted sweep")
    r.add_argument("path", help="the sweep's Ray experiment folder (printed when it started)")
    r.add_argument("--address")
    t = sub.add_parser("table", help="the cross-sweep regime table of a family, rebuilt from MLflow")
    t.add_argument("--family", required=True)
    t.add_argument("--tracking-uri")
    return parser


def _summary(outcome: object) -> int:
    from tuner.sweep import SweepOutcome

    assert isinstance(outcome, SweepOutcome)
    plan = outcome.plan
    if outcome.interrupted:
        print(f"\nsweep interrupted. Continue it with:\n  python -m tuner resume {plan.experiment_path}")
        return 130
    family = plan.family
    print("\n" + outcome.table.drop(columns=["Key finding"]).T.to_string(header=False))
    print(f"key finding: {outcome.table['Key finding'].iloc[0]}")
    finite = outcome.trials[pd.to_numeric(outcome.trials[f"metric.{family.metric}"], errors="coerce").notna()]
    if not finite.empty:
        best = finite.sort_values(f"metric.{family.metric}", ascending=family.mode == "min").iloc[0]
        params = {c.removeprefix("param."): getattr(best[c], "item", lambda: best[c])()
                  for c in outcome.trials.columns if c.startswith("param.")}
        print(f"best {family.metric}: {best[f'metric.{family.metric}']:.6g} with {params}")
    print(f"regime table: {outcome.table_path}")
    print(f"MLflow parent run: {outcome.parent_run_id}")
    print(f"open it with:\n  mlflow ui --backend-store-uri {plan.tracking_uri}")
    return 0


def _spaces() -> None:
    from tuner.space import load_space, space_files

    rows = []
    for name, path in space_files().items():
        space = load_space(path)
        rows.append((space.family, name, space.description))
    width = max((len(n) for _, n, _ in rows), default=0)
    for family in sorted({f for f, _, _ in rows}):
        print(f"{family}:")
        for f, name, desc in rows:
            if f == family:
                print(f"  {name:<{width}}  {desc}")


def _show(name: str) -> None:
    import yaml

    from tuner.space import load_space

    space = load_space(name)
    data = space.model_dump(mode="json", exclude_defaults=False)
    print(f"{space.name} ({space.family}): {space.description}")
    print(f"source: {space.source.seed}" + (f", block {space.source.block}" if space.source.block else ""))
    for title, key in (("fixed regime", "fixed"), ("parameters and priors", "params"), ("derived", "derived"),
                       ("warm starts", "warm_starts"), ("scales", "scales"), ("scheduler", "scheduler")):
        print(f"\n{title}:")
        print(yaml.safe_dump(data[key], sort_keys=False, default_flow_style=None, allow_unicode=True).rstrip())
    print("\nprinciples:")
    for p in space.principles:
        print(f"  - {p.text}  [{p.source}]")


def _table(family_name: str, tracking_uri: str | None) -> None:
    from mlflow.tracking import MlflowClient

    from tuner.family import get_family
    from tuner.sweep import ROW_ARTIFACT, default_tracking_uri, results_dir
    from tuner.table import to_markdown

    try:
        get_family(family_name)
    except KeyError as err:
        raise TunerInputError(f"--family: {err.args[0]}") from None
    client = MlflowClient(tracking_uri or default_tracking_uri())
    exp = client.get_experiment_by_name(family_name)
    runs = [] if exp is None else client.search_runs(
        [exp.experiment_id], filter_string="tags.`tuner.kind` = 'sweep' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"])
    rows = []
    for run in runs:
        local = client.download_artifacts(run.info.run_id, ROW_ARTIFACT)
        payload = json.loads(Path(local).read_text())
        rows.append(pd.DataFrame(payload["data"], columns=payload["columns"]))
    if not rows:
        print(f"no finished {family_name} sweeps in {client.tracking_uri}")
        return
    table = pd.concat(rows, ignore_index=True)
    md = to_markdown(table)
    out = results_dir() / f"{family_name}_regime_table"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out.with_suffix(".parquet"))
    out.with_suffix(".md").write_text(md + "\n")
    print(md)
    print(f"\n{len(table)} sweeps; written to {out}.md and .parquet")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "sweep":
            from tuner.sweep import sweep

            return _summary(sweep(args.space, scale=args.scale, samples=args.samples, overrides=args.set,
                           searcher=args.searcher, priors=not args.no_priors, scheduler=args.scheduler,
                           max_concurrent=args.max_concurrent, seed=args.seed, name=args.name, storage=args.storage,
                           tracking_uri=args.tracking_uri, address=args.address))
        elif args.command == "resume":
            from tuner.sweep import resume

            return _summary(resume(args.path, address=args.address))
        elif args.command == "spaces":
            _spaces()
        elif args.command == "show":
            _show(args.name)
        elif args.command == "table":
            _table(args.family, args.tracking_uri)
    except TunerInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
