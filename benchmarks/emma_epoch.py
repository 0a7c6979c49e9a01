"""Time one epoch of the len256 quickstart: the batched trainer against a reference-style per-item loop.

    python benchmarks/emma_epoch.py [--threads 1] [--ref-batches 32] [--len1024-batches 32]

Both sides train the same model (same initialisation, AdamW, gradient clip 1.0) on the same 512 + 64
sequences (L = 256, batch 16, epoch 1 = oracle warm-start writes):
- batched: `trainables.emma.train.run` for one epoch (per-sequence memory, then the reference's shared
  memory), including both validation passes (assisted and honest); the Picard chain runs in the C++ kernel
  (`trainables/emma/picard.cpp`, built before any timing), and once more in the eager loop for comparison;
- reference-style: `trainables.emma.reference.reference_forward` — every token through the modules,
  spectral norm recomputed per DEQ call, v_pred at every token, per-item memory writes and reads in
  Python — plus the same loss, backward and step, and one (no-grad) validation pass.
With --ref-batches N < 32 the reference-style training time is extrapolated from N batches.
Then the len1024 quickstart (D 512, 1024 slots, top-16) per-epoch time of the batched trainer.

Before any timing, one AdamW is built: torch.optim imports torch._dynamo on first use (2-16 s here), a
once-per-process cost that would otherwise land in whichever epoch is timed first.
The "matmul floor" line is what bounds the batched epoch: its dense FLOPs (per Picard iteration 2 matmuls
forward, 2 backward and 2 for the weight gradients; per token the same for the liquid cell), divided by the
rate this machine reaches on the (batch x d_h) @ (d_h x hidden) matmul, timed in the same run.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from trainables.emma import picard
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


def matmul_floor(s: EmmaSettings, train_iters: float) -> tuple[float, float]:
    """(CPU seconds, GFLOP/s): the len256 epoch's dense matmul FLOPs at the measured small-matmul rate.

    `train_iters` is the mean Picard iterations per token in training; evaluation uses eval_deq_max_iter."""
    hidden, b = max(128, 2 * s.hid_dim), s.batch_size
    z, w, c = torch.randn(b, s.hid_dim), torch.randn(s.hid_dim, hidden), torch.randn(b, hidden)
    for _ in range(200):
        torch.addmm(c, z, w)
    start, n = time.process_time(), 5000                              # CPU time: comparable with the epoch's
    for _ in range(n):
        torch.addmm(c, z, w)
    seconds = (time.process_time() - start) / n
    unit = 2 * b * s.hid_dim * hidden                                  # FLOPs of one such matmul
    tokens = sum(int(batch.query_pos.max()) + 1 for batch in batches(train_set(s, 0), b))
    val_tokens = sum(int(batch.query_pos.max()) + 1 for batch in batches(val_set(s, 0), b))
    flops = unit * (tokens * 6 * (train_iters + 1) + 2 * val_tokens * 2 * (s.eval_deq_max_iter + 1))
    return flops / unit * seconds, unit / seconds / 1e9


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
    start = time.perf_counter()
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])            # the one-off torch._dynamo import
    print(f"warm-up (first AdamW: torch._dynamo import), not timed below: {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    kernels = picard.kernels()
    print(f"C++ Picard kernel: {'built or loaded' if kernels else 'NOT AVAILABLE, eager loop'} in "
          f"{time.perf_counter() - start:.1f} s, not timed below")
    seconds, cpu, report = batched_epoch(quick)
    print(f"batched, per-sequence memory: {seconds:6.2f} s/epoch wall, {cpu:6.2f} s CPU "
          f"(train loss {report['train_loss']:.3f})")
    if kernels is not None:
        picard.kernels = lambda: None
        eager_seconds, eager_cpu, eager_report = batched_epoch(quick)
        picard.kernels = lambda: kernels
        print(f"  the same, eager Picard loop: {eager_seconds:6.2f} s/epoch wall, {eager_cpu:6.2f} s CPU "
              f"(train loss {eager_report['train_loss']:.3f}); kernel speed-up {eager_seconds / seconds:.2f}x")
    floor, rate = matmul_floor(quick, report["train_avg_fp_iters"])
    print(f"matmul floor of that epoch: {floor:6.2f} s CPU at {rate:.0f} GFLOP/s ({args.threads} thread(s)); the "
          f"rest is elementwise ops, Python and allocation")
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
