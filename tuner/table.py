"""Regime comparison tables: one row per sweep, in the layout the seeds' authors wrote by hand."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd

from tuner.family import Family
from tuner.outcome import Outcome, best_trial, classify_end
from tuner.search import distributions
from tuner.space import Objective, SearchSpace

TOP_K = 3  # trials whose parameter range the key finding reports
MIN_FINISHED_FOR_DRIVER = 5  # finished trials below which the key finding names no driver
RESAMPLES = 20  # bootstrap resamples behind the importance spread


def fmt(value: Any) -> str:
    """Numbers as the seeds print them: 3 significant digits, scientific for small/large."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
            return f"{v:.2E}".replace("E-0", "E-").replace("E+0", "E+")
        return f"{v:.4g}"
    return str(value)


def _range(values: pd.Series) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna()
    v = v[np.isfinite(v)]
    if v.empty:
        return "-"
    lo, hi = fmt(v.min()), fmt(v.max())
    return lo if lo == hi else f"{lo}-{hi}"


def trials_frame(results: Iterable[Any], family: Family, max_reports: int,
                 resolve: Callable[[Mapping[str, Any]], Mapping[str, Any]]) -> pd.DataFrame:
    """One row per trial of a Ray `ResultGrid`: status (its `Outcome` label), the family's outcome, tuned
    params, resolved settings (`resolve(params)`), last metrics."""
    rows = []
    for r in results:
        m = dict(r.metrics or {})
        status = classify_end(m, errored=r.error is not None, metric=family.metric, max_reports=max_reports)
        metrics = {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        row = {"trial_id": m.get("trial_id", r.path.rsplit("/", 1)[-1] if r.path else ""), "status": status.label,
               "outcome": family.classify(metrics) if metrics else "error",
               "reports": m.get("training_iteration", 0), "time_total_s": m.get("time_total_s", 0.0)}
        config = r.config or {}  # Ray keeps a trial's config with its results: none if it never reported
        row.update({f"param.{k}": v for k, v in config.items()})
        row.update({f"setting.{k}": v for k, v in (resolve(config) if config else {}).items()})
        row.update({f"metric.{k}": v for k, v in metrics.items()})
        rows.append(row)
    trials = pd.DataFrame(rows)
    if f"metric.{family.metric}" not in trials:  # no trial reported (e.g. every one raised at start)
        trials[f"metric.{family.metric}"] = np.nan
    return trials


def importance(space: SearchSpace, trials: pd.DataFrame, metric: str, mode: str) -> dict[str, float]:
    """fANOVA importance of the tuned parameters over the finite trials ({} when it can't be computed)."""
    dists = distributions(space)
    ok = trials[np.isfinite(pd.to_numeric(trials[f"metric.{metric}"], errors="coerce"))]
    if len(dists) < 2 or len(ok) < 3:
        return {name: 1.0 for name in dists} if len(dists) == 1 and len(ok) >= 2 else {}
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, row in ok.iterrows():
        params = {name: row[f"param.{name}"] for name in dists}
        params = {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=float(row[f"metric.{metric}"])))
    try:
        return optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError):  # e.g. no variance in the values
        return {}


def importance_spread(space: SearchSpace, finished: pd.DataFrame, metric: str, mode: str,
                      resamples: int = RESAMPLES) -> pd.DataFrame:
    """fANOVA importance share of each parameter over bootstrap resamples of the trials (seeded): mean and sd,
    most important first. Empty when it cannot be computed."""
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(resamples):
        sample = finished.iloc[rng.integers(0, len(finished), len(finished))]
        shares.append(importance(space, sample, metric, mode))
    frame = pd.DataFrame([s for s in shares if s]).fillna(0.0)
    if frame.empty:
        return frame
    return pd.DataFrame({"mean": frame.mean(), "sd": frame.std(ddof=0)}).sort_values("mean", ascending=False)


def key_finding(space: SearchSpace, family: Family, trials: pd.DataFrame) -> str:
    """A sentence generated from the results: the parameter that drives the metric among the trials that ran
    every report (pruned trials' early values would mix fidelities), with its importance share ± its spread
    over resamples and its range among the top trials — or "no clear driver yet" when the evidence is too thin
    or the leading shares overlap; then the success share and divergences. Deterministic for the same trials."""
    metric_col = f"metric.{family.metric}"
    finite = trials[np.isfinite(pd.to_numeric(trials[metric_col], errors="coerce"))]
    finished = finite[finite["status"] == Outcome.FINISHED.label]
    n, n_ok = len(trials), int((trials["outcome"] == family.success).sum())
    parts = []
    if finite.empty:
        ended = trials["status"].value_counts()
        parts.append(f"no trial reported a finite {family.metric} ("
                     + ", ".join(f"{count} {label}" for label, count in ended.items()) + ")")
    elif len(finished) < MIN_FINISHED_FOR_DRIVER:
        parts.append(f"no clear driver yet ({len(finished)} finished trials, {MIN_FINISHED_FOR_DRIVER} needed)")
    else:
        spread = importance_spread(space, finished, family.metric, family.mode)
        top = finished.sort_values(metric_col, ascending=family.mode == "min").head(TOP_K)
        if spread.empty:
            parts.append(f"no clear driver yet (importance not computable over {len(finished)} finished trials)")
        else:
            lead = spread.iloc[0]
            runner_up = spread.iloc[1] if len(spread) > 1 else None
            shown = f"{spread.index[0]} {lead['mean']:.2f} ± {lead['sd']:.2f}"
            if runner_up is not None and lead["mean"] - lead["sd"] <= runner_up["mean"] + runner_up["sd"]:
                parts.append(f"no clear driver yet ({shown} vs {spread.index[1]} {runner_up['mean']:.2f} ± "
                             f"{runner_up['sd']:.2f} of importance over {len(finished)} finished trials)")
            else:
                name = spread.index[0]
                parts.append(f"{name} matters most ({lead['mean']:.2f} ± {lead['sd']:.2f} of importance over "
                             f"{len(finished)} finished trials); top {len(top)} use {name} "
                             f"{_range(top[f'param.{name}'])}")
    parts.append(f"{n_ok}/{n} {family.success}")
    diverged = int((trials["status"] == Outcome.DIVERGED.label).sum())
    if diverged and not finite.empty:
        parts.append(f"{diverged} diverged")
    return "; ".join(parts)


def replicate_columns(family: Family, best: pd.Series, replicates: pd.DataFrame) -> dict[str, str]:
    """The best config over data draws (its own draw and its replicates): metric mean ± sd, the share of draws
    that succeed, and each data descriptor per draw, in draw order."""
    draw = f"param.{family.draw}"
    same = np.ones(len(replicates), dtype=bool)
    for column in (c for c in replicates.columns if c.startswith("param.") and c != draw):
        same &= (replicates[column] == best.get(column)).to_numpy()
    runs = pd.concat([best.to_frame().T, replicates[same].sort_values(draw)], ignore_index=True)
    values = pd.to_numeric(runs[f"metric.{family.metric}"], errors="coerce")
    finite = values[np.isfinite(values)]
    spread = f"{fmt(finite.mean())} ± {fmt(finite.std(ddof=1)) if len(finite) > 1 else '-'} (n={len(runs)})"
    columns = {"Best over draws": spread,
               f"{family.success.capitalize()} draws": f"{int((runs['outcome'] == family.success).sum())}/{len(runs)}"}
    for title, metric in family.table.descriptors.items():
        per_draw = runs.get(f"metric.{metric}", pd.Series(np.nan, index=runs.index))
        columns[f"{title} per draw"] = ", ".join(fmt(v) for v in pd.to_numeric(per_draw, errors="coerce"))
    return columns


def regime_row(space: SearchSpace, family: Family, trials: pd.DataFrame, *, sweep: str, scale: str,
               base: Mapping[str, Any], replicates: pd.DataFrame | None = None,
               overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The sweep's row of the family's regime comparison table (with `replicates`: the best config over draws;
    `overrides`: the sweep's `--set` values, shown so that a pinned sweep never reads as an ordinary row)."""
    spec = family.table
    settings = space.trial_settings(base, space.prior_centers(), family).model_dump()
    pinned = ", ".join(f"{k}={v}" for k, v in (overrides or {}).items())
    row: dict[str, Any] = {"Block": space.source.block if space.source.block is not None else "-",
                           "Space": space.name, "Sweep": f"{sweep} (--set {pinned})" if pinned else sweep,
                           "Scale": scale}
    row.update({k: fmt(v) for k, v in spec.regime(settings).items()})
    for title, metric in spec.descriptors.items():
        row[title] = _range(trials.get(f"metric.{metric}", pd.Series(dtype=float)))
    metric_col = f"metric.{family.metric}"
    best = best_trial(trials, family.metric, family.mode)
    row[spec.best] = fmt(best[metric_col]) if best is not None else "-"
    for title, metric in spec.best_metrics.items():
        value = None if best is None else best.get(f"metric.{metric}")  # final metrics: absent if pruned
        row[title] = fmt(value) if isinstance(value, (int, float, np.number)) and np.isfinite(value) else "-"
    for title, setting in spec.key_params.items():
        row[title] = fmt(best[f"setting.{setting}"]) if best is not None else "-"
    objectives = space.objectives_of(family)
    for objective in objectives[1:]:  # multi-objective: the best of each metric, with its trial
        top = best_trial(trials, objective.metric, objective.mode)
        row[f"Best {objective.metric}"] = "-" if top is None else \
            f"{fmt(top[f'metric.{objective.metric}'])} ({top['trial_id']})"
    if len(objectives) > 1:
        row["Pareto trials"] = len(pareto_front(trials, objectives, space.scales[scale].constraints))
    if replicates is not None and best is not None:
        row.update(replicate_columns(family, best, replicates))
    row[f"{family.success.capitalize()} share"] = f"{int((trials['outcome'] == family.success).sum())}/{len(trials)}"
    row["Trials"] = len(trials)
    row["Compute (min)"] = fmt(float(trials["time_total_s"].sum()) / 60)
    row["Key finding"] = key_finding(space, family, trials)
    return row


def pareto_front(trials: pd.DataFrame, objectives: Sequence[Objective],
                 constraints: Mapping[str, float]) -> pd.DataFrame:
    """The finished trials within every constraint (metric <= bound) that no other such trial matches or beats
    on every objective while beating it on one: trial id, tuned parameters and the objective values."""
    columns = [f"metric.{o.metric}" for o in objectives]
    done = trials[trials["status"] == Outcome.FINISHED.label]
    for metric, bound in constraints.items():
        done = done[pd.to_numeric(done.get(f"metric.{metric}"), errors="coerce") <= bound]
    done = done[np.isfinite(done.reindex(columns=columns).apply(pd.to_numeric, errors="coerce")).all(axis=1)]
    signs = np.array([-1.0 if o.mode == "max" else 1.0 for o in objectives])
    cost = done[columns].to_numpy(float) * signs  # lower is better in every column
    dominated = np.array([bool(np.any(np.all(cost <= c, axis=1) & np.any(cost < c, axis=1))) for c in cost],
                         dtype=bool)
    keep = ["trial_id", *[c for c in trials.columns if c.startswith("param.")], *columns]
    return done.loc[~dominated, keep].reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    """The seeds' pipe-table format."""
    return table.astype(str).to_markdown(index=False, tablefmt="pipe", disable_numparse=True)
