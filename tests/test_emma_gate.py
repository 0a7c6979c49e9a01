"""The NCEScheduler gate and the curriculum schedules (spec §4.2, §4.4-4.6) on hand-made sequences."""

import pytest

from trainables.emma.schedules import (
    NCEScheduler,
    learning_rate,
    mem_scale,
    open_loop_lambda,
    oracle_mix,
    write_strength,
)
from trainables.emma.settings import EmmaSettings


def drive(s, reads, vals=None):
    """(lambda, transition, open) per epoch for read EMAs `reads` and val histories."""
    gate, out = NCEScheduler(s), []
    for e, r in enumerate(reads):
        lam, tr = gate.on_epoch_start(e, (vals or [])[:e], r)
        out.append((round(lam, 6), tr, gate.is_open))
    return gate, out


def test_opens_on_read_with_lambda_zero_in_warmup_then_ramps():
    s = EmmaSettings(nce_gate_start_epoch=3, nce_gate_read_threshold=0.5, nce_gate_allow_plateau=False)
    gate, out = drive(s, [0.9, 0.9, 0.9, 0.9, 0.9])
    assert [o[2] for o in out] == [False, False, True, True, True]      # epoch_ready <=> e + 1 >= 3
    assert [o[0] for o in out] == [0, 0, 0, 0.01, 0.02]                 # warm-up: lambda 0 while e + 1 <= 3
    assert [o[1] for o in out] == [False, False, False, True, False]
    assert gate.gate_epoch == 3 and gate.reason == "read"


def test_backoff_and_never_closes():
    s = EmmaSettings(nce_gate_start_epoch=1, nce_gate_warmup_epochs=0, nce_lambda_backoff=0.5,
                     nce_gate_allow_plateau=False)
    _, out = drive(s, [0.9, 0.1, 0.1, 0.1])
    assert [o[0] for o in out] == [0.01, 0.005, 0.0025, 0.00125]       # backoff 0.01 -> 0.005
    assert all(o[2] for o in out)                                       # the gate never closes


def test_read_threshold_blocks_then_opens_and_patience_counts():
    s = EmmaSettings(nce_gate_start_epoch=2, nce_gate_read_threshold=0.63, nce_gate_require_read=True,
                     nce_gate_read_patience=2)
    _, out = drive(s, [0.7, 0.5, 0.64, 0.66, 0.7], vals=[0.5] * 5)     # plateau cannot open with require_read
    assert [o[2] for o in out] == [False, False, False, True, True]


def test_plateau_path_and_require_plateau():
    s = EmmaSettings(nce_gate_start_epoch=1, nce_gate_read_threshold=0.9)
    gate, out = drive(s, [0.1] * 4, vals=[0.5, 0.7, 0.701, 0.701])
    assert [o[2] for o in out] == [False, False, False, True] and gate.reason == "plateau"  # |0.701 - 0.7| <= eps
    s = EmmaSettings(nce_gate_start_epoch=1, nce_gate_read_threshold=0.5, nce_gate_require_read=True,
                     nce_gate_require_plateau=True)
    _, out = drive(s, [0.9] * 4, vals=[0.5, 0.7, 0.7, 0.7])
    assert [o[2] for o in out] == [False, False, False, True]           # read-ready from epoch 1, plateau at 4


def test_guard_freeze_pause_and_cap():
    # cpu_len768_guard: start / warm-up 6, thr 0.63, floor = inc = 0.001, end 0.02, freeze 1
    s = EmmaSettings(nce_gate_start_epoch=6, nce_gate_warmup_epochs=6, nce_gate_read_threshold=0.63,
                     nce_gate_require_read=True, nce_gate_read_patience=1, nce_lambda_floor=0.001,
                     nce_lambda_increment=0.001, nce_lambda_max=0.02, nce_lambda_end=0.02, nce_lambda_backoff=0.6,
                     nce_read_target=0.66, nce_read_hysteresis=0.02, nce_lambda_freeze_epochs_after_open=1,
                     nce_lambda_pause_below_read=True, epochs=10, n_reports=1)
    gate, out = drive(s, [0.2, 0.36, 0.49, 0.59, 0.67, 0.74, 0.74, 0.74, 0.5])
    assert gate.gate_epoch == 6                                          # opens at epoch 6 on the read signal
    assert [o[0] for o in out] == [0, 0, 0, 0, 0, 0, 0.001, 0.002, 0.001]  # frozen at floor, ramp, pause -> floor
    assert [o[1] for o in out].index(True) == 6                          # lambda transition at epoch 7
    assert gate.oracle_hold == 1


def test_disabled_gate_and_open_loop_schedule():
    off = EmmaSettings(nce_lambda_max=0.0)
    assert drive(off, [1.0] * 4)[1] == [(0, False, False)] * 4
    s = EmmaSettings(nce_open_loop_end=0.02, nce_open_loop_epochs=5, nce_open_loop_ema=0.3, epochs=8)
    got = [round(open_loop_lambda(s, e), 4) for e in range(7)]
    assert got == [0.0028, 0.0064, 0.0103, 0.0143, 0.0183, 0.0195, 0.0198]  # spec §4.6
    assert open_loop_lambda(EmmaSettings(), 3) == 0


def test_oracle_mix_mem_scale_lr_and_strength_examples():
    s = EmmaSettings(epochs=6, warm_start_epochs=2, oracle_mix_ramp_epochs=3, oracle_mix_min=0.3)
    closed = NCEScheduler(s)
    assert [round(oracle_mix(s, e, closed), 3) for e in range(6)] == [1, 1, 0.667, 0.333, 0.3, 0.3]
    guard = EmmaSettings(epochs=7, warm_start_epochs=3, oracle_mix_ramp_epochs=5, oracle_mix_min=0.5,
                         oracle_mix_post_gate_epochs=3, oracle_mix_post_gate_start=0.6, oracle_mix_post_gate_min=0.35,
                         lr=1.8e-3, lr_after_warm_factor=0.65, lr_warm_restart_factor=0.5, lr_warm_restart_epochs=3,
                         write_strength=0.5, write_strength_mult_after_open=1.15, write_strength_ramp_steps=3)
    gate = NCEScheduler(guard)
    assert [round(oracle_mix(guard, e, gate), 3) for e in range(7)] == [1, 1, 1, 0.8, 0.6, 0.5, 0.5]
    gate.is_open, gate.open_steps = True, 1
    assert oracle_mix(guard, 5, gate) == pytest.approx(0.6)            # post-gate ramp 0.6 -> floor 0.5
    gate.open_steps = 3
    assert oracle_mix(guard, 5, gate) == pytest.approx(0.6 / 3 + 0.5 * 2 / 3)
    gate.open_steps = 4
    assert oracle_mix(guard, 5, gate) == pytest.approx(0.5)
    assert mem_scale(guard, 1.0) == 0 and mem_scale(guard, 0.5) == pytest.approx(0.6)
    assert mem_scale(guard, 0.75) == pytest.approx(0.3)
    assert [learning_rate(guard, e, 4) for e in (2, 3, 4, 6, 7)] == pytest.approx(
        [1.8e-3, 1.17e-3, 5.85e-4, 5.85e-4, 1.17e-3])                   # 1.8e-3 -> 1.17e-3 -> 5.85e-4 x 3 epochs
    assert [write_strength(guard, e, 4) for e in (4, 5, 6, 7, 8)] == pytest.approx([0.5, 0.525, 0.55, 0.575, 0.575])
