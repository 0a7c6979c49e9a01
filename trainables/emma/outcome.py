"""The outcome class of a finished `emma` trial, from its final metrics (torch-free: input checks load it)."""

from __future__ import annotations

import math
from collections.abc import Mapping

HONEST_MARGIN = 0.05   # above the majority baseline by at least this to count as retrieval


def classify(metrics: Mapping[str, float]) -> str:
    """retrieves: honest val acc >= 0.8; partial: above the majority baseline + 0.05; assisted_only: only the
    assisted score clears that; failed: neither, or diverged."""
    honest = metrics.get("val_acc_honest", math.nan)
    assisted = metrics.get("val_acc", math.nan)
    base = metrics.get("majority_acc", 0.0) + HONEST_MARGIN
    if metrics.get("diverged", 0.0) or not math.isfinite(honest):
        return "failed"
    if honest >= 0.8:
        return "retrieves"
    if honest > base:
        return "partial"
    return "assisted_only" if math.isfinite(assisted) and assisted > base else "failed"
