"""A campaign's regimes against the seed's regime table: per block, the seed's best metric, ours, and how many of
our trials (and trial-minutes) it took to reach 99% of the seed's best (issue 16).

    python benchmarks/campaign_vs_seed.py --tracking-uri sqlite:////abs/results/mlflow.db \
        --campaign signal-cpu-blocks1-9 [--seed-file ../shared/seeds/000_816f6ff45b16a1e4.txt] [--family signal]

The seed's "Regime Comparison Table" is read from its working memory (markdown); our trials from MLflow
(`tuner.tracking.family_trials`, in the order they started). "Trials to 99%" counts trials in start order up to the
first whose final metric reaches 0.99 × the seed's best ("-" when none did); "trial-min to 99%" sums the run
times of those trials' MLflow runs (with trials running side by side this is compute, not wall time).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuner.family import get_family
from tuner.space import load_space
from tuner.tracking import family_trials

SHARE = 0.99


def seed_table(path: Path) -> pd.DataFrame:
    """The seed's Regime Comparison Table (the first markdown table after its heading), as strings."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("### Regime Comparison Table"))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    text = "\n".join(r for k, r in enumerate(rows) if k != 1)  # drop the |---| line
    table = pd.read_csv(io.StringIO(text), sep="|", dtype=str, skipinitialspace=True)
    table = table.drop(columns=[c for c in table.columns if c.startswith("Unnamed")])
    table.columns = [c.strip() for c in table.columns]
    return table.apply(lambda col: col.str.strip())


def to_target(own: pd.DataFrame, metric: str, target: float) -> tuple[int | None, float | None]:
    """Trials (in start order) up to the first whose final `metric` reaches `target`, and their run minutes;
    (None, None) when none did."""
    values = pd.to_numeric(own[f"metric.{metric}"], errors="coerce")
    minutes = pd.to_numeric(own["minutes"], errors="coerce").fillna(0.0)
    hit = (values >= target).to_numpy().nonzero()[0]
    if not len(hit):
        return None, None
    return int(hit[0]) + 1, float(minutes.iloc[:hit[0] + 1].sum())


def compare(trials: pd.DataFrame, seed: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per sweep of `trials`: block, space, seed best, our best, trials and trial-minutes to 99%."""
    rows = []
    for sweep, own in trials.groupby("sweep", sort=False):
        space = load_space(str(own["space"].iloc[0]))
        block = space.source.block
        match = seed[seed["Block"] == str(block)]
        seed_best = float(match["Best R²"].iloc[0]) if len(match) else float("nan")
        best = pd.to_numeric(own[f"metric.{metric}"], errors="coerce").max()
        trials, minutes = to_target(own, metric, SHARE * seed_best)
        rows.append({"Block": block, "Space": space.name, "Seed best": seed_best, "Our best": best,
                     "Ours / seed": best / seed_best, "Trials": len(own),
                     "Trial-min": round(float(pd.to_numeric(own["minutes"], errors="coerce").sum()), 2),
                     "Trials to 99%": "-" if trials is None else trials,
                     "Trial-min to 99%": "-" if minutes is None else round(minutes, 2)})
    return pd.DataFrame(rows).sort_values("Block", key=lambda s: s.astype(float)).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--campaign", required=True, help="the campaign's name: its sweeps are named <name>-<space>")
    parser.add_argument("--family", default="signal")
    parser.add_argument("--seed-file", type=Path,
                        default=next((ROOT.parent / "shared" / "seeds").glob("000_*.txt"), None))
    args = parser.parse_args()
    family = get_family(args.family)
    trials = family_trials(args.tracking_uri, family.name)
    trials = trials[trials["sweep"].str.startswith(f"{args.campaign}-")]
    table = compare(trials, seed_table(args.seed_file), family.metric)
    print(table.to_markdown(index=False, floatfmt=".4g"))
    print(f"\n{len(trials)} trials, {table['Trial-min'].sum():.1f} trial-minutes; reached 99% of the seed's best in "
          f"{(table['Trials to 99%'] != '-').sum()} of {len(table)} blocks")


if __name__ == "__main__":
    main()
