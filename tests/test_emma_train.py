"""Settings validation, the trainer (spec §4) and the single-run entry point of the emma family."""

import json
import math
import subprocess
import sys

import pytest
import torch
from recording import Interrupted, Recorder

from trainables.emma.family import FAMILY, regime
from trainables.emma.settings import EmmaSettings
from trainables.emma.train import FINAL_METRICS
from trainables.runtime import TRAINER_CHECKPOINT
from tuner.family import families
from tuner.single_run import main
from tuner.validation import TunerInputError, validate_settings

TINY = {"seq_len": 48, "train_size": 48, "val_size": 16, "mem_dim": 64, "memory_slots": 64, "memory_buckets": 8,
        "hid_dim": 32, "emb_dim": 16, "epochs": 3, "n_reports": 3, "device": "cpu"}




def train(folder, checkpoint=None, stop_after=None, **overrides):
    session = Recorder(folder, checkpoint, stop_after)
    FAMILY.run(validate_settings(EmmaSettings, {**TINY, **overrides}), session)
    return session


@pytest.mark.parametrize("values, named", [
    ({"task": "copy"}, "task"),
    ({"memory_slots": 100, "memory_buckets": 32}, "memory_slots"),
    ({"mem_dim": 255}, "mem_dim"),
    ({"n_pairs": 80}, "n_pairs"),
    ({"seq_len": 16, "n_pairs": 4}, "n_pairs"),
    ({"task": "listops", "seq_len": 256}, "seq_len"),
    ({"write_decay": 1.5}, "write_decay"),
    ({"oracle_mix_schedule": [1.0, 1.2]}, "oracle_mix_schedule"),
    ({"sharpen_topk": 64}, "sharpen_topk"),
    ({"n_reports": 5, "epochs": 3}, "n_reports"),
    ({"device": "tpu"}, "device"),
    ({"memory_mode": "global"}, "memory_mode"),
    ({"lamda_pred": 0.3}, "lamda_pred"),
])
def test_bad_settings_name_the_field(values, named):
    with pytest.raises(TunerInputError, match=named):
        validate_settings(EmmaSettings, values)


def test_family_registration_and_regime_columns():
    assert families()["emma"] is FAMILY and FAMILY.metric == "val_acc_honest"
    row = regime(EmmaSettings().model_dump())
    assert row["Regime"] == "needle L=256, n_pairs=2" and row["memory"] == "per_sequence"
    assert regime(EmmaSettings(task="listops", seq_len=512).model_dump())["Regime"] == "listops L=512"


@pytest.mark.parametrize("scope", ["timestep", "prototype"])
def test_short_run_lowers_the_loss_and_reports_everything(tmp_path, scope):
    session = train(tmp_path, seq_len=32, train_size=256, warm_start_epochs=0, oracle_mix_schedule=[0.5], lr=5e-3,
                    nce_lambda_max=0.0, nce_scope=scope, nce_open_loop_start=0.5, nce_open_loop_end=0.5)  # fixed
    losses = [r["train_loss"] for r in session.history]
    assert len(session.history) == 3 and losses[0] > losses[1] > losses[2]
    first, last = session.history[0], session.history[-1]
    if scope == "prototype":                                             # the minimal release's CE is not vacuous
        assert first["train_aux_nce"] > 2.0 and first["lambda_nce"] == 0.5
        assert last["train_aux_nce"] < first["train_aux_nce"]
    else:
        assert last["train_aux_write"] < 0.95 * first["train_aux_write"]  # v_pred learns the value
    assert [r["epoch"] for r in session.history] == [1, 2, 3]
    assert all("val_acc_honest" in r and "val_acc" in r for r in session.history)
    final = session.history[-1]
    assert set(FINAL_METRICS) <= final.keys() and final["diverged"] == 0.0
    assert final["best_val_acc"] == max(r["val_acc"] for r in session.history)
    assert (session.saved[-1] / TRAINER_CHECKPOINT).exists()


def test_resume_equals_an_uninterrupted_run(tmp_path):
    settings = {"epochs": 4, "n_reports": 4, "warm_start_epochs": 1, "nce_gate_start_epoch": 2,
                "nce_gate_read_threshold": 0.0, "nce_lambda_increment": 0.01, "value_dropout": 0.1,
                "post_gate_write_cooldown_batches": 1, "lr_warm_restart_factor": 0.5, "lr_warm_restart_epochs": 1}
    whole = train(tmp_path / "whole", **settings)
    with pytest.raises(Interrupted):
        train(tmp_path / "part", stop_after=2, **settings)
    resumed = train(tmp_path / "resumed", checkpoint=tmp_path / "part" / "report2", **settings)
    assert len(resumed.history) == 2
    for key in ("train_loss", "val_acc", "val_acc_honest", "lambda_nce", "nce_read_ema_cos", "best_val_acc"):
        assert whole.history[-1][key] == resumed.history[-1][key], key
    a = torch.load(whole.saved[-1] / TRAINER_CHECKPOINT, weights_only=False)["model"]
    b = torch.load(resumed.saved[-1] / TRAINER_CHECKPOINT, weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole.history[-1]["nce_gate_epoch"] == 2                     # the gate and its effects were exercised


def test_divergence_is_reported_once_and_returns(tmp_path):
    session = train(tmp_path, lr=1e30, grad_clip=0.0, epochs=2, n_reports=2)
    assert len(session.history) == 1 and session.saved == []
    report = session.history[0]
    assert report["diverged"] == 1.0 and math.isnan(report["val_acc_honest"]) and FAMILY.classify(report) == "failed"


def test_listops_run_and_single_run_cli(tmp_path, capsys):
    sets = [f"{k}={v}" for k, v in {**TINY, "task": "listops", "seq_len": 345, "epochs": 1, "n_reports": 1}.items()]
    assert main(FAMILY, ["--set", *sets, "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "val_acc_honest: " in out and "outcome: " in out
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["settings"]["task"] == "listops" and 0.4 < written["metrics"]["majority_acc"] < 0.8
    assert main(FAMILY, ["--set", "memory_mode=global", "--out", str(tmp_path / "bad")]) == 2
    assert "memory_mode" in capsys.readouterr().err


def test_family_imports_no_orchestration_libraries():
    code = "import sys, trainables.emma.family; print(sorted({'ray', 'mlflow', 'optuna'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
