"""Checkable principles: each claim kind judged on hand-built trial tables with known verdicts, claim validation on
load, the trials of a family read back from MLflow, and `tuner principles` on a small store (fast); one smoke sweep
logs its verdicts and is judged again by the CLI (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from pydantic import TypeAdapter

from tuner.claims import Claim
from tuner.cli import main as cli
from tuner.family import get_family
from tuner.principles import Verdict, pooled_verdicts, verdicts
from tuner.space import Principle, load_space, space_files
from tuner.tracking import family_trials
from tuner.validation import TunerInputError

# chaotic_10k: lr [1e-5, 1e-3] log, lr_W_ratio [10, 3000] log, coeff_W_L1 [5e-7, 1e-3] log, batch_size {8, 16, 32};
# derived lr_W = lr * lr_W_ratio
SPACE = load_space("chaotic_10k")
FAMILY = get_family("signal")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def trial(i: int, r2: float, *, ratio: float = 70.0, status: str = "finished", outcome: str | None = None,
          batch: int = 32, l1: float = 1e-5, lr: float = 1e-4, **metrics: float) -> dict:
    """One row of a trials table, as `tuner.table.trials_frame` writes it."""
    row = {"trial_id": f"t{i}", "status": status,
           "outcome": outcome or ("converged" if r2 > 0.9 else "partial" if r2 >= 0.1 else "failed"),
           "param.lr": lr, "param.lr_W_ratio": ratio, "param.coeff_W_L1": l1, "param.batch_size": batch,
           "setting.lr_W": lr * ratio, "setting.n_frames": 10000, "metric.connectivity_R2": r2}
    row.update({f"metric.{k}": v for k, v in metrics.items()})
    return row


def judge(claim: dict, rows: list[dict], space=SPACE) -> Verdict:
    principle = Principle(text="a principle", source="a test", claim=TypeAdapter(Claim).validate_python(claim))
    (verdict,) = verdicts(space.model_copy(update={"principles": [principle]}), pd.DataFrame(rows), FAMILY)
    return verdict


# ---- optimum_in ---------------------------------------------------------------------------------------------
OPTIMUM = {"kind": "optimum_in", "param": "lr_W_ratio", "low": 40, "high": 100}


def test_optimum_in_confirmed_when_most_of_the_top_k_lie_inside() -> None:
    rows = [trial(0, 0.999, ratio=60), trial(1, 0.998, ratio=90), trial(2, 0.97, ratio=300),
            trial(3, 0.95, ratio=1000), trial(4, 0.5, ratio=20), trial(5, 0.99, ratio=50, status="pruned")]
    verdict = judge(OPTIMUM, rows)
    assert verdict.status == "confirmed" and verdict.trials == ["t0", "t1", "t2"]
    assert verdict.counts == {"finished": 5, "inside": 2, "outside": 3, "top_inside": 2}


def test_optimum_in_contradicted_when_no_top_trial_lies_inside() -> None:
    rows = [trial(0, 0.999, ratio=300), trial(1, 0.998, ratio=500), trial(2, 0.99, ratio=200),
            trial(3, 0.6, ratio=60), trial(4, 0.5, ratio=20)]
    assert judge(OPTIMUM, rows).status == "contradicted"


def test_optimum_in_on_an_expression_reads_settings_and_params() -> None:
    rows = [trial(0, 0.999, ratio=60), trial(1, 0.998, ratio=90), trial(2, 0.97, ratio=300),
            trial(3, 0.95, ratio=1000), trial(4, 0.5, ratio=20)]
    assert judge({**OPTIMUM, "param": "lr_W / lr"}, rows).status == "confirmed"
    assert judge({**OPTIMUM, "param": "lr_W / lr", "low": 900, "high": 2000}, rows).status == "contradicted"


def test_optimum_in_inconclusive_with_too_few_trials_says_what_to_run() -> None:
    verdict = judge(OPTIMUM, [trial(0, 0.99, ratio=60), trial(1, 0.9, ratio=300)])
    assert verdict.status == "inconclusive" and "3 more finished trials (have 2 of 5)" in verdict.decide
    verdict = judge(OPTIMUM, [trial(i, 0.9 + i / 100, ratio=300 + i) for i in range(6)])  # none inside
    assert verdict.status == "inconclusive" and "with lr_W_ratio in [40, 100]" in verdict.decide
    assert "--set lr_W_ratio=63.25" in verdict.decide  # the geometric middle of the range (a log parameter)


def test_optimum_in_untested_when_the_space_cannot_reach_a_side() -> None:
    rows = [trial(i, 0.99, ratio=70) for i in range(6)]
    assert judge({**OPTIMUM, "low": 4000, "high": 5000}, rows).status == "untested"  # beyond [10, 3000]
    verdict = judge(OPTIMUM, rows, space=SPACE.pin({"lr_W_ratio": 70}))  # pinned: no trial outside
    assert verdict.status == "untested" and "fixed at 70" in verdict.evidence


# ---- fails_beyond / succeeds_within ----------------------------------------------------------------------------
FAILS = {"kind": "fails_beyond", "param": "coeff_W_L1", "above": 1e-4, "failing": ["failed"]}


def test_fails_beyond_confirmed_by_failure_rates_on_each_side() -> None:
    rows = [trial(0, float("nan"), l1=5e-4, status="diverged", outcome="failed"), trial(1, 0.05, l1=3e-4),
            trial(2, 0.95, l1=2e-4), trial(3, 0.99, l1=1e-5), trial(4, 0.98, l1=1e-6),
            trial(5, 0.5, l1=5e-4, status="pruned")]  # pruned: stopped, not ended
    verdict = judge(FAILS, rows)
    assert verdict.status == "confirmed" and verdict.trials == ["t0", "t1"]
    assert verdict.counts == {"beyond": 3, "failing_beyond": 2, "within": 2, "failing_within": 0,
                              "pruned_left_out": 1}


def test_fails_beyond_contradicted_when_trials_beyond_the_bound_succeed() -> None:
    rows = [trial(0, 0.99, l1=5e-4), trial(1, 0.97, l1=3e-4), trial(2, 0.99, l1=1e-5), trial(3, 0.05, l1=1e-6)]
    verdict = judge(FAILS, rows)
    assert verdict.status == "contradicted" and verdict.trials == ["t0", "t1"]
    everywhere = [trial(0, 0.05, l1=5e-4), trial(1, 0.05, l1=3e-4), trial(2, 0.05, l1=1e-5), trial(3, 0.05, l1=1e-6)]
    assert judge(FAILS, everywhere).status == "contradicted"  # the bound separates nothing


def test_fails_beyond_inconclusive_and_untested() -> None:
    rows = [trial(0, 0.05, l1=5e-4), trial(1, 0.99, l1=1e-5), trial(2, 0.99, l1=1e-6)]
    verdict = judge(FAILS, rows)
    assert verdict.status == "inconclusive" and "1 more ended trials with coeff_W_L1 > 0.0001" in verdict.decide
    below = {"kind": "fails_beyond", "param": "coeff_W_L1", "below": 5e-7}  # the range starts at 5e-7
    assert judge(below, rows).status == "untested"


def test_succeeds_within_counts_the_family_success() -> None:
    claim = {"kind": "succeeds_within", "param": "lr_W_ratio", "low": 40, "high": 100}
    good = [trial(i, 0.99, ratio=50 + i) for i in range(3)] + [trial(3, 0.2, ratio=2000)]
    assert judge(claim, good).status == "confirmed"
    assert judge(claim, [trial(i, 0.5, ratio=50 + i) for i in range(3)]).status == "contradicted"
    assert judge(claim, good[:2]).status == "inconclusive"


# ---- beats ----------------------------------------------------------------------------------------------------
BEATS = {"kind": "beats", "param": "batch_size", "value": 32, "over": [8, 16]}


def test_beats_best_per_group() -> None:
    rows = [trial(0, 0.99, batch=32), trial(1, 0.90, batch=32), trial(2, 0.95, batch=8), trial(3, 0.97, batch=16)]
    verdict = judge(BEATS, rows)
    assert verdict.status == "confirmed" and verdict.trials == ["t0", "t3"]
    tie = judge({**BEATS, "by": 0.05}, rows)  # 0.02 better: a tie within the margin
    assert tie.status == "inconclusive" and "a tie within 0.05" in tie.evidence
    assert judge({**BEATS, "value": [8, 16], "over": 32}, rows).status == "contradicted"
    assert judge(BEATS, rows[:3]).status == "inconclusive"  # one trial with batch 8 or 16: two needed
    assert judge({**BEATS, "value": 64}, rows).status == "untested"  # not among the choices


def test_beats_matched_pairs_compare_otherwise_equal_trials() -> None:
    claim = {**BEATS, "over": 8, "method": "matched", "min_each": 2}
    rows = [trial(0, 0.99, batch=32, ratio=50), trial(1, 0.95, batch=8, ratio=50),
            trial(2, 0.97, batch=32, ratio=500), trial(3, 0.90, batch=8, ratio=500),
            trial(4, 0.999, batch=8, ratio=80)]  # no partner: does not count
    verdict = judge(claim, rows)
    assert verdict.status == "confirmed" and verdict.counts == {"pairs": 2, "wins": 2, "losses": 0}
    assert judge({**claim, "value": 8, "over": 32}, rows).status == "contradicted"
    assert judge({**claim, "by": 0.1}, rows).status == "inconclusive"  # both pairs within the margin: ties
    assert judge(claim, rows[:2]).status == "inconclusive"


# ---- reachable / ceiling -----------------------------------------------------------------------------------------
def test_reachable_and_ceiling() -> None:
    reach, ceiling = {"kind": "reachable", "value": 0.999}, {"kind": "ceiling", "value": 0.95, "min_finished": 3}
    high = [trial(0, 0.9995), trial(1, 0.5)]
    low = [trial(i, 0.9 + i / 100) for i in range(3)]
    assert judge(reach, high).status == "confirmed" and judge(reach, high).trials == ["t0"]
    assert judge(reach, low).status == "contradicted"
    assert judge(reach, low[:1]).status == "inconclusive"
    assert judge(ceiling, high).status == "contradicted" and judge(ceiling, high).trials == ["t0"]
    assert judge(ceiling, low).status == "confirmed"
    assert judge(ceiling, low[:2]).status == "inconclusive"
    assert judge(reach, [trial(0, 0.9995, status="pruned")]).status == "inconclusive"  # only finished trials count


# ---- drives -----------------------------------------------------------------------------------------------------
def _random_trials(driver: str, n: int = 14) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        ratio, lr = 10 ** rng.uniform(1, 3.4), 10 ** rng.uniform(-5, -3)
        l1, batch = 10 ** rng.uniform(-6, -3), int(rng.choice([8, 16, 32]))
        value = {"lr_W_ratio": -abs(np.log10(ratio / 70)), "lr": -abs(np.log10(lr / 1e-4))}[driver]
        rows.append(trial(i, 1 + value / 3, ratio=ratio, lr=lr, l1=l1, batch=batch))
    return rows


def test_drives_by_importance() -> None:
    claim = {"kind": "drives", "param": "lr_W_ratio"}
    verdict = judge(claim, _random_trials("lr_W_ratio"))
    assert verdict.status == "confirmed" and verdict.evidence.startswith("fANOVA importance over 14 finished")
    assert judge(claim, _random_trials("lr")).status == "contradicted"
    assert judge(claim, _random_trials("lr_W_ratio")[:3]).status == "inconclusive"
    assert judge(claim, _random_trials("lr_W_ratio"), space=SPACE.pin({"lr_W_ratio": 70})).status == "untested"


# ---- metric_in, where, scales, metrics ------------------------------------------------------------------------------
def test_metric_in_by_share_of_the_trials_reporting_it() -> None:
    claim = {"kind": "metric_in", "metric": "spectral_radius", "low": 0.55, "high": 0.75}
    assert judge(claim, [trial(i, 0.9, spectral_radius=0.65) for i in range(2)]).status == "confirmed"
    verdict = judge(claim, [trial(i, 0.9, spectral_radius=1.02) for i in range(2)])
    assert verdict.status == "contradicted" and "spectral_radius 1.02 over 2 trials" in verdict.evidence
    assert judge(claim, [trial(0, 0.9, status="pruned")]).status == "inconclusive"
    assert judge({**claim, "metric": "nonsense"}, [trial(0, 0.9)]).status == "untested"  # nobody reports it


def test_where_filters_trials_and_scales_restrict_them() -> None:
    claim = {"kind": "ceiling", "value": 0.95, "min_finished": 2, "where": {"metric.eff_rank_99_ref": {"high": 15}}}
    rows = [trial(0, 0.92, eff_rank_99_ref=10), trial(1, 0.93, eff_rank_99_ref=12), trial(2, 0.999, eff_rank_99_ref=33)]
    assert judge(claim, rows).status == "confirmed"  # the 0.999 trial has a rich draw: not looked at
    assert judge({**claim, "where": {}}, rows).status == "contradicted"
    pinned = judge({**claim, "where": {"batch_size": 8}}, rows, space=SPACE.pin({"batch_size": 32}))
    assert pinned.status == "untested" and "batch_size = 8" in pinned.evidence
    at_cpu = [{**row, "scale": "cpu"} for row in rows]
    verdict = judge({**claim, "scales": ["full"]}, at_cpu)
    assert verdict.status == "untested" and "--scale full" in verdict.decide  # the cheapest scale it speaks of
    assert judge({**claim, "scales": ["cpu", "full"]}, at_cpu).evidence.endswith("(trials at cpu)")


# ---- validation on load ----------------------------------------------------------------------------------------------
def _space_file(tmp_path: Path, claim: dict) -> Path:
    data = yaml.safe_load(space_files()["chaotic_10k"].read_text())
    data["principles"][0]["claim"] = claim
    path = tmp_path / "claimed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("claim, field", [
    ({**OPTIMUM, "param": "lr_W_ratoi"}, "principles[0].claim.param"),
    ({**OPTIMUM, "param": "lr_W / learning_rate"}, "principles[0].claim.param"),
    ({**BEATS, "where": {"n_neuronz": 100}}, "principles[0].claim.where.n_neuronz"),
])
def test_a_claim_on_an_unknown_setting_names_the_field_and_the_allowed_names(tmp_path, claim, field) -> None:
    with pytest.raises(TunerInputError) as err:
        load_space(_space_file(tmp_path, claim))
    message = str(err.value)
    assert field in message and "lr_W:lr ratio is the key parameter" in message
    assert "allowed: Dale_law, batch_size, coeff_W_L1" in message  # params, derived and fixed, sorted


@pytest.mark.parametrize("claim, field", [
    ({"kind": "fails_beyond", "param": "lr", "below": 1e-5, "above": 1e-3}, "principles.0.claim.fails_beyond"),
    ({**OPTIMUM, "low": 200}, "principles.0.claim.optimum_in"),
    ({"kind": "optimum", "param": "lr"}, "principles.0.claim"),
])
def test_a_malformed_claim_names_the_field(tmp_path, claim, field) -> None:
    with pytest.raises(TunerInputError, match=field.replace(".", r"\.")):
        load_space(_space_file(tmp_path, claim))


def test_every_shipped_claim_names_settings_of_its_space() -> None:
    by_family: dict[str, int] = {}
    for path in space_files().values():
        space = load_space(path)  # validated on load: every claim names settings of its space
        by_family[space.family] = by_family.get(space.family, 0) + sum(p.claim is not None for p in space.principles)
    assert by_family["signal"] >= 6 and by_family["mpm_inr"] >= 6
    assert by_family["flyvis"] >= 1 and by_family["emma"] >= 1


def test_without_trials_every_shipped_claim_is_untested_and_names_the_sweep_that_would_decide_it() -> None:
    for path in space_files().values():
        space = load_space(path)
        judged = verdicts(space, pd.DataFrame(), get_family(space.family))
        assert {v.status for v in judged} <= {"untested"}, space.name
        assert all(v.decide.startswith(f"a sweep of {space.name}") for v in judged), space.name


# ---- pooled over MLflow -------------------------------------------------------------------------------------------
def _store(tmp_path: Path) -> str:
    """A sqlite MLflow store with two signal sweeps as the driver logs them: one of chaotic_10k (4 trials, one
    pruned, one diverged) and one that changed the regime with --set n_frames=20000."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("signal", (tmp_path / "artifacts").as_uri())
    for sweep, overrides, values in (("a", {}, [(70, 0.9995, "FINISHED"), (80, 0.999, "FINISHED"),
                                                 (2000, 0.4, "KILLED"), (3000, float("nan"), "FAILED")]),
                                     ("b", {"set.n_frames": "20000"}, [(60, 0.99, "FINISHED")])):
        parent = client.create_run(experiment, run_name=sweep,
                                   tags={"tuner.kind": "sweep", "space": "chaotic_10k", "scale": "cpu"})
        for key, value in overrides.items():
            client.log_param(parent.info.run_id, key, value)
        for i, (ratio, r2, status) in enumerate(values):
            tags = {"mlflow.parentRunId": parent.info.run_id, "tuner.trial_id": f"{sweep}{i}",
                    "pruned": str(status == "KILLED").lower(), "diverged": str(status == "FAILED").lower(),
                    "outcome": "converged" if r2 > 0.9 else "failed"}
            run = client.create_run(experiment, tags=tags).info.run_id
            for key, value in {"tuned.lr_W_ratio": ratio, "tuned.lr": 1e-4, "tuned.coeff_W_L1": 1e-5,
                               "tuned.batch_size": 32, "lr_W": 1e-4 * ratio, "Dale_law": False,
                               "n_frames": overrides.get("set.n_frames", 10000)}.items():
                client.log_param(run, key, value)
            client.log_metric(run, "connectivity_R2", 0.1, step=1)
            client.log_metric(run, "connectivity_R2", r2, step=2)
            client.log_metric(run, "eff_rank_99_ref", 33.0, step=2)
            client.set_terminated(run, status)
        client.set_terminated(parent.info.run_id, "FINISHED")
    return uri


def test_family_trials_read_back_from_mlflow_and_pooled(tmp_path) -> None:
    uri = _store(tmp_path)
    trials = family_trials(uri, "signal")
    assert sorted(trials["status"]) == ["diverged", "finished", "finished", "finished", "pruned"]
    first = trials[trials["trial_id"] == "a0"].iloc[0]
    assert (first["param.lr_W_ratio"], first["param.batch_size"], first["setting.Dale_law"]) == (70, 32, False)
    assert first["metric.connectivity_R2"] == 0.9995  # the last report, not the first
    assert (first["sweep"], first["space"], first["scale"]) == ("a", "chaotic_10k", "cpu")
    judged, left_out = pooled_verdicts(FAMILY, [SPACE], trials)
    assert left_out == {"chaotic_10k": ["b"]}  # --set n_frames=20000 is another regime
    reached = next(v for v in judged if v.kind == "reachable")
    assert reached.status == "confirmed" and reached.trials == ["a0"]


def test_principles_command_prints_the_verdicts(tmp_path, results, capsys) -> None:
    uri = _store(tmp_path)
    assert cli(["principles", "--family", "signal", "--space", "chaotic_10k", "--tracking-uri", uri]) == 0
    printed = capsys.readouterr().out
    assert "| chaotic_10k" in printed and "| confirmed" in printed and "| untested" in printed
    assert "left out 1 sweep(s) whose --set changed the regime: b" in printed
    assert (results / "signal_principles.md").exists()


@pytest.mark.parametrize("argv, message", [
    (["principles", "--family", "nope"], "unknown family 'nope'; registered families: emma, flyvis"),
    (["principles", "--family", "signal", "--space", "f_field_400f"], "is a mpm_inr space"),
    (["principles", "--family", "signal", "--tracking-uri", "foo://bar"], "--tracking-uri"),
])
def test_principles_command_refuses_bad_input(results, capsys, argv, message) -> None:
    assert cli(argv) == 2
    assert message in capsys.readouterr().err
    assert not results.exists()


# ---- after a real sweep ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("ray_2gpu")
def test_a_sweep_logs_its_verdicts_and_the_command_judges_them_again(results, capsys) -> None:
    from tuner import sweep

    out = sweep("chaotic_10k", scale="smoke", samples=4, seed=2, max_concurrent=2, name="judged")
    folder = results / "chaotic_10k" / "judged"
    markdown = (folder / "principles.md").read_text()
    assert markdown.startswith("# Principles: judged: chaotic_10k at scale smoke")
    assert "**untested**: L1 lower bound" in markdown  # the space's coeff_W_L1 range starts at the bound
    assert "**untested**: chaotic, Dale=False, 10k frames: best R²" in markdown  # claimed at cpu and full only
    client = MlflowClient(out.plan.tracking_uri)
    run = client.get_run(out.parent_run_id)
    payload = json.loads(Path(client.download_artifacts(out.parent_run_id, "principles.json")).read_text())
    statuses = [v["status"] for v in payload["verdicts"]]
    assert len(statuses) == 6 and run.data.tags["principles.untested"] == str(statuses.count("untested"))
    assert run.data.metrics["principles_confirmed"] == statuses.count("confirmed")
    assert {"principles_table.json", "principles.md"} <= {a.path for a in client.list_artifacts(out.parent_run_id)}
    page = (folder / "report.html").read_text()
    assert page.count('class="verdict untested"') == statuses.count("untested")

    assert cli(["principles", "--family", "signal", "--space", "chaotic_10k"]) == 0
    printed = capsys.readouterr().out
    assert "4 trials of 1 sweeps" in printed and printed.count("| chaotic_10k") == 6
