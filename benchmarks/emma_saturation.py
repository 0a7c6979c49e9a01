"""Why the honest score starts (and stays) at chance: how much of the value token reaches v_pred at the write.

    python benchmarks/emma_saturation.py [--seq-len 256] [--batches 1] [--set KEY=VALUE ...]

For the freshly initialised model of the given settings (seed = model_seed), on training batches of epoch 0:
- per position t, the mean |z*_t| and |h_t| and the share of DEQ pre-activations a = z W1z + W1x x_t + b1 with
  |a| > 2.5 (tanh' < 0.03): the seed's update z <- z + r 0.5 (W2 tanh(a) + b2) has no contraction, so z
  integrates (`--set deq_update=contractive`: z <- (1 - r) z + r 0.5 (W2 tanh(a) + b2), a contraction);
- the mean Picard iterations per token and the last max-abs Picard step max|z_{i+1} - z_i|;
- the cosine between v_pred at write_pos and v_pred of the same sequence with its value token replaced by
  another value token (1.0: v_pred carries nothing of the value the honest write must store), overall and for
  write positions below 20, and the mean cosine between v_pred of different sequences.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from trainables.emma.data import Batch, batches, train_set
from trainables.emma.model import EmmaModel
from trainables.emma.settings import EmmaSettings
from tuner.validation import parse_set_args


def recurrence(model: EmmaModel, tokens: torch.Tensor,
               stats: list[float] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z*_t, h_t (B, L, d_h) and the token part of the DEQ input c_t (B, L, hidden), without memory; appends
    the mean Picard iterations per token and the last max-abs Picard step to `stats` if given."""
    b = len(tokens)
    with torch.no_grad(), parametrize.cached():
        w = model._weights()
        c = F.linear(model.embed(tokens), w["w1x"], w["b1"])
        zs, hs, iters, residual = model._recur(c, c.new_zeros(b, model.deq.d_h), model.h0.expand(b, -1), w)
    if stats is not None:
        stats += [iters / tokens.shape[1], residual]
    return zs, hs, c


def value_swap_cos(model: EmmaModel, batch: Batch) -> torch.Tensor:
    """Per row: cos(v_pred at write_pos, v_pred at write_pos with the value token replaced by another row's)."""
    rows = torch.arange(len(batch))
    swapped = batch.tokens.clone()
    swapped[rows, batch.write_pos] = batch.tokens[rows, batch.write_pos].roll(1)
    preds = []
    for tokens in (batch.tokens, swapped):
        zs, hs, _ = recurrence(model, tokens)
        with torch.no_grad():
            preds.append(model.value_head(zs[rows, batch.write_pos], hs[rows, batch.write_pos]))
    return (preds[0] * preds[1]).sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batches", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    s = EmmaSettings(**{"seq_len": args.seq_len, **parse_set_args(args.set)})
    torch.manual_seed(s.model_seed)
    model = EmmaModel(s).eval()
    data = batches(train_set(s, 0), s.batch_size)[:args.batches]
    stats: list[float] = []
    zs, hs, c = recurrence(model, data[0].tokens, stats)
    print(f"deq_update {s.deq_update}: {stats[0]:.2f} Picard iterations per token (max {s.deq_max_iter}), last "
          f"max|z_(i+1) - z_i| {stats[1]:.3g}")
    w1z = model._weights()["w1z"].detach()
    for t in sorted({0, 10, 50, 100, s.seq_len // 2, s.seq_len - 1}):
        a = zs[:, t] @ w1z + c[:, t]
        print(f"t={t:4d}: |z*| {float(zs[:, t].norm(dim=1).mean()):8.1f}  |h| {float(hs[:, t].norm(dim=1).mean()):7.1f}  "
              f"share |a| > 2.5: {float((a.abs() > 2.5).float().mean()):.3f}  |W1x x + b1| "
              f"{float(c[:, t].norm(dim=1).mean()):.2f}")
    swap = torch.cat([value_swap_cos(model, b) for b in data])
    early = torch.cat([b.write_pos for b in data]) < 20
    rows = torch.arange(len(data[0]))
    zs_w, hs_w = zs[rows, data[0].write_pos], hs[rows, data[0].write_pos]
    with torch.no_grad():
        v = model.value_head(zs_w, hs_w)
    n = len(v)
    print(f"cos(v_pred, v_pred with another value token) at write_pos: mean {float(swap.mean()):.5f} over {len(swap)}"
          f" rows; write_pos < 20: {float(swap[early].mean()) if early.any() else float('nan'):.5f} "
          f"({int(early.sum())} rows)")
    print(f"mean cos between v_pred of different sequences: {float(((v @ v.T).sum() - n) / (n * (n - 1))):.3f}")


if __name__ == "__main__":
    main()
