"""`python -m tuner`: sweep, spaces, show, resume, table, principles, memory, campaign, resume-campaign. Bad input
exits with code 2, a Ctrl-C with 130 and a sweep stopped because its disk ran full with 75 (EX_TEMPFAIL: free space,
then resume)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tuner.family import SCALES
from tuner.validation import PRIOR_RULES, SCHEDULERS, SEARCHERS, TunerInputError

if TYPE_CHECKING:
    from tuner.driver import SweepOutcome

EXIT_NO_SPACE = 75  # sysexits.h EX_TEMPFAIL: a temporary failure; resuming later will work


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tuner", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sweep", help="run a sweep over a named space")
    s.add_argument("--space", required=True, help="space name (see `spaces`) or path to a space YAML file")
    s.add_argument("--scale", choices=SCALES, help="cost scale (default: full if the Ray cluster has GPUs, else cpu)")
    s.add_argument("--samples", type=int, help="number of trials (default: the space's, per scale)")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override a setting, or pin a tunable parameter")
    s.add_argument("--searcher", choices=SEARCHERS, default="tpe",
                   help="tpe, random, or tree (the seeds' one-mutation UCB tree over finished trials)")
    s.add_argument("--prior-rule", choices=PRIOR_RULES, default="adaptive",
                   help="how tpe/random use the priors: adaptive (prior, incumbent and model draws weighed by which "
                        "produced the top trials) or fixed (prior with probability s/(s+n))")
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
    pr = sub.add_parser("principles", help="each checkable principle's verdict over all sweeps of a family (MLflow)")
    pr.add_argument("--family", required=True)
    pr.add_argument("--space", help="only this space of the family")
    pr.add_argument("--tracking-uri")
    me = sub.add_parser("memory", help="the family's working memory in the seeds' format, written from MLflow")
    me.add_argument("--family", required=True)
    me.add_argument("--tracking-uri")
    me.add_argument("--out", help="the markdown file (default: results/<family>_memory.md)")
    c = sub.add_parser("campaign", help="sweep a family's regimes one after the other, each warm-started with the "
                                        "earlier ones' best configs; ends with the regime table and working memory")
    c.add_argument("--family", required=True)
    c.add_argument("--scale", required=True, help=f"cost scale of every sweep: {', '.join(SCALES)}")
    c.add_argument("--spaces", help="comma-separated spaces, run in this order (default: the family's spaces that "
                                    "name a seed block, in block order)")
    c.add_argument("--samples", type=int, help="trials per sweep (default: each space's, per scale)")
    c.add_argument("--max-concurrent", type=int, help="cap on trials running at once")
    c.add_argument("--carry", type=int, default=2, help="earlier sweeps whose best config warm-starts each sweep")
    c.add_argument("--seed", type=int, default=0, help="searcher seed of every sweep")
    c.add_argument("--name", help="campaign name (default: <family>-<scale>-<time>)")
    c.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<abs>/results/mlflow.db)")
    rc = sub.add_parser("resume-campaign", help="continue an interrupted campaign")
    rc.add_argument("campaign", help="the campaign's folder (results/campaigns/<name>) or its name")
    return parser


def _summary(outcome: SweepOutcome) -> int:
    from tuner.outcome import best_trial

    plan = outcome.plan
    if outcome.stopped_for:
        print(f"\nsweep stopped: {outcome.stopped_for}. Free space, then continue it with:\n"
              f"  python -m tuner resume {plan.experiment_path}")
        return EXIT_NO_SPACE
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
    if space.source.seed is not None:
        print(f"source: {space.source.seed}" + (f", block {space.source.block}" if space.source.block else ""))
    if space.source.reference is not None:
        print(f"reference: {space.source.reference}")
    for title, key in (("fixed regime", "fixed"), ("parameters and priors", "params"), ("derived", "derived"),
                       ("warm starts", "warm_starts"), ("scales", "scales"), ("scheduler", "scheduler")):
        print(f"\n{title}:")
        print(yaml.safe_dump(data[key], sort_keys=False, default_flow_style=None, allow_unicode=True).rstrip())
    print("\nprinciples:")
    for p in space.principles:
        print(f"  - {p.text}  [{p.source}]")
        if p.claim is not None:
            claim = p.claim.model_dump(mode="json", exclude_defaults=True)
            claim = {"kind": claim.pop("kind"), **claim}
            flow = yaml.safe_dump(claim, default_flow_style=True, sort_keys=False, allow_unicode=True, width=1000)
            print(f"    claim: {flow}", end="")


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


def _principles(family_name: str, space_name: str | None, tracking_uri: str | None) -> None:
    import optuna

    from tuner.family import get_family
    from tuner.principles import pooled_verdicts, summary_line, verdict_frame
    from tuner.space import load_space, space_files
    from tuner.storage import results_dir
    from tuner.table import to_markdown
    from tuner.tracking import check_tracking_uri, default_tracking_uri, family_trials

    try:
        family = get_family(family_name)
    except KeyError as err:
        raise TunerInputError(f"--family: {err.args[0]}") from None
    if space_name is not None:
        spaces = [load_space(space_name)]
        if spaces[0].family != family.name:
            raise TunerInputError(f"--space: {space_name!r} is a {spaces[0].family} space, not a {family.name} one")
    else:
        spaces = []
        for path in space_files().values():
            try:
                space = load_space(path)
            except TunerInputError as err:  # `tuner spaces` reports it; the other spaces are still judged
                print(f"warning: left out: {err}", file=sys.stderr)
                continue
            spaces += [space] if space.family == family.name else []
    uri = tracking_uri or default_tracking_uri()
    check_tracking_uri(uri)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = family_trials(uri, family.name)
    judged, left_out = pooled_verdicts(family, spaces, trials)
    md = to_markdown(verdict_frame(judged))
    out = results_dir() / f"{family.name}_principles.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md + "\n")
    print(md)
    sweeps = trials["sweep"].nunique() if len(trials) else 0
    print(f"\n{summary_line(judged)}: {len(judged)} claims of {len(spaces)} spaces over {len(trials)} trials of "
          f"{sweeps} sweeps in {uri}; written to {out}")
    for name, dropped in left_out.items():
        print(f"{name}: left out {len(dropped)} sweep(s) whose --set changed the regime: {', '.join(dropped)}")


def _memory(family_name: str, tracking_uri: str | None, out: str | None) -> None:
    from pathlib import Path

    from tuner.family import get_family
    from tuner.storage import results_dir, unwritable_reason

    try:
        get_family(family_name)
    except KeyError as err:
        raise TunerInputError(f"--family: {err.args[0]}") from None
    path = Path(out) if out else results_dir() / f"{family_name}_memory.md"
    problem = unwritable_reason(path.parent)
    if problem or path.is_dir():
        raise TunerInputError(f"--out: {problem or f'{path} is a folder'}")
    from tuner.memory import family_memory
    from tuner.tracking import check_tracking_uri, default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    check_tracking_uri(uri)
    text, table = family_memory(family_name, uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"working memory of {family_name}: {len(table)} sweeps, written to {path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "sweep":
            from tuner.plan import check_inputs  # bad input is refused before Ray, MLflow or torch load

            check_inputs(args.space, scale=args.scale, samples=args.samples, overrides=args.set,
                         searcher=args.searcher, priors=not args.no_priors, scheduler=args.scheduler,
                         max_concurrent=args.max_concurrent, replicates=args.replicates,
                         prior_rule=args.prior_rule)
            from tuner.driver import sweep

            return _summary(sweep(args.space, scale=args.scale, samples=args.samples, overrides=args.set,
                           searcher=args.searcher, priors=not args.no_priors, scheduler=args.scheduler,
                           max_concurrent=args.max_concurrent, seed=args.seed, name=args.name, storage=args.storage,
                           tracking_uri=args.tracking_uri, address=args.address, replicates=args.replicates,
                           study_storage=args.study_storage, prior_rule=args.prior_rule))
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
        elif args.command == "principles":
            _principles(args.family, args.space, args.tracking_uri)
        elif args.command == "memory":
            _memory(args.family, args.tracking_uri, args.out)
        elif args.command == "campaign":
            from tuner.campaign import start_campaign  # checks everything before Ray, MLflow or torch load

            spaces = [s.strip() for s in args.spaces.split(",") if s.strip()] if args.spaces is not None else None
            if spaces == []:
                raise TunerInputError("--spaces: name at least one space (comma-separated)")
            return start_campaign(args.family, args.scale, spaces, samples=args.samples,
                                  max_concurrent=args.max_concurrent, seed=args.seed, carry=args.carry,
                                  name=args.name, tracking_uri=args.tracking_uri)
        elif args.command == "resume-campaign":
            from tuner.campaign import resume_campaign

            return resume_campaign(args.campaign)
    except TunerInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
