"""The working memory, written by the tool: the seeds' document (regime comparison table, principles with the
trials that decide them, open questions, one summary per sweep) generated from the runs of a family.

`memory_markdown` and the section builders are pure functions of the regime table (`tuner.tracking.regime_rows`),
the trials (`tuner.tracking.family_trials`), the pooled verdicts (`tuner.principles.pooled_verdicts`) and the
parameter ranges of the spaces; `family_memory` reads those from MLflow. Everything is sorted and nothing is
stamped with the time, so the same runs give the same bytes.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import yaml

from tuner.outcome import best_trial
from tuner.principles import STATUSES, Verdict, pooled_verdicts, verdict_details
from tuner.space import CategoricalParam, SearchSpace, load_space, space_files
from tuner.table import fmt, to_markdown
from tuner.validation import TunerInputError

BOUND_SHARE = 0.02  # a best value within 2% of the range (log units for log parameters) from an end is at a bound
SPREAD_SHARE = 0.02  # over data draws, an sd above 2% of the mean is a high spread
TOP_CONFIGS = 3  # best configurations listed per sweep
STATUS_TITLES = {"confirmed": "Established (confirmed by the trials)", "contradicted": "Contradicted by the trials",
                 "inconclusive": "Inconclusive (more trials would decide)", "untested": "Untested (no trial can speak)"}


@dataclass(frozen=True)
class Range:
    """A numeric parameter's search range."""

    low: float
    high: float
    log: bool


Ranges = Mapping[tuple[str, str], Mapping[str, Range]]  # (space, scale) -> parameter -> range


def space_ranges(space: SearchSpace, scales: Sequence[str]) -> dict[tuple[str, str], dict[str, Range]]:
    """The numeric parameters' ranges of `space` at each of `scales`."""
    out = {}
    for scale in scales:
        scaled = space.at_scale(scale)
        out[(space.name, scale)] = {name: Range(float(p.low), float(p.high), p.log)
                                    for name, p in scaled.params.items() if not isinstance(p, CategoricalParam)}
    return out


# ---- helpers ---------------------------------------------------------------------------------------
def _block_key(block: Any) -> tuple[int, float, str]:
    text = str(block)
    try:
        return 0, float(text), ""
    except ValueError:
        return 1, math.inf, text


def sweep_name(shown: str) -> str:
    """The sweep's name from the regime table's Sweep column ('name (--set k=v)' for a sweep that pinned values)."""
    return str(shown).split(" (--set ", 1)[0]


def sorted_table(table: pd.DataFrame | None) -> pd.DataFrame:
    """The regime rows by block, space and sweep; missing cells as '-'."""
    if table is None or table.empty:
        return pd.DataFrame()
    keys = table.apply(lambda r: (_block_key(r.get("Block", "-")), str(r.get("Space", "")), str(r.get("Sweep", ""))),
                       axis=1)
    ordered = table.loc[sorted(table.index, key=lambda i: keys[i])].reset_index(drop=True)
    return ordered.astype(object).where(ordered.notna(), "-")


def _measured(value: Any) -> str:
    """A metric value: 6 significant digits (an R² of 0.99995 must not read as 1)."""
    return f"{float(value):.6g}"


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _top(trials: pd.DataFrame, metric: str, mode: str, k: int) -> pd.DataFrame:
    """The k best trials with a finite metric, ties broken by trial id."""
    column = f"metric.{metric}"
    if column not in trials:
        return trials.iloc[:0]
    values = pd.to_numeric(trials[column], errors="coerce")
    done = trials.assign(_value=values)[values.map(lambda v: math.isfinite(v))]
    done = done.sort_values(["_value", "trial_id"], ascending=[mode == "min", True], kind="mergesort")
    return done.head(k).drop(columns="_value")


def _params(row: pd.Series) -> dict[str, Any]:
    return {c.removeprefix("param."): _plain(row[c]) for c in sorted(row.index)
            if c.startswith("param.") and not pd.isna(row[c])}


def _config(row: pd.Series) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in _params(row).items())


# ---- open questions --------------------------------------------------------------------------------
def bound_optima(table: pd.DataFrame, trials: pd.DataFrame, metric: str, mode: str, ranges: Ranges) -> list[str]:
    """For each sweep of the table, each numeric parameter of its best trial that lies at an end of its range."""
    out = []
    for _, row in sorted_table(table).iterrows():
        name = sweep_name(row.get("Sweep", ""))
        own = trials[trials["sweep"] == name] if "sweep" in trials else trials.iloc[:0]
        best = best_trial(own, metric, mode)
        bounds_of = ranges.get((str(row.get("Space")), str(row.get("Scale"))), {})
        if best is None:
            continue
        for param, value in _params(best).items():
            bounds = bounds_of.get(param)
            if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if bounds.log:
                u = math.log(value / bounds.low) / math.log(bounds.high / bounds.low)
            else:
                u = (value - bounds.low) / (bounds.high - bounds.low)
            if BOUND_SHARE < u < 1 - BOUND_SHARE:
                continue
            end, side = ("lower", "below") if u <= BOUND_SHARE else ("upper", "above")
            out.append(f"{row['Space']} (sweep {name}): the best trial {best['trial_id']} ({metric} "
                       f"{_measured(best[f'metric.{metric}'])}) has {param} = {fmt(value)}, at the {end} bound of "
                       f"[{fmt(bounds.low)}, {fmt(bounds.high)}]: is the optimum {side} it? Decide with a sweep "
                       f"whose range extends {side} {fmt(bounds.low if side == 'below' else bounds.high)}")
    return out


_MEAN_SD = re.compile(r"^\s*(?P<mean>\S+) ± (?P<sd>\S+) \(n=(?P<n>\d+)\)")


def draw_spreads(table: pd.DataFrame) -> list[str]:
    """Regimes whose best configuration varies over data draws (replicate columns): an sd above `SPREAD_SHARE` of
    the mean, or draws that disagree on success."""
    out = []
    for _, row in sorted_table(table).iterrows():
        found = _MEAN_SD.match(str(row.get("Best over draws", "-")))
        if found is None:
            continue
        mean, n = float(found["mean"]), int(found["n"])
        sd = float(found["sd"]) if found["sd"] != "-" else 0.0
        shares = {c: str(row[c]) for c in row.index if c.endswith(" draws") and c != "Best over draws"}
        split = [f"{c.removesuffix(' draws').lower()} on {v} draws" for c, v in shares.items()
                 if re.fullmatch(r"\d+/\d+", v) and v.split("/")[0] not in ("0", v.split("/")[1])]
        if sd <= SPREAD_SHARE * abs(mean) and not split:
            continue
        per_draw = "; ".join(f"{c.removesuffix(' per draw')} {row[c]}" for c in row.index if c.endswith(" per draw"))
        out.append(f"{row['Space']} (sweep {sweep_name(row['Sweep'])}): the best configuration over {n} data draws "
                   f"gives {fmt(mean)} ± {fmt(sd)}" + (f", {', '.join(split)}" if split else "")
                   + (f" ({per_draw})" if per_draw else "") + ": which property of the draw decides it? Decide with "
                   "more draws (--replicates) and a claim on that descriptor")
    return out


def _by_space(judged: Sequence[Verdict]) -> list[Verdict]:
    return sorted(judged, key=lambda v: (v.space, v.index))


def open_questions(table: pd.DataFrame | None, trials: pd.DataFrame, judged: Sequence[Verdict], *, metric: str,
                   mode: str, ranges: Ranges) -> list[str]:
    """The open questions, in this order: contradicted principles, untested and inconclusive claims (with the trial
    that would decide each), optima at a search bound, regimes with a high spread over data draws."""
    table = sorted_table(table)
    out = [f"contradicted ({v.space}): \"{v.principle}\" [{v.source}]: {v.evidence}. What differs from where the "
           f"seed saw it (data draw, scale, target normalisation)?" for v in _by_space(judged)
           if v.status == "contradicted"]
    for status in ("untested", "inconclusive"):
        out += [f"{status} ({v.space}): \"{v.principle}\": {v.claim}; {v.evidence}. To decide: {v.decide or '-'}"
                for v in _by_space(judged) if v.status == status]
    if not table.empty:
        out += bound_optima(table, trials, metric, mode, ranges) + draw_spreads(table)
    return out


# ---- sections ----------------------------------------------------------------------------------------
def principles_section(judged: Sequence[Verdict]) -> list[str]:
    """The principles by verdict, each with its claim, evidence and deciding trials."""
    lines = []
    for status in STATUSES:
        group = [v for v in _by_space(judged) if v.status == status]
        if not group:
            continue
        lines += ["", f"#### {STATUS_TITLES[status]} ({len(group)})", ""]
        for v in group:
            lines.append(f"- {v.principle} [{v.source}; space {v.space}]")
            lines += verdict_details(v, every_trial=True)
    return lines or ["", "No space of this family carries a checkable claim."]


def sweep_summaries(table: pd.DataFrame | None, trials: pd.DataFrame, *, metric: str, mode: str,
                    verdict_counts: Mapping[str, Mapping[str, int]] | None = None) -> list[str]:
    """One summary per sweep of the table, in block order: its result, best configurations, key finding and the
    verdicts its run logged."""
    lines = []
    for _, row in sorted_table(table).iterrows():
        name = sweep_name(row.get("Sweep", ""))
        own = trials[trials["sweep"] == name] if "sweep" in trials else trials.iloc[:0]
        block, space, scale = row.get("Block", "-"), row.get("Space", "-"), row.get("Scale", "-")
        lines += ["", f"### Block {block}: {space} (sweep {name}, scale {scale})", ""]
        facts = [f"{c.lower()} {row[c]}" for c in row.index if c.endswith(" share")]
        facts += [f"{c.lower()} {row[c]}" for c in ("Trials", "Compute (min)") if c in row.index]
        top = _top(own, metric, mode, TOP_CONFIGS)
        best = f"best {metric}={_measured(top.iloc[0][f'metric.{metric}'])}" if len(top) else f"no finite {metric}"
        lines.append(f"{space}: {best}; " + "; ".join(facts) + ".")
        if len(top):
            lines += ["", "**Best configurations:**", ""]
            ranked = pd.DataFrame([{"Rank": i + 1, "Trial": r["trial_id"], "Ended": r["status"],
                                    metric: _measured(r[f"metric.{metric}"]), "Config": _config(r)}
                                   for i, (_, r) in enumerate(top.iterrows())])
            lines.append(to_markdown(ranked))
        lines += ["", f"Key finding: {row.get('Key finding', '-')}"]
        logged = (verdict_counts or {}).get(name)
        if logged:
            lines.append("Principles after this sweep: " + ", ".join(f"{logged.get(s, 0)} {s}" for s in STATUSES))
    return lines


def memory_markdown(title: str, table: pd.DataFrame | None, trials: pd.DataFrame, judged: Sequence[Verdict], *,
                    metric: str, mode: str, ranges: Ranges,
                    verdict_counts: Mapping[str, Mapping[str, int]] | None = None) -> str:
    """The working memory: knowledge base (regime comparison table, principles, open questions), then one summary
    per sweep. The same inputs give the same text."""
    ordered = sorted_table(table)
    n_sweeps = len(ordered)
    origin = (f"Written by `python -m tuner memory` from {n_sweeps} finished sweeps and {len(trials)} trials; "
              f"metric {metric} ({mode}).")
    lines = [f"# Working Memory: {title}", "", origin, "", "## Knowledge Base (accumulated across all blocks)", "",
             "### Regime Comparison Table", ""]
    lines.append(to_markdown(ordered) if n_sweeps else "No finished sweep yet.")
    tally = ", ".join(f"{sum(v.status == s for v in judged)} {s}" for s in STATUSES)
    lines += ["", "### Established Principles", "",
              f"{len(judged)} checkable claims, pooled over all sweeps of their space: {tally}."]
    lines += principles_section(judged)
    questions = open_questions(ordered, trials, judged, metric=metric, mode=mode, ranges=ranges)
    lines += ["", "### Open Questions", ""] + ([f"- {q}" for q in questions] or ["- none"])
    lines += ["", "---", "", "## Block Summaries"]
    lines += sweep_summaries(ordered, trials, metric=metric, mode=mode, verdict_counts=verdict_counts)
    return "\n".join(lines).rstrip() + "\n"


# ---- from MLflow ------------------------------------------------------------------------------------
def family_spaces(family_name: str) -> list[SearchSpace]:
    """The family's spaces that load (a file that does not is reported on stderr and left out), by name."""
    spaces = []
    for path in space_files().values():
        try:
            if (yaml.safe_load(path.read_text()) or {}).get("family") != family_name:  # other families unloaded
                continue
            spaces.append(load_space(path))
        except (TunerInputError, yaml.YAMLError, AttributeError) as err:
            print(f"warning: left out {path}: {err}", file=sys.stderr)
    return sorted(spaces, key=lambda s: s.name)


def family_memory(family_name: str, tracking_uri: str, sweeps: Sequence[str] | None = None,
                  title: str | None = None) -> tuple[str, pd.DataFrame]:
    """The family's working memory from MLflow (only the sweeps named in `sweeps`, when given) and its regime
    table."""
    from tuner.family import get_family
    from tuner.tracking import family_trials, regime_rows, sweep_verdict_counts

    family = get_family(family_name)
    table = regime_rows(tracking_uri, family.name)
    table = pd.DataFrame() if table is None else table
    trials = family_trials(tracking_uri, family.name)
    if sweeps is not None:
        keep = set(sweeps)
        table = table[table["Sweep"].map(sweep_name).isin(keep)] if len(table) else table
        trials = trials[trials["sweep"].isin(keep)] if len(trials) else trials
    if len(trials):
        trials = trials.sort_values(["sweep", "trial_id"], kind="mergesort").reset_index(drop=True)
    spaces = family_spaces(family.name)
    if sweeps is not None:
        spaces = [s for s in spaces if len(trials) and s.name in set(trials["space"])]
    judged, _ = pooled_verdicts(family, spaces, trials)
    scales = sorted(set(trials["scale"].dropna())) if len(trials) else []
    ranges: dict[tuple[str, str], dict[str, Range]] = {}
    for space in spaces:
        ranges |= space_ranges(space, scales)
    text = memory_markdown(title or family.name, table, trials, judged, metric=family.metric, mode=family.mode,
                           ranges=ranges, verdict_counts=sweep_verdict_counts(tracking_uri, family.name))
    return text, sorted_table(table)
