"""The flyvis trainer (spec §2.3): it learns, resumes exactly, reports divergence; settings and entry point."""

import math
import subprocess
import sys

import pytest
import torch
from pydantic import ValidationError
from recording import Interrupted, Recorder

from trainables.flyvis.family import FAMILY
from trainables.flyvis.settings import DEFAULT_CHECKPOINT, FlyVisSettings, steps_per_epoch
from trainables.runtime import TRAINER_CHECKPOINT

TINY = {"extent": 1, "n_frames": 300, "n_test_frames": 50, "sequence_frames": 50, "data_augmentation_loop": 5,
        "n_reports": 3, "gmm_components": 10, "params_source": "sampled"}




def train(folder, checkpoint=None, stop_after=None, **overrides):
    session = Recorder(folder, checkpoint, stop_after)
    FAMILY.run(FlyVisSettings(**{**TINY, **overrides}), session)
    return session


def test_reports_and_final_metrics(tmp_path):
    session = train(tmp_path)
    assert [h["step"] for h in session.history] == [100.0, 200.0, 300.0]
    assert all(not math.isnan(h["conn_R2"]) for h in session.history)
    assert session.history[-1]["loss"] < session.history[0]["loss"]
    final = session.history[-1]
    assert {"tau_R2", "V_rest_R2", "cluster_accuracy", "test_pearson", "test_R2", "training_time_min"} <= set(final)
    assert final["diverged"] == 0.0 and final["gt_from_checkpoint"] == 0.0


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(tmp_path):
    whole = train(tmp_path / "whole")
    with pytest.raises(Interrupted):
        train(tmp_path / "first", stop_after=1)
    resumed = train(tmp_path / "second", checkpoint=tmp_path / "first" / "report1")
    assert [h["step"] for h in resumed.history] == [200.0, 300.0]
    w_whole = torch.load(whole.saved[-1] / TRAINER_CHECKPOINT, weights_only=False)["model"]["W"]
    w_resumed = torch.load(resumed.saved[-1] / TRAINER_CHECKPOINT, weights_only=False)["model"]["W"]
    assert torch.equal(w_whole, w_resumed)
    assert resumed.history[-1]["conn_R2"] == whole.history[-1]["conn_R2"]


def test_divergence_is_one_report(tmp_path):
    session = train(tmp_path, lr=1e4, lr_W=1e4, w_init="randn_scaled")
    assert len(session.history) == 1
    assert session.history[0]["diverged"] == 1.0 and math.isnan(session.history[0]["conn_R2"])
    assert FAMILY.classify(session.history[0]) == "failed"


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="no shared flyvis checkpoint")
def test_learning_w_raises_conn_r2(tmp_path):
    run = {"n_frames": 1000, "n_test_frames": 100, "n_reports": 4, "params_source": "checkpoint",
           "w_init": "randn_scaled"}
    learned = train(tmp_path / "a", **run).history
    frozen = train(tmp_path / "b", **run, lr_W=0.0).history                 # same data and init, W fixed
    assert learned[-1]["loss"] < learned[0]["loss"]
    assert learned[-1]["conn_R2"] > learned[0]["conn_R2"] + 0.1
    assert max(h["conn_R2"] for h in frozen) < 0.05 < learned[-1]["conn_R2"]


@pytest.mark.parametrize("values, named", [
    ({"extent": 0}, "extent"),
    ({"extent": 16}, "extent"),
    ({"noise_model_level": -1}, "noise_model_level"),
    ({"device": "tpu"}, "device"),
    ({"n_layers": 1}, "n_layers"),
    ({"batch_size": 0}, "batch_size"),
    ({"params_source": "flyvis"}, "params_source"),
    ({"checkpoint_path": "/no/such/file"}, "checkpoint_path"),
    ({"recurrent_training": True, "time_step": 1}, "time_step"),
    ({"n_reports": 10_000}, "n_reports"),
    ({"lr_W_typo": 1e-3}, "lr_W_typo"),
])
def test_bad_settings_name_the_field(values, named):
    with pytest.raises(ValidationError) as err:
        FlyVisSettings(**{**TINY, **values})
    assert named in str(err.value)


def test_steps_per_epoch():
    assert steps_per_epoch(FlyVisSettings(n_frames=64000, data_augmentation_loop=25, batch_size=1)) == 320_000
    assert steps_per_epoch(FlyVisSettings(n_frames=64000, data_augmentation_loop=35, batch_size=4)) == 112_000


def test_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "trainables.flyvis", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "lr_emb" in out and "noise_model_level" in out
