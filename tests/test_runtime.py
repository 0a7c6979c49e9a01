"""The helpers every family's trainer shares: device choice, thread budget, divergence report."""

import math

import pytest
import torch

from trainables.runtime import diverged_report, pick_device, thread_limit


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
