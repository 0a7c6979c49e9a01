"""One EMMA trial (spec §4): data, model, optimiser, resume, epoch loop, reports.

Quirks of spec §7, decided here (see notes/emma.md):
 1. label leakage at eval — reproduced in `val_acc` (assisted: the epoch's oracle / mix with the true label);
    `val_acc_honest` (oracle off, alpha 0, the label never enters the model) is the primary metric.
 2. ListOps trains only the prototypes and the logit scale — reproduced (the backbone runs without autograd).
 3. ListOps' val_acc = 0 accumulator bug — not reproduced: ListOps validation is scored like Needle's.
 4. batch-shared memory — `memory_mode`: per_sequence (default, batched) or shared (reference parity).
 5. oracle addressing (key_id, write_pos, query_pos given) — reproduced; it defines the task.
 6. InfoNCE per time-step groups (almost always 0) — reproduced by `nce_scope=timestep`; `batch` pools them;
    `prototype` is the minimal release's CE(s cos(v_pred, P), y).
 7. eval DEQ cap 5 leaking into training — reproduced (`eval_cap_leaks`); no implicit differentiation.
 8. `x or default` parsing — not reproduced: settings are literal; unused YAML keys do not exist here.
 9. "?" = S and per-epoch fresh samples — reproduced; validation is fixed unless `val_resample`.
10. float-only regularisers (no gradient) — dropped: they changed only the logged loss.
11. open-loop lambda overriding the gate — reproduced (lambda_used = max(gate, open loop)).
The gate, plateau test and post-gate drop guard read the assisted val_acc, as in the reference.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from trainables.emma import metrics
from trainables.emma.data import Batch, batches, train_set, val_set
from trainables.emma.model import EmmaModel, Outputs, WriteControl, bind, normalize
from trainables.emma.schedules import (
    NCEScheduler,
    learning_rate,
    mem_scale,
    open_loop_lambda,
    oracle_mix,
    write_strength,
)
from trainables.emma.settings import EmmaSettings, n_classes, report_epochs
from trainables.runtime import diverged_report, load_trainer, pick_device, save_trainer, thread_limit
from tuner.family import Session

FINAL_METRICS = ("val_acc_honest", "val_acc", "best_val_acc", "best_val_acc_honest", "best_val_acc_postwarm",
                 "final_val_loss", "final_val_loss_honest", "gate_open_fraction", "nce_gate_epoch",
                 "gate_open_epoch", "pre_gate_best_acc", "post_gate_best_acc", "delta_post_vs_pre", "gate_success",
                 "post_gate_drop_epochs", "early_stop_epoch", "epochs_run", "majority_acc", "chance_acc",
                 "walltime_sec")


@dataclass
class Progress:
    """Everything the loop carries between epochs (saved in checkpoints)."""

    epoch: int = 0                            # next 0-based epoch to train
    read_ema: float = 0.0                     # EMA of the train clean read cos
    write_ema: float = 0.0                    # EMA of the train write cos
    val_history: list[float] = field(default_factory=list)        # assisted val_acc per epoch
    honest_history: list[float] = field(default_factory=list)
    open_epochs: int = 0                      # epochs whose start-of-epoch decision had the gate open
    lambda_epoch: int | None = None           # 0-based epoch the scheduler lambda first turned > 0
    pre_gate_best: float | None = None
    post_gate_best: float | None = None
    drop_epochs: int = 0
    sustained_drop: bool = False
    early_stop_epoch: int | None = None
    cooldown: int = 0                         # training batches left with writes skipped
    deq_max_iter: int = 0
    seconds: float = 0.0


@dataclass
class EpochPlan:
    """The curriculum of one epoch (spec §4.4-4.6)."""

    oracle: bool
    alpha: float
    mem_scale: float
    strength: float
    lr: float
    lam_gate: float
    lam_used: float


# ---- losses (spec §4.1, §4.3) ------------------------------------------------------------------
def group_mean(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean over groups of the per-group mean of `values`: (sum_t mean_t(values)) / n_groups."""
    uniq, inv = torch.unique(groups, return_inverse=True)
    sums = values.new_zeros(len(uniq)).index_add(0, inv, values)
    counts = values.new_zeros(len(uniq)).index_add(0, inv, torch.ones_like(values))
    return (sums / counts).mean()


def info_nce(p: torch.Tensor, t: torch.Tensor, groups: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-group InfoNCE: logits = normalize(p) normalize(t)^T / tau, CE against the diagonal, only among rows of
    the same group; a group of one row gives exactly 0 (spec §4.3). Mean over groups."""
    logits = normalize(p) @ normalize(t).T / temperature
    logits = logits.masked_fill(groups[:, None] != groups[None, :], -math.inf)
    per_row = F.cross_entropy(logits, torch.arange(len(p), device=p.device), reduction="none")
    return group_mean(per_row, groups)


def needle_loss(out: Outputs, batch: Batch, protos: torch.Tensor, s: EmmaSettings,
                lam_nce: float) -> tuple[torch.Tensor, dict[str, float]]:
    """L = CE(main) + l_pred CE(aux) + l_write (sum_t mean(1 - cos)) / n_writes + l_nce aux_nce."""
    y = batch.target
    ce_main = F.cross_entropy(out.logits_main, y)
    ce_aux = F.cross_entropy(out.logits_aux, y)
    loss = ce_main + s.lambda_pred * ce_aux
    parts = {"ce_main": ce_main.item(), "ce_aux": ce_aux.item(), "aux_write": 0.0, "aux_nce": 0.0}
    rows = out.wrote
    if rows is not None and bool(rows.any()):                       # writes from v_pred (not oracle, not blocked)
        v_pred, v_true = out.v_pred_write[rows], protos[y[rows]]
        aux_write = group_mean(1 - metrics.cos(v_pred, v_true), batch.write_pos[rows])
        if s.nce_scope == "prototype":                              # CE(s cos(v_pred, P), y): not vacuous (§4.3)
            aux_nce = F.cross_entropy(out.scale * (v_pred @ protos.T), y[rows])
        else:
            groups = batch.write_pos[rows] if s.nce_scope == "timestep" else torch.zeros_like(y[rows])
            key = out.key[rows]
            aux_nce = info_nce(bind(key, v_pred), bind(key, v_true), groups, s.nce_temperature)  # k⊛v_pred, k⊛v_true
        loss = loss + s.lambda_write * aux_write + lam_nce * aux_nce
        parts.update(aux_write=aux_write.item(), aux_nce=aux_nce.item())
    return loss, parts


# ---- one epoch's plan (spec §4.4-4.6) ----------------------------------------------------------
def plan_epoch(s: EmmaSettings, epoch: int, gate: NCEScheduler, p: Progress) -> EpochPlan:
    """Gate decision, lambda, oracle / mix, mem_scale, write strength and lr for 0-based `epoch`."""
    lam_gate, transition = gate.on_epoch_start(epoch, p.val_history, p.read_ema)
    lam_used = max(lam_gate, open_loop_lambda(s, epoch))           # lambda_used = max(gate, open-loop schedule)
    if transition and p.lambda_epoch is None:                        # first 0 -> >0 of the scheduler's lambda
        p.lambda_epoch = epoch
        p.pre_gate_best = max(p.val_history) if p.val_history else None
        p.cooldown = s.post_gate_write_cooldown_batches
    p.open_epochs += gate.is_open
    alpha = oracle_mix(s, epoch, gate)
    oracle = epoch < s.warm_start_epochs or gate.oracle_hold > 0 or s.oracle_write
    return EpochPlan(oracle=oracle, alpha=alpha, mem_scale=mem_scale(s, alpha),
                     strength=write_strength(s, epoch, p.lambda_epoch), lr=learning_rate(s, epoch, p.lambda_epoch),
                     lam_gate=lam_gate, lam_used=lam_used)


# ---- evaluation ----------------------------------------------------------------------------------
def evaluate(model: EmmaModel, data: list[Batch], ctl: WriteControl, s: EmmaSettings, honest: bool,
             prefix: str) -> dict[str, float]:
    """Score validation batches; `honest` never passes the labels to the model."""
    model.eval()
    mean = metrics.Mean()
    with torch.no_grad():
        protos = model.prototypes()
        for batch in data:
            out = model.run(batch, ctl, None if honest else batch.target)
            mean.add(metrics.batch_metrics(out, batch.target, protos, s.memory_k_top, ctl.oracle), len(batch))
    model.train()
    return mean.result(prefix)


def run(s: EmmaSettings, session: Session) -> None:
    """Train one EMMA model, reporting `n_reports` times; resumes from `session.checkpoint`."""
    with thread_limit(s.threads):
        torch.set_flush_denormal(True)   # BPTT through L x K steps produces denormals: 3x slower matmuls
        try:
            _run(s, session)
        finally:
            torch.set_flush_denormal(False)


def _run(s: EmmaSettings, session: Session) -> None:
    """The body of `run`."""
    # ---- data ------------------------------------------------------------------------------------
    device = pick_device(s.device)
    fixed_val = None if s.val_resample else val_set(s, 0).to(device)

    # ---- model -----------------------------------------------------------------------------------
    torch.manual_seed(s.model_seed)
    model = EmmaModel(s).to(device)
    shared = s.memory_mode == "shared"

    # ---- optimizer -------------------------------------------------------------------------------
    optimizer = model.configure_optimizers(s)                       # AdamW(lr, wd)
    gate = NCEScheduler(s)
    p = Progress(deq_max_iter=s.deq_max_iter)

    # ---- resume ----------------------------------------------------------------------------------
    if session.checkpoint is not None:                              # dropout's random state included
        saved = load_trainer(session.checkpoint, model, optimizer, None)
        gate.load_state_dict(saved["gate"])
        p = Progress(**saved["progress"])
    model.deq_max_iter = p.deq_max_iter

    def save(directory: Path) -> None:
        save_trainer(directory, model, optimizer, None, {"gate": gate.state_dict(), "progress": asdict(p)})

    # ---- loop ------------------------------------------------------------------------------------
    started = time.perf_counter() - p.seconds
    reports = report_epochs(s)
    while p.epoch < s.epochs:
        epoch = p.epoch
        plan = plan_epoch(s, epoch, gate, p)
        for group in optimizer.param_groups:
            group["lr"] = plan.lr
        train_mean = metrics.Mean()
        for batch in batches(train_set(s, epoch).to(device), s.batch_size):
            ctl = WriteControl(oracle=plan.oracle, alpha=plan.alpha, mem_scale=plan.mem_scale,
                               strength=plan.strength, enabled=p.cooldown == 0, shared=shared)
            p.cooldown = max(0, p.cooldown - 1)                     # post-gate write cooldown, per batch
            out = model.run(batch, ctl, batch.target)
            protos = model.prototypes()
            if s.task == "needle":
                loss, parts = needle_loss(out, batch, protos, s, plan.lam_used)
            else:
                loss = F.cross_entropy(out.logits_main, batch.target)  # ListOps: CE(main) only
                parts = {"ce_main": loss.item()}
            if not math.isfinite(loss.item()):                      # diverged: one report, then stop
                session.report(diverged_report(FINAL_METRICS, {"train_loss": loss.item(), "epoch": float(epoch + 1),
                                                               "walltime_sec": time.perf_counter() - started}))
                return
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s.task == "needle" and s.grad_clip > 0:               # needle clips the grad norm; ListOps does not
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            optimizer.step()
            train_mean.add({**parts, **metrics.batch_metrics(out, batch.target, protos, s.memory_k_top,
                                                             ctl.oracle and ctl.enabled),
                            "loss": loss.item()}, len(batch))               # train loss: the total of §4.1
        train = train_mean.result("train_")

        # validation: assisted (the epoch's writes, true labels) and honest (v_pred only, no labels)
        model.deq_max_iter = min(model.deq_max_iter, s.eval_deq_max_iter)   # quirk §7.7
        val_data = batches(fixed_val if fixed_val is not None else val_set(s, epoch).to(device), s.batch_size)
        assisted = evaluate(model, val_data, WriteControl(oracle=plan.oracle, alpha=plan.alpha,
                                                          mem_scale=plan.mem_scale, strength=plan.strength,
                                                          shared=shared), s, honest=False, prefix="val_")
        honest = evaluate(model, val_data, WriteControl(mem_scale=plan.mem_scale, strength=plan.strength,
                                                        shared=shared), s, honest=True, prefix="honest_")
        if not s.eval_cap_leaks:
            model.deq_max_iter = s.deq_max_iter
        p.deq_max_iter = model.deq_max_iter

        # trainer-side gate effects (spec §4.6)
        val_acc = assisted["val_acc"]
        p.val_history.append(val_acc)
        p.honest_history.append(honest["honest_acc"])
        if plan.lam_used > 0:
            p.post_gate_best = max(val_acc, p.post_gate_best or 0.0)
            if p.pre_gate_best is not None:
                drop = p.pre_gate_best - val_acc
                p.drop_epochs = p.drop_epochs + 1 if drop > s.nce_post_gate_drop_threshold else 0
                p.sustained_drop = p.sustained_drop or p.drop_epochs >= s.nce_post_gate_drop_patience
                if p.drop_epochs >= s.nce_post_gate_drop_patience and p.early_stop_epoch is None:
                    p.early_stop_epoch = epoch + 1                   # early stop, once
        gate.decrement_oracle_hold()
        b_r, b_w = s.nce_read_ema_beta, s.nce_ema_beta
        p.read_ema = b_r * p.read_ema + (1 - b_r) * train.get("train_read_cos", 0.0)
        p.write_ema = b_w * p.write_ema + (1 - b_w) * train.get("train_write_cos", 0.0)
        p.epoch += 1
        p.seconds = time.perf_counter() - started

        # ---- report ------------------------------------------------------------------------------
        last = p.epoch == s.epochs or p.early_stop_epoch is not None
        if p.epoch in reports or last:
            report = {"val_acc_honest": honest["honest_acc"], "val_acc": val_acc, "epoch": float(p.epoch),
                      "val_loss": assisted["val_loss"], "val_loss_honest": honest["honest_loss"],
                      "lambda_nce": plan.lam_used, "lambda_gate": plan.lam_gate, "oracle_mix_alpha": plan.alpha,
                      "oracle_write": float(plan.oracle), "mem_scale": plan.mem_scale, "lr": plan.lr,
                      "write_strength": plan.strength, "nce_read_ema_cos": p.read_ema, "nce_ema_write_cos": p.write_ema,
                      "prototype_cos": metrics.prototype_cos(model.prototypes()),
                      **train, **{k: v for k, v in assisted.items() if k not in ("val_acc", "val_loss")},
                      **{k: v for k, v in honest.items() if k not in ("honest_acc", "honest_loss")}}
            if last:
                report |= final_metrics(s, p, gate, assisted, honest, val_data)
            session.report(report, save)
        if p.early_stop_epoch is not None:
            return


def final_metrics(s: EmmaSettings, p: Progress, gate: NCEScheduler, assisted: dict[str, float],
                  honest: dict[str, float], val_data: list[Batch]) -> dict[str, float]:
    """Run-level summary (spec §5): best scores, gate bookkeeping, walltime; None becomes NaN."""
    def num(x: float | None) -> float:
        return math.nan if x is None else float(x)

    postwarm = p.val_history[s.warm_start_epochs:]
    delta = None if p.pre_gate_best is None or p.post_gate_best is None else p.post_gate_best - p.pre_gate_best
    target = torch.cat([b.target for b in val_data])
    return {"val_acc_honest": honest["honest_acc"], "val_acc": assisted["val_acc"],
            "best_val_acc": max(p.val_history), "best_val_acc_honest": max(p.honest_history),
            "best_val_acc_postwarm": max(postwarm) if postwarm else math.nan,
            "final_val_loss": assisted["val_loss"], "final_val_loss_honest": honest["honest_loss"],
            "gate_open_fraction": p.open_epochs / s.epochs,           # over the configured epochs
            "nce_gate_epoch": num(gate.gate_epoch), "gate_open_epoch": num(None if p.lambda_epoch is None
                                                                            else p.lambda_epoch + 1),
            "pre_gate_best_acc": num(p.pre_gate_best), "post_gate_best_acc": num(p.post_gate_best),
            "delta_post_vs_pre": num(delta),
            "gate_success": float(delta is not None and abs(delta) <= 0.005 and not p.sustained_drop),
            "post_gate_drop_epochs": float(p.drop_epochs), "early_stop_epoch": num(p.early_stop_epoch),
            "epochs_run": float(p.epoch), "majority_acc": metrics.majority_rate(target),
            "chance_acc": 1.0 / n_classes(s), "walltime_sec": p.seconds, "diverged": 0.0}
