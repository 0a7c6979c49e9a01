"""Settings validation, the trainer (spec §4) and the single-run entry point of the signal family."""

import json
import math
import subprocess
import sys

import pytest
import torch
from recording import Interrupted, Recorder

from trainables.signal.family import FAMILY, regime
from trainables.signal.settings import SignalSettings, steps_per_epoch
from trainables.runtime import TRAINER_CHECKPOINT
from trainables.signal.train import loss_coefficients
from tuner.family import families
from tuner.single_run import main
from tuner.validation import TunerInputError, validate_settings

TINY = {"n_neurons": 30, "n_frames": 1000, "data_augmentation_loop": 10, "n_rollout_frames": 200, "n_reports": 5}
FINAL = {"connectivity_R2", "test_R2", "test_pearson", "eff_rank_90", "eff_rank_99", "eff_rank_90_ref",
         "eff_rank_99_ref", "spectral_radius", "cluster_accuracy", "final_loss", "training_time_min", "diverged", "loss"}
# a seconds-long run that recovers W: N=25, 2000 frames, 1000 steps (Niter = int((2000*20 // 8)*0.2))
RECOVER = {"n_neurons": 25, "n_frames": 2000, "data_augmentation_loop": 20, "n_rollout_frames": 100, "n_reports": 1,
           "lr_W": 3e-2, "lr": 1e-3, "coeff_W_L1": 1e-5, "batch_size": 8, "device": "cpu"}




def train(folder, checkpoint=None, stop_after=None, **overrides):
    session = Recorder(folder, checkpoint, stop_after)
    FAMILY.run(validate_settings(SignalSettings, {**TINY, **overrides}), session)
    return session


def final_w(session):
    return torch.load(session.saved[-1] / TRAINER_CHECKPOINT, weights_only=True)["model"]["W"]


@pytest.mark.parametrize("values, named", [
    ({"connectivity_type": "ring"}, "connectivity_type"),
    ({"Dale_law_factor": 1.5}, "Dale_law_factor"),
    ({"connectivity_rank": 200}, "n_neurons"),
    ({"low_rank": 200}, "low_rank"),
    ({"n_frames": 0}, "n_frames"),
    ({"batch_size": 0}, "batch_size"),
    ({"n_types": 3}, "n_types"),
    ({"device": "tpu"}, "device"),
    ({"lr_W": -1}, "lr_W"),
    ({"n_neuronz": 5}, "n_neuronz"),
    ({"n_rollout_frames": 20000}, "n_rollout_frames"),
    ({"data_augmentation_loop": 1, "n_frames": 100, "n_rollout_frames": 50, "n_reports": 50}, "n_reports"),
])
def test_bad_settings_name_the_field(values, named):
    with pytest.raises(TunerInputError, match=named):
        validate_settings(SignalSettings, values)
    if "connectivity_rank" in values:
        with pytest.raises(TunerInputError, match="connectivity_rank"):
            validate_settings(SignalSettings, values)


def test_family_registration_and_regime_columns():
    assert families()["signal"] is FAMILY
    assert FAMILY.table.descriptors["eff_rank"] == "eff_rank_99_ref"  # the seed's formula (spec §5.4), comparable
    defaults = SignalSettings().model_dump()
    assert regime(defaults) == {"Regime": "chaotic, Dale=False", "E/I": "-", "n_frames": 10000, "n_neurons": 100,
                                "n_types": 1}
    row = regime({**defaults, "connectivity_type": "low_rank", "Dale_law": True, "connectivity_filling_factor": 0.8,
                  "n_types": 4, "gain": 3.0, "noise_model_level": 0.5})
    assert row["Regime"] == "low_rank=20, Dale=True, fill=0.8, types=4, g=3, noise=0.5" and row["E/I"] == 0.5


def test_schedule_helpers():
    big = SignalSettings.model_construct(n_frames=100000, data_augmentation_loop=50, batch_size=8)
    assert steps_per_epoch(big) == 125000  # the paper checkpoint names
    two_phase = SignalSettings(n_epochs=3, n_epochs_init=1, first_coeff_L1=0.0, coeff_W_L1=1e-5)
    assert loss_coefficients(two_phase, 0) == (0.0, 100.0) and loss_coefficients(two_phase, 1) == (1e-5, 0.0)
    assert loss_coefficients(SignalSettings(), 0) == (1e-5, 100.0)


def test_short_run_reports_everything(tmp_path):
    session = train(tmp_path, lr_W=1e-2)
    assert len(session.history) == 5
    assert [r["step"] for r in session.history] == [50, 100, 150, 200, 250]  # Niter = int((1000*10 // 8)*0.2)
    final = session.history[-1]
    assert FINAL <= final.keys() and final["diverged"] == 0.0
    assert all(math.isfinite(final[k]) for k in FINAL)
    assert len(session.saved) == 5 and (session.saved[0] / TRAINER_CHECKPOINT).exists()


def test_training_recovers_w_and_lr_w_zero_does_not(tmp_path):
    """The known answer of the family: the trained W matches the true one (R² >= 0.9), and the same run with W
    frozen at its random init (lr_W=0) does not, though its MLPs still lower the loss."""
    learned = train(tmp_path / "learned", **RECOVER).history[-1]
    frozen_session = train(tmp_path / "frozen", **RECOVER | {"lr_W": 0.0})
    frozen = frozen_session.history[-1]
    assert learned["connectivity_R2"] >= 0.9, learned["connectivity_R2"]
    assert frozen["connectivity_R2"] < 0.1, frozen["connectivity_R2"]
    assert FAMILY.classify(learned) == "converged" and FAMILY.classify(frozen) == "failed"
    assert learned["loss"] < 0.5 * frozen["loss"]                         # learning W is what fits the data
    torch.manual_seed(24)  # the frozen W is exactly the init: torch.manual_seed(train_seed), randn(N, N) * mask
    assert torch.equal(final_w(frozen_session), torch.randn(25, 25) * (1 - torch.eye(25)))


def test_resume_continues_exactly(tmp_path):
    settings = {"n_epochs": 2, "n_reports": 3, "n_epochs_init": 1, "lr_W": 1e-2}  # crosses the phase/epoch switch
    whole = train(tmp_path / "whole", **settings)
    with pytest.raises(Interrupted):
        train(tmp_path / "part", stop_after=1, **settings)
    resumed = train(tmp_path / "resumed", checkpoint=tmp_path / "part" / "report1", **settings)
    assert len(resumed.history) == 2
    assert torch.equal(final_w(whole), final_w(resumed))
    for key in ("loss", "connectivity_R2", "final_loss", "test_R2"):
        assert whole.history[-1][key] == resumed.history[-1][key]


def test_divergence_is_reported_once_and_returns(tmp_path):
    session = train(tmp_path, lr_W=1e35)
    assert len(session.history) == 1 and session.saved == []
    report = session.history[0]
    assert report["diverged"] == 1.0 and math.isnan(report["connectivity_R2"]) and not math.isfinite(report["loss"])
    assert FINAL <= report.keys() and FAMILY.classify(report) == "failed"


def test_single_run_cli(tmp_path, capsys):
    sets = [f"{k}={v}" for k, v in {**TINY, "n_reports": 2, "device": "cpu"}.items()]
    assert main(FAMILY, ["--set", *sets, "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "connectivity_R2: " in out and "outcome: " in out
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert FINAL <= written["metrics"].keys() and written["settings"]["n_neurons"] == 30
    assert main(FAMILY, ["--set", "connectivity_type=ring", "--out", str(tmp_path / "bad")]) == 2
    assert "connectivity_type" in capsys.readouterr().err


def test_single_run_imports_no_orchestrator(tmp_path):
    """`python -m trainables.signal` trains without Ray, MLflow or Optuna: the science code stands alone."""
    settings = " ".join(f"{k}={v}" for k, v in TINY.items())
    code = ("import runpy, sys\n"
            f"sys.argv = ['trainables.signal', '--quiet', '--out', {str(tmp_path)!r}, '--set', *{settings!r}.split()]\n"
            "try:\n    runpy.run_module('trainables.signal', run_name='__main__')\n"
            "except SystemExit as stop:\n    assert stop.code == 0, stop.code\n"
            "print('LOADED', sorted(m for m in ('ray', 'mlflow', 'optuna') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "connectivity_R2:" in done.stdout and (tmp_path / "metrics.json").exists()
    assert "LOADED []" in done.stdout, done.stdout
