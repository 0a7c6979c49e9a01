"""The helpers every family's trainer shares: device choice, thread budget, divergence report, checkpoints."""

import math

import numpy as np
import pytest
import torch

from trainables.runtime import (
    TRAINER_CHECKPOINT,
    diverged_report,
    load_trainer,
    pick_device,
    save_trainer,
    thread_limit,
)


def test_device_choice_agrees_for_every_family():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="tpu"):
        pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_explicit_cuda_without_cuda_is_refused():
    with pytest.raises(ValueError, match="cuda"):
        pick_device("cuda")


def test_thread_limit_restores_the_previous_budget():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with thread_limit(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_diverged_report_marks_every_metric():
    report = diverged_report(["a", "b"], {"loss": 3.0})
    assert math.isnan(report["a"]) and math.isnan(report["b"])
    assert report["loss"] == 3.0 and report["diverged"] == 1.0


def test_a_trainer_checkpoint_restores_every_random_state(tmp_path):
    """Dropout draws from torch's global generator, sampling from the trainer's own: both continue as saved."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    rng = np.random.default_rng(7)
    torch.manual_seed(3)
    save_trainer(tmp_path, model, optimizer, rng, {"step": 5})
    expected_torch, expected_numpy = torch.rand(4), rng.random(4)

    torch.manual_seed(99)
    other_rng, other_model = np.random.default_rng(0), torch.nn.Linear(3, 2)
    other_optimizer = torch.optim.AdamW(other_model.parameters(), lr=0.1)
    assert load_trainer(tmp_path, other_model, other_optimizer, other_rng) == {"step": 5}
    assert torch.equal(torch.rand(4), expected_torch) and np.array_equal(other_rng.random(4), expected_numpy)
    assert torch.equal(other_model.weight, model.weight)
    assert other_optimizer.state_dict()["state"][0]["step"] == 1

    torch.manual_seed(3)
    save_trainer(tmp_path, model, optimizer, None, {})                   # a trainer without its own generator
    expected_torch = torch.rand(4)
    assert load_trainer(tmp_path, other_model, other_optimizer, None) == {} and torch.equal(torch.rand(4), expected_torch)


def test_a_checkpoint_from_before_the_random_states_still_resumes(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    rng = np.random.default_rng(7)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state,
                "state": {"step": 2}}, tmp_path / TRAINER_CHECKPOINT)
    assert load_trainer(tmp_path, torch.nn.Linear(3, 2), optimizer, np.random.default_rng(0)) == {"step": 2}
