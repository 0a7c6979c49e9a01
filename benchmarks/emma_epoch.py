"""Time one epoch of the len256 quickstart: the batched trainer against a reference-style per-item loop.

    python benchmarks/emma_epoch.py [--threads 1] [--ref-batches 32] [--len1024-batches 32]

Both sides train the same model (same initialisation, AdamW, gradient clip 1.0) on the same 512 + 64
sequences (L = 256, batch 16, epoch 1 = oracle warm-start writes):
- batched: `trainables.emma.train.run` for one epoch (per-sequence memory, then the reference's shared
  memory), including both validation passes (assisted and honest);
- reference-style: `trainables.emma.reference.reference_forward` — every token through the modules,
  spectral norm recomputed per DEQ call, v_pred at every token, per-item memory writes and reads in
  Python — plus the same loss, backward and step, and one (no-grad) validation pass.
With --ref-batches N < 32 the reference-style training time is extrapolated from N batches.
Then the len1024 quickstart (D 512, 1024 slots, top-16) per-epoch time of the batched trainer.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from trainables.emma.data import batches, train_set, val_set
from trainables.emma.model import EmmaModel, WriteControl
from trainables.emma.reference import reference_forward
from trainables.emma.settings import EmmaSettings
from trainables.emma.train import run


class Quiet:
    """A session that keeps the reports and no checkpoint."""

    checkpoint = None

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def report(self, metrics, save=None) -> None:
        self.history.append(dict(metrics))


def batched_epoch(s: EmmaSettings) -> tuple[float, float, dict[str, float]]:
    """Wall and CPU seconds of one trainer epoch (training + both validation passes), and its report."""
    session = Quiet()
    wall, cpu = time.perf_counter(), time.process_time()
    run(s, session)
    return time.perf_counter() - wall, time.process_time() - cpu, session.history[-1]


def reference_epoch(s: EmmaSettings, n_batches: int) -> tuple[float, float, int]:
    """Wall and CPU seconds of the reference-style epoch (training extrapolated from n_batches), batches timed."""
    torch.manual_seed(s.model_seed)
    model = EmmaModel(s)
    optimizer = model.configure_optimizers(s)
    ctl = WriteControl(oracle=True, alpha=1.0, mem_scale=0.0, strength=s.write_strength, shared=True)
    train = batches(train_set(s, 0), s.batch_size)
    torch.set_flush_denormal(True)
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in train[:n_batches]:
        out = reference_forward(model, batch, ctl, batch.target)
        loss = F.cross_entropy(out["logits_main"], batch.target) + s.lambda_pred * F.cross_entropy(
            out["logits_aux"], batch.target)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        optimizer.step()
    scale = len(train) / min(n_batches, len(train))
    train_wall, train_cpu = (time.perf_counter() - wall) * scale, (time.process_time() - cpu) * scale
    wall, cpu = time.perf_counter(), time.process_time()
    model.eval()
    model.deq_max_iter = min(model.deq_max_iter, s.eval_deq_max_iter)
    with torch.no_grad():
        for batch in batches(val_set(s, 0), s.batch_size):
            reference_forward(model, batch, ctl, batch.target)
    torch.set_flush_denormal(False)
    return (train_wall + time.perf_counter() - wall, train_cpu + time.process_time() - cpu,
            min(n_batches, len(train)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ref-batches", type=int, default=32, help="reference-style batches timed (32 = all)")
    parser.add_argument("--len1024-batches", type=int, default=32, help="0 skips len1024; < 32 extrapolates")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quick = EmmaSettings(epochs=1, n_reports=1, device="cpu", threads=args.threads)   # len256 quickstart
    print(f"len256 quickstart: {quick.train_size} + {quick.val_size} sequences, L={quick.seq_len}, "
          f"batch {quick.batch_size}, {args.threads} thread(s)")
    print(f"load average before: {os.getloadavg()[0]:.2f} (wall time suffers from other processes; CPU time less)")
    seconds, cpu, report = batched_epoch(quick)
    print(f"batched, per-sequence memory: {seconds:6.2f} s/epoch wall, {cpu:6.2f} s CPU "
          f"(train loss {report['train_loss']:.3f})")
    shared_seconds, shared_cpu, _ = batched_epoch(quick.model_copy(update={"memory_mode": "shared"}))
    print(f"batched, shared memory:       {shared_seconds:6.2f} s/epoch wall, {shared_cpu:6.2f} s CPU")
    ref_seconds, ref_cpu, timed = reference_epoch(quick, args.ref_batches)
    note = "" if timed == 32 else f"  (training extrapolated from {timed} of 32 batches)"
    print(f"reference-style loop:         {ref_seconds:6.2f} s/epoch wall, {ref_cpu:6.2f} s CPU{note}")
    print(f"speed-up (wall): {ref_seconds / seconds:.1f}x per-sequence, {ref_seconds / shared_seconds:.1f}x shared; "
          f"(CPU): {ref_cpu / cpu:.1f}x, {ref_cpu / shared_cpu:.1f}x")
    if args.len1024_batches:
        n = min(args.len1024_batches, 32)
        long = quick.model_copy(update={"seq_len": 1024, "mem_dim": 512, "memory_slots": 1024, "memory_k_top": 16,
                                        "train_size": 16 * n})
        seconds, cpu, _ = batched_epoch(long)
        extra = "" if n == 32 else f"  (extrapolated from {n} of 32 batches, validation included)"
        print(f"len1024 quickstart, batched:  {seconds * 32 / n:6.2f} s/epoch wall, {cpu * 32 / n:6.2f} s CPU{extra}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
