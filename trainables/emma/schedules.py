"""Epoch-level schedules (spec §4.2, §4.4–4.6): the NCEScheduler gate, the write curriculum, lambda, lr.

All of them are decided at the start of an epoch from the settings and the trainer's history.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

from trainables.emma.settings import EmmaSettings


@dataclass
class NCEScheduler:
    """The InfoNCE gate (spec §4.5). It opens once (never closes) and then ramps lambda with reads."""

    s: EmmaSettings
    is_open: bool = False
    reason: str = ""
    gate_epoch: int | None = None     # 1-based epoch of the first opening
    open_steps: int = 0
    oracle_hold: int = 0
    freeze_left: int = 0
    lam: float = 0.0
    read_streak: int = 0

    @property
    def lam_max(self) -> float:
        s = self.s
        return s.nce_lambda_max if s.nce_lambda_end is None else min(s.nce_lambda_max, s.nce_lambda_end)

    @property
    def enabled(self) -> bool:
        """lambda_max > 0 and (increment > 0 or floor > 0)."""
        s = self.s
        return self.lam_max > 0 and (s.nce_lambda_increment > 0 or s.nce_lambda_floor > 0)

    def on_epoch_start(self, epoch: int, val_history: list[float], read_ema: float) -> tuple[float, bool]:
        """(lambda, transition) for 0-based `epoch`, from last epochs' val_acc and the read EMA."""
        s = self.s
        if not self.enabled:
            return 0.0, False
        window = val_history[-s.nce_gate_plateau_epochs:]
        plateau = len(window) >= 2 and all(abs(b - a) <= s.nce_gate_plateau_eps for a, b in pairwise(window))
        baseline = read_ema >= s.nce_gate_read_threshold                  # read_ema >= thr
        self.read_streak = self.read_streak + 1 if baseline else 0
        read_ready = baseline and (self.read_streak >= s.nce_gate_read_patience or s.nce_gate_read_patience == 0)
        epoch_ready = epoch + 1 >= s.nce_gate_start_epoch
        if not self.is_open:
            if s.nce_gate_require_read:
                can_open = epoch_ready and read_ready and (plateau or not s.nce_gate_require_plateau)
            else:
                can_open = epoch_ready and (read_ready or (s.nce_gate_allow_plateau and plateau))
            if can_open:
                self.is_open, self.reason = True, "read" if read_ready else "plateau"
                self.gate_epoch = self.gate_epoch or epoch + 1
                self.open_steps = 1
                self.oracle_hold = max(self.oracle_hold, s.nce_gate_oracle_hold)
                self.freeze_left = s.nce_lambda_freeze_epochs_after_open
        else:
            self.open_steps += 1
        previous = self.lam
        warmup = s.nce_gate_start_epoch if s.nce_gate_warmup_epochs is None else s.nce_gate_warmup_epochs
        target = min(max(s.nce_gate_read_threshold if s.nce_read_target is None else s.nce_read_target, 0.0), 1.0)
        if not self.is_open or epoch + 1 <= warmup:
            self.lam = 0.0
        else:
            cand = max(previous, s.nce_lambda_floor)
            if self.freeze_left > 0 and self.open_steps > 1:               # hold lambda, no ramp
                self.freeze_left -= 1
            else:
                if read_ema > target + s.nce_read_hysteresis:
                    cand = min(cand + s.nce_lambda_increment, self.lam_max)
                elif read_ema < target - s.nce_read_hysteresis:
                    cand = max(s.nce_lambda_floor, cand * s.nce_lambda_backoff)
                if s.nce_lambda_pause_below_read and not read_ready:
                    cand = s.nce_lambda_floor
            self.lam = min(max(cand, 0.0), self.lam_max)
        return self.lam, previous <= 0 < self.lam

    def decrement_oracle_hold(self) -> None:
        """Called at each epoch end."""
        self.oracle_hold = max(0, self.oracle_hold - 1)

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "s"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def open_loop_lambda(s: EmmaSettings, epoch: int) -> float:
    """value_e = a value_{e-1} + (1 - a) (start + (end - start) min(1, (e+1)/epochs)), capped (spec §4.6)."""
    if s.nce_open_loop_start == 0 and s.nce_open_loop_end == 0:
        return 0.0
    cap = s.nce_open_loop_end if s.nce_open_loop_max is None else s.nce_open_loop_max
    value = 0.0
    for e in range(epoch + 1):
        target = s.nce_open_loop_start + (s.nce_open_loop_end - s.nce_open_loop_start) * min(
            1.0, (e + 1) / s.nce_open_loop_epochs)
        value = s.nce_open_loop_ema * value + (1 - s.nce_open_loop_ema) * target
    return min(value, cap)


def oracle_mix(s: EmmaSettings, epoch: int, gate: NCEScheduler) -> float:
    """alpha of 0-based `epoch` (spec §4.4): schedule or warm/ramp, floored at mix_min, post-gate ramp."""
    if s.oracle_mix_schedule is not None:
        alpha = s.oracle_mix_schedule[min(epoch, len(s.oracle_mix_schedule) - 1)]
    elif epoch < s.warm_start_epochs:
        alpha = 1.0
    elif s.oracle_mix_ramp_epochs == 0:
        alpha = 0.0
    else:
        alpha = min(max(1 - (epoch - s.warm_start_epochs + 1) / s.oracle_mix_ramp_epochs, 0.0), 1.0)
    alpha = max(alpha, s.oracle_mix_min)
    p = s.oracle_mix_post_gate_epochs
    if gate.is_open and p > 0:
        post_min = max(s.oracle_mix_min, s.oracle_mix_post_gate_min)
        start = max(post_min, s.oracle_mix_post_gate_start)
        k = min(gate.open_steps - 1, p)
        g = post_min if p <= 1 else start * (1 - k / p) + post_min * k / p
        alpha = max(alpha, min(max(g, post_min), start))
    return alpha


def mem_scale(s: EmmaSettings, alpha: float) -> float:
    """mmin + clip((1 - alpha) / (1 - mix_min), 0, 1) (mem_scale - mmin): 0 under pure oracle writes."""
    if not s.mem_into_deq:
        return 0.0
    frac = 1.0 if s.oracle_mix_min >= 1 else min(max((1 - alpha) / (1 - s.oracle_mix_min), 0.0), 1.0)
    return s.mem_scale_min + frac * (s.mem_scale - s.mem_scale_min)


def learning_rate(s: EmmaSettings, epoch: int, restart_epoch: int | None) -> float:
    """lr x after-warm factor from epoch warm_start_epochs, x restart factor for the restart window (§4.2)."""
    lr = s.lr * (s.lr_after_warm_factor if epoch >= s.warm_start_epochs else 1.0)
    if (restart_epoch is not None and s.lr_warm_restart_factor < 1
            and restart_epoch <= epoch < restart_epoch + s.lr_warm_restart_epochs):
        lr *= s.lr_warm_restart_factor
    return lr


def write_strength(s: EmmaSettings, epoch: int, open_epoch: int | None) -> float:
    """beta, moved evenly to beta * mult over `steps` epoch starts after the gate's lambda turned > 0."""
    if open_epoch is None or s.write_strength_ramp_steps == 0 or epoch <= open_epoch:
        return s.write_strength
    frac = min(1.0, (epoch - open_epoch) / s.write_strength_ramp_steps)
    return s.write_strength * (1 + frac * (s.write_strength_mult_after_open - 1))
