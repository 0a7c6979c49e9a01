"""Metrics of spec §5 from one forward's outputs and their per-epoch means.

Two validation scores: `val_acc` is the reference's assisted score (validation writes use the
epoch's oracle / label mix with the true label, spec §7.1); `val_acc_honest` writes v_pred only
(oracle off, alpha = 0) and never sees the label. Both are on the same validation samples.
The outcome class of a trial (`classify`) is in `outcome.py`, which loads without torch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from trainables.emma.model import MemoryState, Outputs


def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine."""
    return F.cosine_similarity(a, b, dim=-1, eps=1e-8)


def memory_stats(state: MemoryState) -> dict[str, float]:
    """Collision rate = collisions / slot-writes; per-bucket mean and max rates; write-share variance."""
    slot_writes = state.slot_writes
    total = float(slot_writes.sum())
    per_bucket = torch.where(slot_writes > 0, state.collisions / slot_writes.clamp_min(1), 0.0)
    share = state.writes / state.writes.sum().clamp_min(1)
    return {"bucket_collision_rate": float(state.collisions.sum()) / total if total else 0.0,
            "bucket_collision_rate_mean": float(per_bucket.mean()),
            "bucket_collision_rate_max": float(per_bucket.max()),
            "bucket_load_variance": float(share.var(unbiased=False)),
            "bucket_usage_active": float((state.writes > 0).sum())}


def batch_metrics(out: Outputs, target: torch.Tensor, protos: torch.Tensor, k_top: int,
                  oracle_writes: bool = False) -> dict[str, float]:
    """Accuracy, share of the batch's most predicted class, read cosines (clean, raw, cleanup, gap), top-k hit,
    entropy, DEQ and memory stats, and for
    Needle the write cos (oracle writes count 1.0, blocked writes are no events)."""
    with torch.no_grad():
        true = protos[target]
        raw, clean = cos(out.v_raw, true), cos(out.snapped, true)
        cleanup = cos(out.v_raw, out.snapped)
        k = min(k_top, out.logits_main.shape[1])
        hit = (out.logits_main.topk(k, dim=1).indices == target[:, None]).any(1)
        pred = out.logits_main.argmax(1)
        m = {"acc": float((pred == target).float().mean()),
             "pred_top_share": float(torch.bincount(pred).max()) / len(pred),   # 1: every read snaps to one class
             "loss": float(F.cross_entropy(out.logits_main, target)),
             "read_cos": float(clean.mean()), "read_cos_raw": float(raw.mean()),
             "read_cleanup_cos": float(cleanup.mean()), "read_gap": float((cleanup - raw).mean()),
             "topk_hit_rate": float(hit.float().mean()), "addr_entropy": float(out.addr_entropy.mean()),
             "avg_fp_iters": out.fp_iters, "residual_norm": out.residual, **memory_stats(out.memory)}
        if out.wrote is not None and bool(out.wrote.any()):
            m["write_cos"] = float(cos(out.v_pred_write[out.wrote], true[out.wrote]).mean())
        elif oracle_writes and out.wrote is not None:
            m["write_cos"] = 1.0
        return m


class Mean:
    """Running means of per-batch metric dicts, weighted by batch size."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.weights: dict[str, float] = defaultdict(float)

    def add(self, metrics: Mapping[str, float], weight: float) -> None:
        for k, v in metrics.items():
            if math.isfinite(v):
                self.sums[k] += v * weight
                self.weights[k] += weight

    def result(self, prefix: str = "") -> dict[str, float]:
        return {prefix + k: self.sums[k] / self.weights[k] for k in self.sums if self.weights[k] > 0}


def prototype_cos(protos: torch.Tensor) -> float:
    """Mean off-diagonal cosine of the (unit) prototypes: near 0 when apart, toward 1 as they collapse."""
    c = len(protos)
    with torch.no_grad():
        return float(((protos @ protos.T).sum() - protos.pow(2).sum()) / (c * (c - 1)))


def majority_rate(target: torch.Tensor) -> float:
    """Share of the most frequent class (the majority baseline)."""
    return float(torch.bincount(target).max()) / len(target)
