"""The working memory builder on hand-made regime rows, trials and verdicts: every section, open questions that
list exactly the undecided and contradicted claims, the optima at a search bound and the regimes that vary over
data draws, and the same bytes for the same runs in any order."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from tuner.cli import main as cli
from tuner.memory import (
    Range,
    bound_optima,
    draw_spreads,
    memory_markdown,
    open_questions,
)
from tuner.principles import Verdict

METRIC, MODE = "connectivity_R2", "max"
RANGES = {("sa", "cpu"): {"lr": Range(1e-5, 1e-3, True), "x": Range(0.0, 1.0, False)},
          ("sb", "cpu"): {"lr": Range(1e-5, 1e-3, True), "x": Range(0.0, 1.0, False)}}


def _row(block: int, space: str, sweep: str, over_draws: str, draws: str) -> dict:
    return {"Block": str(block), "Space": space, "Sweep": sweep, "Scale": "cpu", "Best R²": "0.99",
            "Best over draws": over_draws, "Converged draws": draws, "eff_rank per draw": "13, 31, 18",
            "Converged share": "2/3", "Trials": "3", "Compute (min)": "1.5", "Key finding": f"finding of {sweep}"}


def _trial(sweep: str, space: str, trial_id: str, r2: float, lr: float, x: float, status: str = "finished") -> dict:
    return {"sweep": sweep, "space": space, "scale": "cpu", "trial_id": trial_id, "status": status,
            "outcome": "converged" if r2 > 0.9 else "failed", "param.lr": lr, "param.x": x, "param.batch_size": 8,
            f"metric.{METRIC}": r2}


def _verdict(space: str, index: int, status: str) -> Verdict:
    return Verdict(space=space, index=index, principle=f"principle {space}-{index}", source="seed 000",
                   kind="optimum_in", claim=f"claim {index}", status=status, evidence=f"evidence {index}",
                   trials=["t1"] if status in ("confirmed", "contradicted") else [],
                   decide="" if status in ("confirmed", "contradicted") else f"run trials for {index}")


# sweep B (block 1) is settled; sweep A (block 2) has its best lr at the lower bound and varies over draws
TABLE = pd.DataFrame([_row(2, "sa", "A", "0.9 ± 0.05 (n=3)", "2/3"), _row(1, "sb", "B", "0.999 ± 0.001 (n=3)", "3/3")])
TRIALS = pd.DataFrame([
    _trial("A", "sa", "a1", 0.97, lr=1.05e-5, x=0.5),  # best of A: lr within 2% (log) of the lower bound
    _trial("A", "sa", "a2", 0.80, lr=1e-3, x=1.0),  # at the upper bounds, but not the best
    _trial("A", "sa", "a3", 0.60, lr=1e-4, x=0.3, status="pruned"),
    _trial("B", "sb", "b1", 0.999, lr=1e-4, x=0.5),
    _trial("B", "sb", "b2", 0.95, lr=2e-4, x=0.99),
])
VERDICTS = [_verdict("sa", 0, "confirmed"), _verdict("sa", 1, "untested"), _verdict("sb", 0, "inconclusive"),
            _verdict("sb", 1, "contradicted"), _verdict("sb", 2, "untested")]


def build(table: pd.DataFrame = TABLE, trials: pd.DataFrame = TRIALS, judged: list[Verdict] = VERDICTS) -> str:
    return memory_markdown("signal", table, trials, judged, metric=METRIC, mode=MODE, ranges=RANGES,
                           verdict_counts={"A": {"confirmed": 1, "contradicted": 0, "untested": 1, "inconclusive": 0}})


def test_every_section_is_present_in_the_seed_order() -> None:
    text = build()
    headings = ["# Working Memory: signal", "## Knowledge Base", "### Regime Comparison Table",
                "### Established Principles", "### Open Questions", "## Block Summaries",
                "### Block 1: sb (sweep B, scale cpu)", "### Block 2: sa (sweep A, scale cpu)"]
    positions = [text.index(h) for h in headings]
    assert positions == sorted(positions)
    table = text[text.index("### Regime Comparison Table"):text.index("### Established Principles")]
    assert table.index("| 1 ") < table.index("| 2 ")  # rows by block
    assert "| Block " in table and "| Key finding " in table and "0.9 ± 0.05 (n=3)" in table
    for status in ("confirmed", "contradicted", "untested", "inconclusive"):
        assert f"1 {status}" in text or f"2 {status}" in text
    summary_a = text[text.index("### Block 2: sa"):]
    assert "| 1      | a1      | finished | 0.97" in summary_a  # best configurations, best first
    assert summary_a.index("a1") < summary_a.index("a2") < summary_a.index("a3")
    assert "Key finding: finding of A" in summary_a
    assert "Principles after this sweep: 1 confirmed, 0 contradicted, 1 untested, 0 inconclusive" in summary_a


def test_open_questions_list_exactly_the_undecided_claims_bound_optima_and_draw_spreads() -> None:
    questions = open_questions(TABLE, TRIALS, VERDICTS, metric=METRIC, mode=MODE, ranges=RANGES)
    kinds = [q.split(" ", 1)[0] for q in questions]
    assert kinds == ["contradicted", "untested", "untested", "inconclusive", "sa", "sa"]
    assert '"principle sb-1"' in questions[0]
    assert ['"principle sa-1"' in questions[1], '"principle sb-2"' in questions[2]] == [True, True]
    assert "To decide: run trials for 0" in questions[3]
    assert "lr = 1.05E-5, at the lower bound" in questions[4] and "a1" in questions[4]
    assert "0.9 ± 0.05" in questions[5] and "converged on 2/3 draws" in questions[5]


def test_bound_optima_only_the_best_trial_and_only_numeric_ranges() -> None:
    lines = bound_optima(TABLE, TRIALS, METRIC, MODE, RANGES)
    assert len(lines) == 1 and "(sweep A)" in lines[0] and " lr = " in lines[0]  # not a2's bounds, not B
    upper = TRIALS.assign(**{"param.x": [1.0, 0.2, 0.3, 0.5, 0.1]})
    (line,) = bound_optima(TABLE, upper.assign(**{"param.lr": 1e-4}), METRIC, MODE, RANGES)
    assert "x = 1, at the upper bound of [0, 1]" in line


def test_draw_spreads_flag_spread_and_split_success_only() -> None:
    settled = TABLE.assign(**{"Best over draws": ["0.99 ± 0.001 (n=3)", "0.999 ± 0.001 (n=3)"],
                              "Converged draws": ["3/3", "3/3"]})
    assert draw_spreads(settled) == []
    split = settled.assign(**{"Converged draws": ["3/3", "0/3"]})  # none converging is not a split
    assert draw_spreads(split) == []
    spread = settled.assign(**{"Best over draws": ["0.99 ± 0.001 (n=3)", "0.8 ± 0.1 (n=3)"]})
    (line,) = draw_spreads(spread)
    assert line.startswith("sb (sweep B)") and "13, 31, 18" in line


def test_the_same_runs_give_the_same_bytes_in_any_order() -> None:
    first, second = build(), build()
    assert first == second
    shuffled = build(TABLE.iloc[::-1].reset_index(drop=True), TRIALS.sample(frac=1, random_state=3),
                     list(reversed(VERDICTS)))
    assert shuffled == first


def test_no_sweep_yet_still_lists_the_untested_claims() -> None:
    text = build(pd.DataFrame(), TRIALS.iloc[:0], VERDICTS)
    assert "No finished sweep yet." in text and '"principle sa-1"' in text and "## Block Summaries" in text


# ---- golden file: the whole path from a fixed MLflow store ----------------------------------------------
GOLDEN_RUNS = Path(__file__).parent / "data" / "memory_runs.json"  # the store's runs: tags, params, metrics, times
GOLDEN_MEMORY = Path(__file__).parent / "data" / "signal_memory.md"


def fixed_store(path: Path) -> str:
    """A sqlite MLflow store holding exactly the runs of GOLDEN_RUNS (their run ids remapped), with the sweeps'
    regime_row.json artifacts; its URI."""
    from mlflow.entities import Metric, Param

    spec = json.loads(GOLDEN_RUNS.read_text())
    uri = f"sqlite:///{path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment(spec["experiment"], (path / "artifacts").as_uri())
    new_id: dict[str, str] = {}
    for run in spec["runs"]:  # oldest first: a parent exists before its children
        tags = dict(run["tags"])
        if "mlflow.parentRunId" in tags:
            tags["mlflow.parentRunId"] = new_id[tags["mlflow.parentRunId"]]
        created = client.create_run(experiment, start_time=run["start_time"], tags=tags, run_name=run["name"])
        run_id = new_id[run["id"]] = created.info.run_id
        client.log_batch(run_id, params=[Param(k, v) for k, v in run["params"].items()],
                         metrics=[Metric(k, value, stamp, step) for k, history in run["metrics"].items()
                                  for step, stamp, value in history])
        for name, payload in run["artifacts"].items():
            client.log_dict(run_id, payload, name)
        client.set_terminated(run_id, run["status"], end_time=run["end_time"])
    return uri


def test_memory_from_a_fixed_mlflow_store_matches_the_golden_file(tmp_path: Path) -> None:
    """`python -m tuner memory --family signal` on a fixed two-regime smoke campaign writes the golden bytes.

    GOLDEN_RUNS holds the runs (tags, params, metric histories, times, regime_row.json) that `python -m tuner
    campaign --family signal --scale smoke --spaces chaotic_10k,chaotic_dale_10k --samples 3 --seed 0 --name golden`
    logged, exported from its store; no MLflow database is kept in git. After a deliberate change to the memory's
    format or to the signal spaces' claims, rewrite the golden file with TUNER_UPDATE_GOLDEN=1 and review the diff."""
    out = tmp_path / "memory.md"
    assert cli(["memory", "--family", "signal", "--tracking-uri", fixed_store(tmp_path), "--out", str(out)]) == 0
    written = out.read_text()
    if os.environ.get("TUNER_UPDATE_GOLDEN"):
        GOLDEN_MEMORY.write_text(written)
    assert written == GOLDEN_MEMORY.read_text()
