"""The sweep's report page: one self-contained HTML file (plotly.js and the data inlined, no CDN) with the
regime table (sortable), the search history, the trials' learning curves by outcome, parameter importance
with its spread, parallel coordinates, the Pareto front of a multi-objective sweep, and the space's principles.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tuner.outcome import Outcome
from tuner.principles import Verdict, principles_html
from tuner.space import Objective, SearchSpace
from tuner.table import importance_spread, pareto_front

COLOURS = {Outcome.FINISHED.label: "#1f77b4", Outcome.PRUNED.label: "#aaaaaa", Outcome.DIVERGED.label: "#d62728",
           Outcome.ERROR.label: "#ff7f0e"}
# how the searcher proposed a trial (the sampler's record in the study) -> legend name, marker symbol, colour
SOURCE_MARKERS = {"warm_start": ("warm start", "star-open", "green"),
                  "prior": ("prior draw", "diamond-open", "purple"),
                  "incumbent": ("around the best", "circle-open", "#ff7f0e"),
                  "child": ("tree child", "triangle-up-open", "#8c564b")}
STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1400px}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;white-space:nowrap}th{background:#f3f3f3;cursor:pointer}
h2{margin-top:1.6em}li{margin:.3em 0}
.verdict{display:inline-block;min-width:7em;padding:0 4px;border-radius:3px;background:#eee;font-size:12px}
.confirmed{background:#c8e6c9}.contradicted{background:#ffcdd2}.inconclusive{background:#fff3c4}
.untested{background:#e0e0e0}"""
SORT_SCRIPT = """document.querySelectorAll('table.sortable th').forEach((th, i) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], rows = Array.from(body.rows), up = th.dataset.up !== '1';
  const key = r => { const t = r.cells[i].innerText, n = parseFloat(t); return isNaN(n) ? t : n; };
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (up ? 1 : -1));
  th.dataset.up = up ? '1' : '0'; rows.forEach(r => body.appendChild(r));
}));"""


def _figure_html(fig: go.Figure, element_id: str, first: bool) -> str:
    fig.update_layout(height=420, margin={"l": 60, "r": 20, "t": 40, "b": 50}, template="plotly_white")
    return fig.to_html(full_html=False, include_plotlyjs=first, div_id=element_id)


def _table_html(table: pd.DataFrame, element_id: str) -> str:
    return f'<div class="scroll">{table.astype(str).to_html(index=False, classes="sortable", table_id=element_id)}</div>'


def search_history(trials: pd.DataFrame, metric: str, mode: str, warm: Sequence[dict]) -> go.Figure:
    """The metric of each trial in the order the trials were created, by outcome, the best-so-far line, and
    how the searcher proposed it (warm start, prior draw, around the best, tree child; a `source` column, else
    the warm starts found by their parameters)."""
    values = pd.to_numeric(trials[f"metric.{metric}"], errors="coerce")
    order = np.arange(1, len(trials) + 1)
    fig = go.Figure()
    for label, colour in COLOURS.items():
        mask = (trials["status"] == label).to_numpy()
        if mask.any():
            fig.add_trace(go.Scatter(x=order[mask], y=values[mask], mode="markers", name=label,
                                     marker={"color": colour, "size": 9}, text=trials["trial_id"][mask]))
    finite = values.where(np.isfinite(values))
    best = finite.cummax() if mode == "max" else finite.cummin()
    fig.add_trace(go.Scatter(x=order, y=best, mode="lines", name="best so far", line={"color": "black"}))
    params = [c for c in trials.columns if c.startswith("param.")]
    if "source" in trials:  # how the searcher proposed each trial, from the study
        proposed = trials["source"].to_numpy()
    else:
        proposed = np.array(["warm_start" if any(all(row.get(f"param.{k}") == v for k, v in w.items()) for w in warm)
                             else "" for _, row in trials.iterrows()])
    for source, (name, symbol, colour) in SOURCE_MARKERS.items():
        mask = proposed == source
        if mask.any():
            fig.add_trace(go.Scatter(x=order[mask], y=values[mask], mode="markers", name=name,
                                     marker={"symbol": symbol, "size": 16, "color": colour}))
    fig.update_layout(title=f"search history ({len(params)} tuned parameters)", xaxis_title="trial",
                      yaxis_title=metric)
    return fig


def learning_curves(histories: pd.DataFrame, trials: pd.DataFrame, metric: str) -> go.Figure:
    """Every trial's reports of the metric, coloured by how the trial ended."""
    status = dict(zip(trials["trial_id"], trials["status"]))
    fig = go.Figure()
    shown: set[str] = set()
    for trial_id, curve in histories.sort_values("step").groupby("trial_id", sort=False):
        label = status.get(trial_id, Outcome.FINISHED.label)
        fig.add_trace(go.Scatter(x=curve["step"], y=curve["value"], mode="lines+markers", name=label,
                                 legendgroup=label, showlegend=label not in shown, text=trial_id,
                                 line={"color": COLOURS[label]}))
        shown.add(label)
    fig.update_layout(title="learning curves", xaxis_title="report", yaxis_title=metric)
    return fig


def importance_figure(spread: pd.DataFrame, n_finished: int) -> go.Figure:
    """fANOVA importance share per parameter: mean and sd over bootstrap resamples of the finished trials."""
    fig = go.Figure(go.Bar(x=spread.index, y=spread["mean"], error_y={"type": "data", "array": spread["sd"]}))
    fig.update_layout(title=f"parameter importance (fANOVA, {n_finished} finished trials, bootstrap sd)",
                      yaxis_title="importance share")
    return fig


def parallel_coordinates(trials: pd.DataFrame, metric: str) -> go.Figure:
    """Each trial as a line through its parameters (log10 for log-spread numbers) to its metric."""
    dimensions = []
    for column in [c for c in trials.columns if c.startswith("param.")] + [f"metric.{metric}"]:
        values = pd.to_numeric(trials[column], errors="coerce")
        label = column.split(".", 1)[1]
        if values.notna().all() and (values > 0).all() and values.max() / values.min() > 50:
            values, label = np.log10(values), f"log10 {label}"
        dimensions.append({"label": label, "values": values.fillna(values.min() if values.notna().any() else 0)})
    colour = pd.to_numeric(trials[f"metric.{metric}"], errors="coerce").fillna(0)
    fig = go.Figure(go.Parcoords(line={"color": colour, "colorscale": "Viridis", "showscale": True},
                                 dimensions=dimensions))
    fig.update_layout(title="parallel coordinates")
    return fig


def pareto_figure(trials: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[Objective]) -> go.Figure:
    """The first two objectives of every finished trial, the Pareto-optimal ones marked."""
    x, y = (f"metric.{o.metric}" for o in objectives[:2])
    done = trials[trials["status"] == Outcome.FINISHED.label]
    fig = go.Figure([go.Scatter(x=done[x], y=done[y], mode="markers", name="finished", text=done["trial_id"],
                                marker={"color": "#aaaaaa", "size": 9}),
                     go.Scatter(x=front[x], y=front[y], mode="markers", name="Pareto-optimal", text=front["trial_id"],
                                marker={"color": "#d62728", "size": 12})])
    fig.update_layout(title="Pareto front", xaxis_title=objectives[0].metric, yaxis_title=objectives[1].metric)
    return fig


def render(*, title: str, space: SearchSpace, metric: str, mode: str, objectives: Sequence[Objective],
           constraints: dict[str, float], table: pd.DataFrame, trials: pd.DataFrame, histories: pd.DataFrame,
           verdicts: Sequence[Verdict] = ()) -> str:
    """The page as one HTML string (`verdicts`: on the space's checkable principles)."""
    finished = trials[(trials["status"] == Outcome.FINISHED.label)
                      & np.isfinite(pd.to_numeric(trials[f"metric.{metric}"], errors="coerce"))]
    parts = [f"<h1>{html.escape(title)}</h1><p>{html.escape(space.description)}</p>",
             f"<p><b>Key finding:</b> {html.escape(str(table['Key finding'].iloc[0]))}</p>",
             "<h2>Regime table</h2>", _table_html(table, "regime-table"),
             "<h2>Search</h2>",
             _figure_html(search_history(trials, metric, mode, [w.params for w in space.warm_starts]),
                          "search-history", first=True),
             _figure_html(learning_curves(histories, trials, metric), "learning-curves", first=False)]
    spread = importance_spread(space, finished, metric, mode) if len(finished) >= 3 else pd.DataFrame()
    if spread.empty:
        parts.append(f'<p id="importance">parameter importance: not computable from {len(finished)} finished '
                     f'trials</p>')
    else:
        parts.append(_figure_html(importance_figure(spread, len(finished)), "importance", first=False))
    if len(trials) > 1:
        parts.append(_figure_html(parallel_coordinates(trials, metric), "parallel-coordinates", first=False))
    if len(objectives) > 1:
        front = pareto_front(trials, objectives, constraints)
        parts += ["<h2>Pareto front</h2>", _table_html(front, "pareto-table"),
                  _figure_html(pareto_figure(trials, front, objectives), "pareto", first=False)]
    parts.append('<h2 id="principles">Principles</h2>' + principles_html(space, verdicts))
    parts.append("<h2>Trials</h2>" + _table_html(trials, "trials-table"))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}<script>{SORT_SCRIPT}</script></body></html>")


def write_report(path: Path, **page: object) -> Path:
    """Render the page (arguments as for `render`) and write it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(**page), encoding="utf-8")  # type: ignore[arg-type]
    return path
