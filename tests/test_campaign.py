"""Campaigns: the spaces in block order, warm starts carried from earlier sweeps (only the parameters the next space
tunes, clipped into its ranges), bad input refused before Ray or MLflow load (fast); a two-space smoke campaign
through the CLI, and one interrupted in its second sweep and resumed (slow)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from cli_process import Cli
from test_faults import _env

from tuner.campaign import (
    STATE_FILE,
    CampaignSweep,
    campaign_spaces,
    carried_warm_starts,
    clip_value,
    with_carried,
)
from tuner.cli import main as cli
from tuner.plan import check_inputs
from tuner.space import load_space
from tuner.validation import TunerInputError


# ---- planning ----------------------------------------------------------------------------------------------
def test_default_spaces_run_in_block_order_and_named_ones_in_the_given_order() -> None:
    spaces = campaign_spaces("signal")
    blocks = [s.source.block for s in spaces]
    assert blocks == sorted(blocks) and len(set(blocks)) == len(blocks) >= 9
    assert [s.name for s in spaces[:3]] == ["chaotic_10k", "low_rank20_10k", "chaotic_dale_10k"]
    named = campaign_spaces("signal", ["chaotic_dale_20k", "chaotic_10k"])
    assert [s.name for s in named] == ["chaotic_dale_20k", "chaotic_10k"]
    with pytest.raises(TunerInputError, match="--spaces: 'f_field_400f' is a mpm_inr space"):
        campaign_spaces("signal", ["chaotic_10k", "f_field_400f"])


def _done(name: str, **best) -> CampaignSweep:
    return CampaignSweep(space=name, name=f"c-{name}", status="done", best=best)


def test_carried_warm_starts_set_only_the_next_spaces_parameters_clipped() -> None:
    target = load_space("low_rank20_10k").at_scale("cpu")  # + low_rank_factorization, low_rank {20, 30, 40}
    earlier = [(load_space("low_rank10_30k"),
                _done("low_rank10_30k", lr=3e-3, lr_W_ratio=5.0, coeff_W_L1=2e-6, batch_size=16,
                      low_rank_factorization=False, low_rank=15, not_here=7))]
    (carried,) = carried_warm_starts(target, earlier)
    assert carried.carried_from == "c-low_rank10_30k" and "low_rank10_30k" in carried.source
    assert carried.params == {"lr": 1e-3, "lr_W_ratio": 10.0, "coeff_W_L1": 2e-6, "batch_size": 16,
                              "low_rank_factorization": False, "low_rank": 20}  # clipped; nearest choice

    fewer = [(load_space("chaotic_10k"), _done("chaotic_10k", lr=2e-4, lr_W_ratio=80.0, coeff_W_L1=1e-5,
                                               batch_size=32))]
    (carried,) = carried_warm_starts(target, fewer)
    centres = target.prior_centers()
    assert carried.params == {"lr": 2e-4, "lr_W_ratio": 80.0, "coeff_W_L1": 1e-5, "batch_size": 32,
                              "low_rank_factorization": centres["low_rank_factorization"],
                              "low_rank": centres["low_rank"]}  # what the earlier space lacks: the prior centres
    spaced = with_carried(target, [carried])
    assert spaced.warm_starts[0] == target.warm_starts[0] and spaced.warm_starts[-1] == carried  # own ones first


def test_carried_warm_starts_most_similar_regime_first_limit_and_no_repeats() -> None:
    target = load_space("chaotic_dale_20k").at_scale("cpu")
    best = {"lr": 1.5e-4, "lr_W_ratio": 300.0, "coeff_W_L1": 1e-6, "batch_size": 8}
    own = target.warm_starts[0].params  # the space's own warm start is never carried again
    assert carried_warm_starts(target, [(load_space("chaotic_dale_10k"), _done("own", **own))]) == []
    earlier = [(load_space("chaotic_dale_10k"), _done("chaotic_dale_10k", **best)),  # shares 6 fixed settings
               (load_space("low_rank10_30k"), _done("low_rank10_30k", **{**best, "lr": 3e-4})),  # 3
               (load_space("chaotic_10k"), _done("chaotic_10k", **{**best, "lr": 2e-4}))]  # 4, latest
    assert [w.carried_from for w in carried_warm_starts(target, earlier, limit=1)] == ["c-chaotic_dale_10k"]
    assert [w.carried_from for w in carried_warm_starts(target, earlier, limit=3)] == \
        ["c-chaotic_dale_10k", "c-chaotic_10k", "c-low_rank10_30k"]
    repeated = [*earlier, (load_space("chaotic_dale_10k"), _done("again", **best))]
    assert [w.carried_from for w in carried_warm_starts(target, repeated, limit=5)] == \
        ["c-again", "c-chaotic_10k", "c-low_rank10_30k"]  # the latest among equals; the same config once
    assert carried_warm_starts(target, earlier, limit=0) == []


def test_clip_value_keeps_kinds_apart() -> None:
    space = load_space("low_rank20_10k")
    assert clip_value(space.params["low_rank_factorization"], 1) is None  # a number is no bool
    assert clip_value(space.params["low_rank_factorization"], True) is True
    assert clip_value(space.params["batch_size"], True) is None
    assert clip_value(space.params["batch_size"], 12) == 8 and clip_value(space.params["low_rank"], 38.0) == 40
    assert clip_value(space.params["lr"], "x") is None and clip_value(space.params["lr"], 1.0) == 1e-3


def test_carried_values_survive_planning_of_a_space_with_scale_ranges() -> None:
    """A warm start carried at the campaign's scale is not moved again when the sweep is planned at that scale."""
    target = load_space("s_field_400f").at_scale("cpu")  # hidden_dim 96-256 at cpu (512-2048 in the file)
    earlier = [(load_space("c_field_400f"), _done("c_field_400f", hidden_dim=400, omega=30.0))]
    spaced = with_carried(target, carried_warm_starts(target, earlier))
    planned = check_inputs(spaced, scale="cpu").space.at_scale("cpu")
    assert planned.warm_starts[-1].params["hidden_dim"] == 256
    assert planned.warm_starts[:-1] == target.warm_starts


# ---- bad input -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--family", "nope"], "--family: unknown family 'nope'"),
    (["--family", "signal", "--scale", "huge"], "--scale: 'huge' is not a scale"),
    (["--family", "signal", "--spaces", "chaotic_10k,bogus"], "--spaces: unknown space 'bogus'"),
    (["--family", "signal", "--spaces", ","], "--spaces: name at least one space"),
    (["--family", "signal", "--spaces", "chaotic_10k,chaotic_10k"], "--spaces: each space once"),
    (["--family", "signal", "--samples", "0"], "--samples: must be at least 1"),
    (["--family", "signal", "--max-concurrent", "0"], "--max-concurrent: must be at least 1"),
    (["--family", "signal", "--carry", "-1"], "--carry: must be 0 or more"),
    (["--family", "hartmann"], "no hartmann space names a seed block"),
])
def test_bad_campaign_input_exits_2_and_writes_nothing(results: Path, capsys, args: list[str], message: str) -> None:
    argv = ["campaign", "--scale", "smoke", *args] if "--scale" not in args else ["campaign", *args]
    assert cli(argv) == 2
    assert message in capsys.readouterr().err
    assert not results.exists()


def test_bad_input_is_answered_before_ray_or_mlflow_load(tmp_path: Path) -> None:
    probe = ("import sys; from tuner.cli import main; "
             "rc = main(['campaign', '--family', 'signal', '--scale', 'cpu', '--samples', '0']); "
             "print(rc, sorted(m for m in ('ray', 'mlflow', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "TUNER_RESULTS": str(tmp_path / "results")})
    assert done.stdout.split("\n")[0] == "2 []", done.stdout + done.stderr
    assert cli(["resume-campaign", str(tmp_path / "none")]) == 2


# ---- through the CLI -------------------------------------------------------------------------------------
TWO = ["campaign", "--family", "signal", "--scale", "smoke", "--spaces", "chaotic_10k,low_rank20_10k",
       "--samples", "2"]


def _store(results: Path) -> tuple[MlflowClient, list, dict[str, list], list]:
    """The campaign runs, each sweep's run by space, and the trial runs."""
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("signal").experiment_id], max_results=1000)
    campaigns = [r for r in runs if r.data.tags.get("tuner.kind") == "campaign"]
    sweeps: dict[str, list] = {}
    for run in runs:
        if run.data.tags.get("tuner.kind") == "sweep":
            sweeps.setdefault(run.data.tags["space"], []).append(run)
    trials = [r for r in runs if "tuner.trial_id" in r.data.tags]
    return client, campaigns, sweeps, trials


def _check_finished_campaign(results: Path, name: str) -> dict:
    client, campaigns, sweeps, trials = _store(results)
    (campaign,) = campaigns
    assert campaign.info.run_name == name and campaign.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(campaign.info.run_id)} >= {"memory.md", "regime_table.md"}
    assert sorted(sweeps) == ["chaotic_10k", "low_rank20_10k"] and all(len(v) == 1 for v in sweeps.values())
    for space, (run,) in sweeps.items():
        assert run.data.tags["mlflow.parentRunId"] == campaign.info.run_id  # nested: campaign > sweep > trials
        assert run.data.tags["tuner.campaign"] == name and run.info.run_name == f"{name}-{space}"
        assert run.info.status == "FINISHED"
        assert len([t for t in trials if t.data.tags["mlflow.parentRunId"] == run.info.run_id]) == 2
    state = json.loads((results / "campaigns" / name / STATE_FILE).read_text())
    assert [s["status"] for s in state["sweeps"]] == ["done", "done"]

    # the second sweep's carried warm start: the first one's best, where low_rank20_10k has the parameter
    first_best = state["sweeps"][0]["best"]
    (carried,) = json.loads(sweeps["low_rank20_10k"][0].data.tags["tuner.carried"])
    assert carried["from"] == f"{name}-chaotic_10k" and state["sweeps"][1]["carried_from"] == [carried["from"]]
    assert {k: carried["params"][k] for k in first_best} == first_best
    assert set(carried["params"]) == {"lr", "lr_W_ratio", "coeff_W_L1", "batch_size", "low_rank_factorization",
                                      "low_rank"}
    second = [t for t in trials if t.data.tags["mlflow.parentRunId"] == sweeps["low_rank20_10k"][0].info.run_id]
    tuned = [{k.removeprefix("tuned."): json.loads(v.lower()) for k, v in t.data.params.items()
              if k.startswith("tuned.")} for t in second]
    assert carried["params"] in tuned  # it ran

    memory = (results / "campaigns" / name / "memory.md").read_text()
    for heading in ("### Regime Comparison Table", "### Established Principles", "### Open Questions",
                    f"### Block 1: chaotic_10k (sweep {name}-chaotic_10k, scale smoke)",
                    f"### Block 2: low_rank20_10k (sweep {name}-low_rank20_10k, scale smoke)"):
        assert heading in memory
    table = memory[memory.index("### Regime Comparison Table"):memory.index("### Established Principles")]
    assert len(re.findall(r"^\| [12] ", table, flags=re.MULTILINE)) == 2
    return state


@pytest.mark.slow
def test_two_space_campaign_nests_its_sweeps_carries_the_best_config_and_writes_the_memory(
        tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    env = _env(results, isolated_cache)
    run = Cli([*TWO, "--name", "camp"], env)
    assert run.finish() == 0, run.output
    assert "warm start carried from camp-chaotic_10k" in run.output
    _check_finished_campaign(results, "camp")
    monkeypatch.setenv("TUNER_RESULTS", str(results))  # the family's memory from the store, twice: the same bytes
    assert cli(["memory", "--family", "signal"]) == 0
    assert cli(["memory", "--family", "signal", "--out", str(tmp_path / "again.md")]) == 0
    assert (results / "signal_memory.md").read_bytes() == (tmp_path / "again.md").read_bytes()


@pytest.mark.slow
def test_campaign_interrupted_in_its_second_sweep_resumes_without_rerunning_the_first(
        tmp_path: Path, isolated_cache: Path) -> None:
    results = tmp_path / "results"
    env = _env(results, isolated_cache)
    run = Cli([*TWO, "--name", "cut"], env)
    run.wait_for(r"sweep 2/2")
    reports = sum(bool(re.search(r" report \d+/", line)) for line in list(run.lines))
    run.wait_for(r" report \d+/", count=reports + 1)  # the second sweep reported once
    os.killpg(run.proc.pid, signal.SIGINT)
    assert run.finish() == 130, run.output
    assert "python -m tuner resume-campaign" in run.output
    state = json.loads((results / "campaigns" / "cut" / STATE_FILE).read_text())
    assert [s["status"] for s in state["sweeps"]] == ["done", "running"]
    _, campaigns, sweeps, trials = _store(results)
    assert campaigns[0].info.status == "KILLED" and campaigns[0].data.tags["interrupted"] == "true"
    first_trials = sorted(t.info.run_id for t in trials
                          if t.data.tags["mlflow.parentRunId"] == sweeps["chaotic_10k"][0].info.run_id)

    resumed = Cli(["resume-campaign", "cut"], env)
    assert resumed.finish() == 0, resumed.output
    assert "sweep 1/2" not in resumed.output and "sweep 2/2" in resumed.output
    _check_finished_campaign(results, "cut")
    _, _, sweeps, trials = _store(results)
    assert sorted(t.info.run_id for t in trials
                  if t.data.tags["mlflow.parentRunId"] == sweeps["chaotic_10k"][0].info.run_id) == first_trials
