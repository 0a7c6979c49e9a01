"""Settings schema of one `emma` trial (spec §1–§4, §6.1) and the sizes derived from it.

Defaults are the len256 quickstart (`len256_softmax_top2.yaml`, spec §6.1). Every value is taken
literally: the reference's `x or default` parsing, where 0 falls back to a default (spec §4.5 ⚠,
§7.8), is not reproduced; the search spaces state each preset value explicitly.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LISTOPS_CLASSES = 10
LISTOPS_VOCAB = 15
LISTOPS_MAX_TOKENS = 345  # depth 3, 6 items: 3 + 6 * (3 + 6 * (3 + 6))


class EmmaSettings(BaseModel):
    """One EMMA run: task and data, model, memory, read path, losses, curriculum, InfoNCE gate, run control."""

    model_config = ConfigDict(extra="forbid")

    # ---- task and data (spec §1, §2)
    task: Literal["needle", "listops"] = Field("needle", description="needle: Needle-in-a-Haystack; listops: "
                                               "ListOps-lite (label = max digit, 10 classes)")
    seq_len: int = Field(256, ge=16, description="sequence length L (listops: >= 345, the longest expression)")
    num_values: int = Field(64, ge=2, description="needle: key and value ids N (= classes); ignored by listops")
    vocab_extra: int = Field(96, ge=1, description="needle: filler ids E; vocabulary = E + 3 + 2N (227 in presets)")
    n_pairs: int = Field(2, ge=1, description="needle: key/value blocks per sequence (1..num_values); only the "
                                              "queried pair is written, the others are distractor tokens")
    decouple_kv: bool = Field(True, description="needle: values drawn independently of keys (false: value = key)")
    train_size: int = Field(512, ge=1, description="training sequences per epoch (drawn fresh every epoch)")
    val_size: int = Field(64, ge=1, description="validation sequences")
    val_resample: bool = Field(False, description="false: one fixed validation set (seed + 1) for both scores; "
                                                  "true: a fresh validation draw every epoch, as the reference does")
    seed: int = Field(42, description="data seed: epoch e of training uses (seed, e), validation seed + 1")
    model_seed: int = Field(42, description="seed of the initialisation, memory addresses and dropout")

    # ---- model (spec §3.1-3.3)
    emb_dim: int = Field(64, ge=1, description="token embedding size d_x")
    hid_dim: int = Field(128, ge=1, description="DEQ state and liquid-cell size d_h")
    mem_dim: int = Field(256, ge=2, description="HRR vector size D (even)")
    deq_update: Literal["residual", "contractive"] = Field(
        "residual", description="residual: f(z) = z + 0.5 W2 tanh(W1 [z; x; v] + b1) + 0.5 b2 (the seed's update: "
                                "no contraction, z integrates over the sequence); contractive: f(z) = 0.5 W2 "
                                "tanh(W1 [z; x; v] + b1) + 0.5 b2, a contraction (Lipschitz <= 0.5 with spectral "
                                "norm) with a real fixed point (a model variant, not the seed's)")
    deq_max_iter: int = Field(6, ge=1, description="Picard iterations per token (the solver never meets tol)")
    deq_tol: float = Field(1e-4, ge=0, description="stop when max|z_{i+1} - z_i| < tol (0: never stop early)")
    eval_deq_max_iter: int = Field(5, ge=1, description="DEQ cap during evaluation (reference: 5)")
    eval_cap_leaks: bool = Field(True, description="quirk §7.7: the evaluation cap stays for all later training "
                                                   "(true: reproduce; false: restore deq_max_iter after eval)")
    use_spectral_norm: bool = Field(True, description="spectral norm on the DEQ updater W1, W2")
    spectral_norm_keys: bool = Field(True, description="spectral norm on z_to_value and cls_key")
    value_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on z_to_value before normalisation, in [0, 1)")
    logit_scale_max: float = Field(5.0, gt=0, description="upper clamp of s = softplus(rho) + 1e-3")
    mem_into_deq: bool = Field(True, description="inject mem_scale * clean(read) into the DEQ at the query")
    mem_scale: float = Field(0.6, ge=0, description="injection scale once the oracle mix reaches its floor")
    mem_scale_min: float = Field(0.0, ge=0, description="injection scale while the oracle mix is 1")

    # ---- memory (spec §3.4)
    memory_mode: Literal["per_sequence", "shared"] = Field(
        "per_sequence", description="per_sequence: one B x slots x D memory per sequence (batched); shared: one "
                                    "memory for the whole batch, written item by item (reference, §7.4)")
    memory_slots: int = Field(256, ge=1, description="slots (a multiple of memory_buckets)")
    memory_buckets: int = Field(32, ge=1, description="LSH buckets; slot j belongs to bucket j mod buckets")
    memory_k_top: int = Field(8, ge=1, description="slots addressed per write/read, within the bucket")
    write_decay: float = Field(0.995, gt=0, le=1, description="alpha: the written bucket's slots are multiplied "
                                                             "by it before each write, in (0, 1]")
    write_strength: float = Field(1.0, gt=0, description="beta: u = beta * bind(k, v)")
    write_norm_clip: float | None = Field(None, gt=0, description="clip ||u|| to this (None: no clip)")
    write_strength_mult_after_open: float = Field(1.0, gt=0, description="after the gate opens, beta moves to "
                                                                         "beta * mult ...")
    write_strength_ramp_steps: int = Field(0, ge=0, description="... evenly over this many epoch starts (0: off)")
    bucket_temp: float = Field(1.0, gt=0, description="temperature of the addressing-entropy diagnostic")

    # ---- read path (spec §3.5)
    cleanup_mode: Literal["nearest", "softmax"] = Field("softmax", description="how cleanup_topk > 1 prototypes "
                                                        "combine: nearest = mean, softmax = softmax(sims/temp)")
    cleanup_topk: int = Field(1, ge=1, description="prototypes used by cleanup (reference: always 1, its key is "
                                                   "not wired)")
    cleanup_temp: float = Field(1.0, gt=0, description="softmax cleanup temperature")
    cleanup_blend_raw: float = Field(0.0, ge=0, description="v_logit = normalize(raw * v_read + clean * snapped)")
    cleanup_blend_clean: float = Field(1.0, ge=0, description="weight of the snapped prototype in the blend")
    sharpen_temp: float = Field(0.8, gt=0, description="main logits are divided by this (1: off)")
    sharpen_topk: int = Field(2, ge=0, description="keep the top-K main logits, others row-min - margin (0: off)")
    sharpen_mask_margin: float = Field(5.0, ge=0, description="margin below the row minimum for masked logits")
    sharpen_eval_only: bool = Field(False, description="skip sharpening while training")

    # ---- losses and optimiser (spec §4.1-4.3)
    lambda_pred: float = Field(0.3, ge=0, description="weight of CE on the aux logits (v_pred at the query)")
    lambda_write: float = Field(0.2, ge=0, description="weight of the write loss mean(1 - cos(v_pred, v_true))")
    nce_temperature: float = Field(0.1, gt=0, description="InfoNCE temperature")
    nce_scope: Literal["timestep", "batch", "prototype"] = Field(
        "timestep", description="timestep: InfoNCE of k⊛v_pred vs k⊛v_true among rows writing at the same step "
                                "(reference, almost always 0, §7.6); batch: among all write events of the batch; "
                                "prototype: CE(s cos(v_pred, P), value) at the write (the minimal release, §8)")
    batch_size: int = Field(16, ge=1, description="sequences per optimiser step")
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, ge=0, description="needle: gradient-norm clip (0: off); listops never clips")
    epochs: int = Field(3, ge=1, description="epochs")
    lr_after_warm_factor: float = Field(0.5, gt=0, description="lr is multiplied by this at epoch warm_start_epochs")
    lr_warm_restart_factor: float = Field(1.0, gt=0, le=1, description="on the gate's first lambda > 0: lr * this ...")
    lr_warm_restart_epochs: int = Field(0, ge=0, description="... for this many epochs, then restored (0: off)")

    # ---- write curriculum (spec §4.4)
    warm_start_epochs: int = Field(2, ge=0, description="epochs of pure oracle writes (the true value is written)")
    oracle_mix_ramp_epochs: int = Field(3, ge=0, description="alpha = 1 - (e - warm + 1) / ramp after the warm "
                                                             "start (0: alpha = 0)")
    oracle_mix_min: float = Field(0.3, ge=0, le=1, description="floor of alpha, in [0, 1]")
    oracle_mix_schedule: list[float] | None = Field(None, description="explicit alpha per epoch (values in [0, 1], "
                                                                      "last one repeats); overrides the ramp")
    oracle_write: bool = Field(False, description="always write the true value (training and assisted eval)")
    oracle_mix_post_gate_epochs: int = Field(0, ge=0, description="after the gate opens, alpha >= a ramp over P epochs")
    oracle_mix_post_gate_start: float = Field(1.0, ge=0, le=1, description="start of the post-gate ramp, in [0, 1]")
    oracle_mix_post_gate_min: float = Field(0.0, ge=0, le=1, description="end of the post-gate ramp, in [0, 1]")

    # ---- InfoNCE gate, NCEScheduler (spec §4.5) and trainer-side effects (§4.6)
    nce_gate_start_epoch: int = Field(3, ge=1, description="the gate may open once epoch e+1 >= this")
    nce_gate_warmup_epochs: int | None = Field(None, ge=0, description="lambda stays 0 while e+1 <= this "
                                                                       "(None: = nce_gate_start_epoch)")
    nce_gate_plateau_epochs: int = Field(2, ge=1, description="window of the val_acc plateau test")
    nce_gate_plateau_eps: float = Field(0.002, ge=0, description="plateau: every |delta val_acc| in window <= eps")
    nce_gate_read_threshold: float = Field(0.5, ge=0, le=1, description="read-ready: read EMA >= this, in [0, 1]")
    nce_gate_read_patience: int = Field(0, ge=0, description="consecutive read-ready epochs needed (0: one)")
    nce_gate_require_read: bool = Field(False, description="opening requires read-ready")
    nce_gate_require_plateau: bool = Field(False, description="with require_read, also require a plateau")
    nce_gate_allow_plateau: bool = Field(True, description="a plateau alone may open the gate")
    nce_gate_oracle_hold: int = Field(1, ge=0, description="epochs of forced oracle writes from the opening epoch")
    nce_lambda_floor: float = Field(0.0, ge=0, description="lower bound of lambda once open")
    nce_lambda_increment: float = Field(0.01, ge=0, description="additive lambda step when reads are strong")
    nce_lambda_max: float = Field(0.02, ge=0, description="lambda cap (0 with floor 0 or inc 0: gate disabled)")
    nce_lambda_end: float | None = Field(None, ge=0, description="if set, cap = min(max, end)")
    nce_lambda_backoff: float = Field(0.8, ge=0, le=1, description="lambda multiplier when reads are weak")
    nce_lambda_pause_below_read: bool = Field(False, description="lambda = floor while not read-ready")
    nce_lambda_freeze_epochs_after_open: int = Field(0, ge=0, description="open epochs with lambda held")
    nce_read_target: float | None = Field(None, ge=0, le=1, description="centre of the read band "
                                                                        "(None: read threshold)")
    nce_read_hysteresis: float = Field(0.02, ge=0, description="half-width of the read band")
    nce_read_ema_beta: float = Field(0.8, ge=0, lt=1, description="read EMA factor (EMA starts at 0)")
    nce_ema_beta: float = Field(0.9, ge=0, lt=1, description="write-cos EMA factor (EMA starts at 0)")
    nce_open_loop_start: float = Field(0.0, ge=0, description="open-loop lambda: start value")
    nce_open_loop_end: float = Field(0.0, ge=0, description="open-loop lambda: end value (0 with start 0: off)")
    nce_open_loop_max: float | None = Field(None, ge=0, description="open-loop cap (None: the end value)")
    nce_open_loop_epochs: int = Field(1, ge=1, description="open-loop ramp length in epochs")
    nce_open_loop_ema: float = Field(0.0, ge=0, lt=1, description="open-loop smoothing: v = a v_prev + (1-a) target")
    post_gate_write_cooldown_batches: int = Field(0, ge=0, description="training batches with all writes skipped "
                                                                       "after lambda first turns > 0")
    nce_post_gate_drop_threshold: float = Field(0.01, ge=0, description="post-gate drop: pre_best - val_acc > this")
    nce_post_gate_drop_patience: int = Field(2, ge=1, description="consecutive drop epochs that stop training")

    # ---- run control
    n_reports: int = Field(3, ge=1, description="reports per run, at evenly spread epoch ends (<= epochs)")
    threads: int = Field(1, ge=1, description="torch intra-op threads of the trial")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else cpu")

    @field_validator("oracle_mix_schedule")
    @classmethod
    def _schedule_in_unit_range(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (not value or any(not 0 <= a <= 1 for a in value)):
            raise ValueError("must be a non-empty list of values in [0, 1]")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EmmaSettings:
        if self.mem_dim % 2:
            raise ValueError(f"mem_dim ({self.mem_dim}) must be even (rfft-based binding)")
        if self.memory_slots % self.memory_buckets:
            raise ValueError(f"memory_slots ({self.memory_slots}) must be a multiple of memory_buckets "
                             f"({self.memory_buckets})")
        if self.task == "needle":
            if self.n_pairs > self.num_values:
                raise ValueError(f"n_pairs ({self.n_pairs}) must be <= num_values ({self.num_values})")
            if 4 * self.n_pairs > self.seq_len * 3 // 4 - 2:
                raise ValueError(f"n_pairs ({self.n_pairs}) blocks of 4 tokens do not fit in positions "
                                 f"[2, 3L/4) of seq_len {self.seq_len}")
        elif self.seq_len < LISTOPS_MAX_TOKENS:
            raise ValueError(f"seq_len ({self.seq_len}) must be >= {LISTOPS_MAX_TOKENS} for listops")
        if self.sharpen_topk >= n_classes(self):
            raise ValueError(f"sharpen_topk ({self.sharpen_topk}) must be below the {n_classes(self)} classes")
        if self.cleanup_topk > n_classes(self):
            raise ValueError(f"cleanup_topk ({self.cleanup_topk}) exceeds the {n_classes(self)} classes")
        if self.cleanup_blend_raw + self.cleanup_blend_clean <= 0:
            raise ValueError("cleanup_blend_raw + cleanup_blend_clean must be > 0")
        if self.n_reports > self.epochs:
            raise ValueError(f"n_reports ({self.n_reports}) must be <= epochs ({self.epochs}): reports are at "
                             f"epoch ends")
        return self


def vocab_size(s: EmmaSettings) -> int:
    """Needle: E + 3 + 2N (227 for E=96, N=64); ListOps: 15."""
    return s.vocab_extra + 3 + 2 * s.num_values if s.task == "needle" else LISTOPS_VOCAB


def n_classes(s: EmmaSettings) -> int:
    """Needle: num_values; ListOps: 10 digits."""
    return s.num_values if s.task == "needle" else LISTOPS_CLASSES


def slots_per_bucket(s: EmmaSettings) -> int:
    """memory_slots / memory_buckets."""
    return s.memory_slots // s.memory_buckets


def report_epochs(s: EmmaSettings) -> set[int]:
    """1-based epochs that end with a report: ceil((i + 1) * epochs / n_reports), i < n_reports."""
    return {math.ceil((i + 1) * s.epochs / s.n_reports) for i in range(s.n_reports)}
