"""`python -m tuner`: sweep, spaces, show, resume, table. Bad input exits with code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tuner.family import SCALES
from tuner.validation import SCHEDULERS, SEARCHERS, TunerInputError

if TYPE_CHECKING:
    from tuner.driver import SweepOutcome


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
    s.add_argument("--replicates", type=int, help="after the search, re-run the best config(s) on this many "
                                                  "further data draws (default: the space's)")
    s.add_argument("--name", help="sweep name (default: <space>-<scale>-<time>)")
    s.add_argument("--storage", help="Ray experiment storage: a path or s3://... (default: results/ray)")
    s.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<abs>/results/mlflow.db)")
    s.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    s.add_argument("--study-storage", help="Optuna RDB storage for the study (default: "
                                           "sqlite:///<abs>/results/optuna.db; on a cluster: in the searcher's state)")

    sub.add_parser("spaces", help="list the named spaces")
    sh = sub.add_parser("show", help="show a space: priors, warm starts, principles")
    sh.add_argument("name")
    r = sub.add_parser("resume", help="continue an interrupted sweep")
    r.add_argument("path", help="the sweep's Ray experiment folder (printed when it started)")
    r.add_argument("--address")
    rp = sub.add_parser("report", help="rebuild a finished sweep's report page (results/<space>/<sweep>/report.html)")
    rp.add_argument("path", help="the sweep's Ray experiment folder, or its MLflow parent run id")
    rp.add_argument("--tracking-uri", help="where to find a parent run id (default: the embedded store)")
    t = sub.add_parser("table", help="the cross-sweep regime table of a family, rebuilt from MLflow")
    t.add_argument("--family", required=True)
    t.add_argument("--tracking-uri")
    return parser


def _summary(outcome: SweepOutcome) -> int:
    from tuner.outcome import best_trial

    plan = outcome.plan
    if outcome.interrupted:
        print(f"\nsweep interrupted. Continue it with:\n  python -m tuner resume {plan.experiment_path}")
        return 130
    family = plan.family
    print("\n" + outcome.table.drop(columns=["Key finding"]).T.to_string(header=False))
    print(f"key finding: {outcome.table['Key finding'].iloc[0]}")
    if outcome.failure:
        print(f"\nsweep FAILED: {outcome.failure}. Trial errors: {plan.experiment_path}/<trial>/error.txt; "
              f"MLflow parent run {outcome.parent_run_id}")
        return 1
    best = best_trial(outcome.trials, family.metric, family.mode)
    if best is not None:
        params = {c.removeprefix("param."): getattr(best[c], "item", lambda: best[c])()
                  for c in outcome.trials.columns if c.startswith("param.")}
        print(f"best {family.metric}: {best[f'metric.{family.metric}']:.6g} with {params}")
    print(f"regime table: {outcome.table_path}")
    print(f"report page: {outcome.table_path.with_name('report.html')}")
    print(f"MLflow parent run: {outcome.parent_run_id}")
    print(f"open it with:\n  mlflow ui --backend-store-uri {plan.tracking_uri}")
    if plan.study_storage:
        print(f"the Optuna study {plan.name!r}:\n  optuna-dashboard {plan.study_storage}")
    return 0


def _spaces() -> int:
    """List every space that loads; report each file that does not (and each clashing name), then exit 2."""
    from tuner.space import load_space, space_catalog

    known, clashes = space_catalog()
    rows, problems = [], []
    for name, path in known.items():
        try:
            space = load_space(path)
        except TunerInputError as err:
            problems.append(str(err))
            continue
        rows.append((space.family, name, space.description))
    for name, paths in clashes.items():
        problems.append(f"space {name!r} is defined by several files ({', '.join(map(str, paths))}); rename one")
    width = max((len(n) for _, n, _ in rows), default=0)
    for family in sorted({f for f, _, _ in rows}):
        print(f"{family}:")
        for f, name, desc in rows:
            if f == family:
                print(f"  {name:<{width}}  {desc}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2 if problems else 0


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
    from tuner.family import get_family
    from tuner.storage import results_dir
    from tuner.table import to_markdown
    from tuner.tracking import check_tracking_uri, default_tracking_uri, regime_rows

    try:
        get_family(family_name)
    except KeyError as err:
        raise TunerInputError(f"--family: {err.args[0]}") from None
    uri = tracking_uri or default_tracking_uri()
    check_tracking_uri(uri)
    table = regime_rows(uri, family_name)
    if table is None:
        print(f"no finished {family_name} sweeps in {uri}")
        return
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
            from tuner.plan import check_inputs  # bad input is refused before Ray, MLflow or torch load

            check_inputs(args.space, scale=args.scale, samples=args.samples, overrides=args.set,
                         searcher=args.searcher, priors=not args.no_priors, scheduler=args.scheduler,
                         max_concurrent=args.max_concurrent, replicates=args.replicates)
            from tuner.driver import sweep

            return _summary(sweep(args.space, scale=args.scale, samples=args.samples, overrides=args.set,
                           searcher=args.searcher, priors=not args.no_priors, scheduler=args.scheduler,
                           max_concurrent=args.max_concurrent, seed=args.seed, name=args.name, storage=args.storage,
                           tracking_uri=args.tracking_uri, address=args.address, replicates=args.replicates,
                           study_storage=args.study_storage))
        elif args.command == "resume":
            from tuner.driver import resume

            return _summary(resume(args.path, address=args.address))
        elif args.command == "report":
            from tuner.driver import regenerate_report

            print(f"report: {regenerate_report(args.path, args.tracking_uri)}")
        elif args.command == "spaces":
            return _spaces()
        elif args.command == "show":
            _show(args.name)
        elif args.command == "table":
            _table(args.family, args.tracking_uri)
    except TunerInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
