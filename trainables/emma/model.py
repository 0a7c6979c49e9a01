"""EMMA (spec §3): a DEQ fixed-point block, a liquid cell and an HRR/VSA key-value memory, batched.

Batched rewrite of the reference's per-token, per-item loops:
- the token part of the DEQ input, W1x x_t + b1, is one matmul over all tokens; the memory part,
  W1v v, is non-zero only at the query (spec §3.6), so it is added there as a precomputed vector;
- spectral-norm weights are computed once per forward (`parametrize.cached`), one power iteration per
  training forward instead of one per DEQ call;
- every write precedes every read (write_pos <= 3L/4 + 1 < query_pos, spec §3.4), so the recurrence runs
  up to the first query, all writes happen at once, then it runs on to the last query; tokens after the
  last query influence no output and are skipped;
- memory is a (B, slots, D) tensor per sequence; a write touches only the written bucket's sub-block,
  gathered and scattered for all rows at once. `shared=True` keeps the reference's one memory for the
  whole batch, written item by item in (time, row) order (spec §7.4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from trainables.emma import picard
from trainables.emma.data import Batch
from trainables.emma.settings import EmmaSettings, n_classes, vocab_size

EPS = 1e-8
DEQ_RELAX = 0.5   # r in z_{i+1} = (1 - r) z_i + r f(z_i)
DEQ_KEEP = {"residual": 1.0, "contractive": 1 - DEQ_RELAX}   # z_{i+1} = keep z_i + r (0.5 W2 tanh(a_i) + 0.5 b2)
LIQUID_DT = 1.0   # the liquid cell's dt; the update below is written for dt = 1
TAU_MIN = max(0.1, 1.01 * LIQUID_DT)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """x / (||x||_2 + 1e-8) along the last axis."""
    return x / (torch.linalg.vector_norm(x, dim=-1, keepdim=True) + EPS)


def bind(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Circular convolution a ⊛ b = irfft(rfft(a) rfft(b))."""
    n = a.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(a) * torch.fft.rfft(b), n=n)


def unbind(c: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Exact inverse of `bind` in the frequency domain: irfft(C conj(A) / (|A|^2 + 1e-8))."""
    n = a.shape[-1]
    fa = torch.fft.rfft(a)
    return torch.fft.irfft(torch.fft.rfft(c) * fa.conj() / (fa.abs() ** 2 + EPS), n=n)


@dataclass
class WriteControl:
    """What the memory writes in one forward (the curriculum of spec §4.4, or an evaluation mode)."""

    oracle: bool = False        # write v_true (needs labels)
    alpha: float = 0.0          # v_write = normalize(alpha v_true + (1 - alpha) v_pred) (needs labels if > 0)
    mem_scale: float = 0.0      # scale of the memory read injected into the DEQ
    strength: float = 1.0       # beta of this epoch (write-strength ramp)
    enabled: bool = True        # false during the post-gate write cooldown
    shared: bool = False        # one memory for the batch (reference parity)

    @property
    def needs_labels(self) -> bool:
        return self.enabled and (self.oracle or self.alpha > 0)


@dataclass
class MemoryState:
    """Memory rows, bucket-major (Bm, buckets, slots per bucket, D), slots written so far, and per-bucket write
    bookkeeping of one forward. Slot j of the reference is [j mod buckets, j // buckets]."""

    M: torch.Tensor
    used: torch.Tensor
    collisions: torch.Tensor    # (n_buckets,) slot-writes that hit a slot already written in this forward
    slot_writes: torch.Tensor   # (n_buckets,) slot-writes
    writes: torch.Tensor        # (n_buckets,) write events

    def slots(self) -> torch.Tensor:
        """The memory in the reference's slot order, (Bm, slots, D)."""
        rows, _, _, d = self.M.shape
        return self.M.transpose(1, 2).reshape(rows, -1, d)


class HRRMemory(nn.Module):
    """Bucketed HRR memory (spec §3.4): LSH bucket, top-k slots inside it, decay / add / renormalise.

    A write or read of N rows gathers the N addressed buckets (N, slots per bucket, D) in one indexing op."""

    def __init__(self, n_slots: int, dim: int, n_buckets: int, k_top: int, decay: float, clip: float | None,
                 bucket_temp: float):
        super().__init__()
        self.register_buffer("addresses", normalize(torch.randn(n_slots, dim)))
        self.register_buffer("projections", normalize(torch.randn(n_buckets, dim)))
        spb = n_slots // n_buckets
        self.register_buffer("bucket_slots", torch.arange(n_buckets)[:, None] + n_buckets * torch.arange(spb))
        self.k = min(k_top, spb)
        self.decay, self.clip, self.bucket_temp = decay, clip, bucket_temp

    def empty(self, rows: int) -> MemoryState:
        """A zero memory of `rows` rows (reset at the start of every forward)."""
        nb, spb = self.bucket_slots.shape
        d, dev = self.addresses.shape[1], self.addresses.device
        return MemoryState(torch.zeros(rows, nb, spb, d, device=dev),
                           torch.zeros(rows, nb, spb, dtype=torch.bool, device=dev),
                           *(torch.zeros(nb, device=dev) for _ in range(3)))

    def address(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """bucket = argmax <k, proj_b>; top-k positions inside the bucket by <k, address>, and their sims."""
        bucket = (k @ self.projections.T).argmax(-1)
        sims = (k @ self.addresses.T).gather(1, self.bucket_slots[bucket])
        top, pos = sims.topk(self.k, dim=1)
        return bucket, pos, top

    @staticmethod
    def _bucket_rows(m: torch.Tensor, rows: torch.Tensor, bucket: torch.Tensor) -> torch.Tensor:
        """m[rows, bucket] as one index_select on the (rows * buckets) axis (4x faster than advanced indexing)."""
        return m.flatten(0, 1).index_select(0, rows * m.shape[1] + bucket)

    @torch.no_grad()
    def write(self, state: MemoryState, rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor, strength: float) -> None:
        """Write bind(k, v) for each (distinct) memory row in `rows`; k, v unit (N, D)."""
        bucket, pos, _ = self.address(k)
        sub = self._bucket_rows(state.M, rows, bucket) * self.decay          # M_bucket <- alpha M_bucket
        u = strength * bind(k, v)                                            # u = beta (k ⊛ v)
        if self.clip is not None:                                            # ||u|| <= clip
            u = u * (self.clip / torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min(EPS)).clamp(max=1)
        sel = torch.zeros(sub.shape[:2], dtype=torch.bool, device=k.device).scatter_(1, pos, True)
        if self.k == sub.shape[1]:                                           # top-k covers the whole bucket
            state.M[rows, bucket] = normalize(sub + u[:, None, :])           # all slots += u, then renormalised
        else:
            sub = sub + sel[..., None] * u[:, None, :]                       # selected slots += u
            state.M[rows, bucket] = torch.where(sel[..., None], normalize(sub), sub)  # per-write renorm of those
        used = state.used[rows, bucket]
        hit = (used & sel).sum(1).to(state.collisions.dtype)                 # slot already written: collision
        state.used[rows, bucket] = used | sel
        state.collisions.index_add_(0, bucket, hit)
        state.slot_writes.index_add_(0, bucket, torch.full_like(hit, self.k))
        state.writes.index_add_(0, bucket, torch.ones_like(hit))

    @torch.no_grad()
    def read(self, state: MemoryState, rows: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """normalize(unbind(sum of the top-k slots, k)) and the addressing entropy, for memory rows `rows`."""
        bucket, pos, top = self.address(k)
        sub = self._bucket_rows(state.M, rows, bucket)
        trace = sub.gather(1, pos[..., None].expand(-1, -1, sub.shape[-1])).sum(1)
        p = torch.softmax(top / self.bucket_temp, dim=1)
        entropy = -(p * torch.log(p + EPS)).sum(1)                           # diagnostic only
        return normalize(unbind(trace, k)), entropy


class DEQUpdater(nn.Module):
    """f(z; x, v) = z + 0.5 W2 tanh(W1 [z; x; v] + b1) + 0.5 b2, W1 and W2 spectrally normalised (spec §3.2).

    `deq_update=contractive` (a model variant, not the seed's): f(z; x, v) = 0.5 W2 tanh(W1 [z; x; v] + b1) + 0.5 b2,
    Lipschitz in z <= 0.5 ||W2|| ||W1z|| <= 0.5 with spectral norm, so z* = f(z*) exists and is unique."""

    def __init__(self, d_h: int, d_x: int, d_v: int, spectral: bool):
        super().__init__()
        hidden = max(128, 2 * d_h)
        self.lin1, self.lin2 = nn.Linear(d_h + d_x + d_v, hidden), nn.Linear(hidden, d_h)
        for lin in (self.lin1, self.lin2):
            nn.init.xavier_uniform_(lin.weight)
            if spectral:
                spectral_norm(lin)
        self.d_h, self.d_x = d_h, d_x


class LiquidCell(nn.Module):
    """h' = h + dt (-h / tau + tanh(W_in z + W_rec h + b)), tau = softplus(W_tau [z; h] + b_tau) + tau_min (§3.3)."""

    def __init__(self, d_h: int):
        super().__init__()
        self.w_in = nn.Linear(d_h, d_h)
        self.w_rec = nn.Linear(d_h, d_h, bias=False)
        self.w_tau = nn.Linear(2 * d_h, d_h)
        for lin in (self.w_in, self.w_rec, self.w_tau):
            nn.init.xavier_uniform_(lin.weight)

    def fused(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """([W_in; W_tau_z]^T, [W_rec; W_tau_h]^T, [b; b_tau]): both gates in two matmuls per step (`Recurrence`)."""
        d = self.w_rec.weight.shape[0]
        wz = torch.cat([self.w_in.weight, self.w_tau.weight[:, :d]]).T
        wh = torch.cat([self.w_rec.weight, self.w_tau.weight[:, d:]]).T
        return wz, wh, torch.cat([self.w_in.bias, self.w_tau.bias])


def _picard_forward(c: torch.Tensor, iterates: torch.Tensor, gates: torch.Tensor, zs: torch.Tensor, w1z: torch.Tensor,
                    w2: torch.Tensor, b2: torch.Tensor, keep: float, max_iter: int, tol: float, store: bool
                    ) -> tuple[list[int], float]:
    """The Picard iterations of every token, eagerly: `picard.cpp`'s `deq_forward` where that is not built or the
    tensors are on a GPU. c (T, B, H) time-major; iterates[0] = z_0; writes every iterate and gate when `store`
    (iteration n's input is iterates[n], its output iterates[n + 1]), else reuses slot 0; zs[t] = z*_t.
    Returns the iterations per token and the last max-abs step."""
    step = zs.new_empty(zs.shape[1:])                                    # z_{i+1} - z_i
    z_at, g_at = iterates.unbind(0), gates.unbind(0)                     # views made once (1.5 us each)
    counts, n = [], 0
    for t, ct in enumerate(c.unbind(0)):
        for i in range(max_iter):
            z_in, g = z_at[n], g_at[n]                                   # without `store`, n stays 0
            torch.addmm(ct, z_in, w1z, out=g).tanh_()
            torch.addmm(b2, g, w2, out=step)                             # g_i W2 + b2 = z_{i+1} - z_i if keep = 1
            if keep != 1:
                step.add_(z_in, alpha=keep - 1)                          # z_{i+1} - z_i = g_i W2 + b2 - (1 - keep) z_i
            if store:
                n += 1
            torch.add(z_in, step, out=z_at[n])
            if 0 < tol and i + 1 < max_iter and float(step.abs().max()) < tol:   # the last one stops anyway
                break
        counts.append(i + 1)
        zs[t].copy_(z_at[n])
    return counts, float(torch.linalg.vector_norm(step, ord=math.inf))


def _picard_backward(into_z: torch.Tensor, gates: torch.Tensor, counts: list[int], w1zt: torch.Tensor,
                     w2t: torch.Tensor, keep: float, d_a: torch.Tensor, d_step: torch.Tensor, d_c: torch.Tensor
                     ) -> torch.Tensor:
    """BPTT through every Picard iteration, eagerly (`picard.cpp`'s `deq_backward`): into_z[t] is d loss / d z*_t from
    outside the DEQ, w1zt and w2t the transposed weights; writes d loss / d a_i into d_a, d loss / d z_{i+1} into
    d_step and d loss / d c_t (the sum of its iterations' d a_i) into d_c; returns d loss / d z_0."""
    gate_grad = 1 - gates * gates                                        # tanh' = 1 - g^2, every iteration
    da_at, ds_at, gg_at = d_a.unbind(0), d_step.unbind(0), gate_grad.unbind(0)
    dz_next, k = torch.zeros_like(into_z[0]), len(gates)
    for t in range(len(counts) - 1, -1, -1):
        first = k - counts[t]
        torch.add(into_z[t], dz_next, out=ds_at[k - 1])
        for j in range(k - 1, first - 1, -1):
            torch.mm(ds_at[j], w2t, out=da_at[j]).mul_(gg_at[j])
            if j > first:                                                # dz_j = keep dz_{j+1} + da_j W1z^T
                torch.addmm(ds_at[j], da_at[j], w1zt, beta=keep, out=ds_at[j - 1])
            else:                                                        # z_0 of token t = z*_{t-1}
                dz_next = torch.addmm(ds_at[j], da_at[j], w1zt, beta=keep)
        torch.sum(d_a[first:k], 0, out=d_c[t])
        k = first
    return dz_next


def _liquid_forward(liquid_in: torch.Tensor, hs: torch.Tensor, lh: torch.Tensor, tanh_pre: torch.Tensor,
                    tau: torch.Tensor, h_raw: torch.Tensor, tau_offset: float) -> None:
    """The liquid cell over every token, eagerly (`picard.cpp`'s `liquid_forward`): liquid_in[t] holds z*_t's part
    of [pre; tau_arg] and the bias; adds h_{t-1}'s part and writes tanh(pre), tau, the raw h_t and hs[t + 1]."""
    h_at = hs.unbind(0)
    for t in range(len(liquid_in)):
        h = h_at[t]
        pre, arg = liquid_in[t].addmm_(h, lh).chunk(2, dim=1)
        th = torch.tanh(pre, out=tanh_pre[t])
        tau_t = torch.add(F.softplus(arg), tau_offset, out=tau[t])
        raw = torch.add(h, th - h / tau_t, out=h_raw[t])                     # h + dt (-h / tau + pre), dt = 1
        torch.nan_to_num(raw, nan=0.0, posinf=1e6, neginf=-1e6, out=h_at[t + 1]).clamp_(-1e3, 1e3)


def _liquid_backward(d_hs: torch.Tensor, pre_grad: torch.Tensor, arg_grad: torch.Tensor, h_grad: torch.Tensor,
                     lht: torch.Tensor, d_liq: torch.Tensor) -> torch.Tensor:
    """BPTT through the liquid cell, eagerly (`picard.cpp`'s `liquid_backward`): d_hs (T, B, d) time-major, lht the
    transposed recurrent weights; writes d loss / d [pre; tau_arg] of every token into d_liq, returns d loss / d h_0."""
    d = d_hs.shape[-1]
    dh_next = torch.zeros_like(d_hs[0])
    for t in range(len(d_hs) - 1, -1, -1):
        dh = d_hs[t] + dh_next
        dl = d_liq[t]
        torch.mul(dh, pre_grad[t], out=dl[:, :d])
        torch.mul(dh, arg_grad[t], out=dl[:, d:])
        dh_next = torch.addmm(dh * h_grad[t], dl, lht)
    return dh_next


def _fused(x: torch.Tensor) -> ModuleType | None:
    """The C++ Picard kernels for these tensors, or None (GPU tensors, other dtypes, or not built)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    return picard.kernels()


class Recurrence(torch.autograd.Function):
    """The per-token recurrence over a segment as one autograd node, with a hand-written backward.

    Per token t, from z_0 = z*_{t-1}:  a_i = z_i W1z + c_t,  g_i = tanh(a_i),  z_{i+1} = keep z_i + g_i W2 + b2
    (W2, b2 pre-scaled by r * 0.5; keep = 1 for the residual update f(z) = z + ..., keep = 1 - r for the
    contractive f(z) = 0.5 W2 tanh(.) + 0.5 b2), for up to K iterations (early exit when max|z_{i+1} - z_i| < tol,
    z_{i+1} - z_i = g_i W2 + b2 - (1 - keep) z_i); then h_t = liquid(z*_t, h_{t-1}). The backward is full BPTT
    through every iteration, dz_i = keep dz_{i+1} + ((dz_{i+1} W2^T) * g_i') W1z^T, exactly what autograd
    would compute (tests compare it with an autograd-only loop), with the weight gradients summed in one
    matmul per weight at the end instead of one autograd node per operation.

    z*_t does not depend on h, so the Picard chain of the whole segment runs first, then the liquid cell, whose
    z-part is one matmul over all tokens. Backward mirrors it: the liquid chain first, then the Picard chain with
    what reaches each z*_t from outside. Both chains run in `picard.cpp` on the CPU (`_fused`), in the eager
    `_picard_*` / `_liquid_*` loops otherwise.
    Every Picard iterate z_i and gate g_i of the segment is written into one preallocated (iterations, B, .)
    buffer, and the backward writes its per-iteration gradients the same way.
    """

    @staticmethod
    def forward(ctx, c, z, h, w1z, w2, b2, lz, lh, lb, max_iter, tol, on_step, keep=1.0):
        store = any(ctx.needs_input_grad[:9])
        b, n_tok, hidden = c.shape
        d = z.shape[1]
        capacity = n_tok * max_iter if store else 1          # without a backward, one slot is reused
        iterates = z.new_empty(capacity + 1, b, d)              # z_0 of every iteration, then the last output
        gates = c.new_empty(capacity, b, hidden)
        zs, hs = z.new_empty(n_tok, b, d), h.new_empty(n_tok + 1, b, d)
        tanh_pre, tau, h_raw = (z.new_empty(n_tok, b, d) for _ in range(3))
        iterates[0], hs[0] = z, h
        kernels = _fused(c)
        solve = kernels.deq_forward if kernels is not None else _picard_forward
        counts, residual = solve(c.transpose(0, 1).contiguous(), iterates, gates, zs, w1z, w2, b2, keep, max_iter,
                                 tol, store)
        liquid_in = torch.addmm(lb, zs.flatten(0, 1), lz).view(n_tok, b, 2 * d)   # [pre; tau_arg], z-part and bias
        liquid = kernels.liquid_forward if kernels is not None else _liquid_forward
        liquid(liquid_in, hs, lh, tanh_pre, tau, h_raw, TAU_MIN + EPS)
        if on_step is not None:                                          # nothing it does feeds back into z or h
            for t in range(n_tok):
                on_step(t, zs[t], hs[t + 1])
        stats = torch.tensor([float(sum(counts)), residual])
        if store:
            n = sum(counts)
            ctx.save_for_backward(w1z, w2, lz, lh)
            ctx.keep = keep
            ctx.buffers = (iterates[:n], gates[:n], counts, tanh_pre, tau, liquid_in[..., d:], h_raw, hs[:-1], zs)
        ctx.mark_non_differentiable(stats)
        return zs.transpose(0, 1).contiguous(), hs[1:].transpose(0, 1).contiguous(), stats

    @staticmethod
    def backward(ctx, d_zs, d_hs, _d_stats):
        w1z, w2, lz, lh = ctx.saved_tensors
        z_in, gates, counts, tanh_pre, tau, tau_arg, h_raw, h_prev, zs = ctx.buffers
        n_tok, (_, b, d) = len(counts), tanh_pre.shape
        keep = ((h_raw >= -1e3) & (h_raw <= 1e3)).to(h_raw.dtype)            # clamp / nan_to_num block the rest
        pre_grad = (1 - tanh_pre * tanh_pre) * keep                          # d h / d pre
        arg_grad = h_prev / (tau * tau) * torch.sigmoid(tau_arg) * keep      # d h / d tau_arg
        h_grad = (1 - 1 / tau) * keep                                        # d h / d h_prev
        kernels = _fused(gates)
        d_liq = tanh_pre.new_empty(n_tok, b, 2 * d)                          # d loss / d [pre; tau_arg], every token
        liquid = kernels.liquid_backward if kernels is not None else _liquid_backward
        w1zt, w2t, lht = (w.T.contiguous() for w in (w1z, w2, lh))      # contiguous: 2x faster small matmuls
        dh0 = liquid(d_hs.transpose(0, 1).contiguous(), pre_grad, arg_grad, h_grad, lht, d_liq)
        d_liq_all = d_liq.flatten(0, 1)
        into_z = torch.addmm(d_zs.transpose(0, 1).reshape(n_tok * b, d), d_liq_all, lz.T).view(n_tok, b, d)
        d_a, d_step = gates.new_empty(gates.shape), z_in.new_empty(z_in.shape)   # per iteration: d a_i, d z_{i+1}
        d_c = d_a.new_empty(n_tok, *d_a.shape[1:])                          # d loss / d c_t, every token
        chain = kernels.deq_backward if kernels is not None else _picard_backward
        dz0 = chain(into_z, gates, counts, w1zt, w2t, ctx.keep, d_a, d_step, d_c)
        d_a_all, d_step_all = d_a.flatten(0, 1), d_step.flatten(0, 1)
        d_w1z = z_in.flatten(0, 1).T @ d_a_all
        d_w2 = gates.flatten(0, 1).T @ d_step_all
        d_lz = zs.flatten(0, 1).T @ d_liq_all
        d_lh = h_prev.flatten(0, 1).T @ d_liq_all
        return (d_c.transpose(0, 1), dz0, dh0, d_w1z, d_w2, d_step_all.sum(0), d_lz, d_lh, d_liq_all.sum(0),
                None, None, None, None)


@dataclass
class Outputs:
    """What one forward produced; losses and metrics are computed from it outside the model."""

    logits_main: torch.Tensor                # (B, C) memory-read logits, sharpened
    logits_aux: torch.Tensor | None          # (B, C) logits of v_pred at the query (needle)
    v_raw: torch.Tensor                      # (B, D) normalised raw read
    snapped: torch.Tensor                    # (B, D) cleaned read
    addr_entropy: torch.Tensor               # (B,)
    memory: MemoryState
    fp_iters: float                          # mean DEQ iterations per token
    residual: float                          # last max-abs Picard step
    scale: torch.Tensor | None = None        # logit scale s used for the logits
    key: torch.Tensor | None = None          # (B, D) normalised key (needle)
    v_pred_write: torch.Tensor | None = None  # (B, D) v_pred at write_pos (needle)
    wrote: torch.Tensor | None = None        # (B,) bool: rows whose value was written from v_pred


class EmmaModel(nn.Module):
    """EMMA for Needle (`forward`) and ListOps-lite (`forward_classify`)."""

    def __init__(self, s: EmmaSettings):
        super().__init__()
        c, d, dh, dx = n_classes(s), s.mem_dim, s.hid_dim, s.emb_dim
        self.embed = nn.Embedding(vocab_size(s), dx)
        self.key_embed, self.value_embed = nn.Embedding(c, d), nn.Embedding(c, d)
        nn.init.normal_(self.key_embed.weight, std=0.1)
        nn.init.normal_(self.value_embed.weight, std=0.1)
        self.deq = DEQUpdater(dh, dx, d, s.use_spectral_norm)
        self.liquid = LiquidCell(dh)
        self.h0 = nn.Parameter(torch.zeros(dh))
        self.z_to_value, self.cls_key = nn.Linear(2 * dh, d), nn.Linear(dh, d)
        if s.spectral_norm_keys:
            spectral_norm(self.z_to_value)
            spectral_norm(self.cls_key)
        self.rho = nn.Parameter(torch.tensor(2.0))
        self.dropout = nn.Dropout(s.value_dropout)
        self.memory = HRRMemory(s.memory_slots, d, s.memory_buckets, s.memory_k_top, s.write_decay,
                                s.write_norm_clip, s.bucket_temp)
        self.s = s
        self.deq_max_iter = s.deq_max_iter   # lowered by the evaluation cap (quirk §7.7)
        self.deq_keep = DEQ_KEEP[s.deq_update]   # z_{i+1} = keep z_i + r (0.5 W2 tanh(a_i) + 0.5 b2)

    # ---- optimiser ---------------------------------------------------------------------------
    def configure_optimizers(self, s: EmmaSettings) -> torch.optim.AdamW:
        """AdamW(lr, weight_decay) over every parameter, as the reference (weight decay on all of them)."""
        return torch.optim.AdamW([{"params": list(self.parameters()), "weight_decay": s.weight_decay}], lr=s.lr)

    # ---- pieces ------------------------------------------------------------------------------
    def logit_scale(self) -> torch.Tensor:
        """s = min(softplus(rho) + 1e-3, logit_scale_max)."""
        return (F.softplus(self.rho) + 1e-3).clamp(max=self.s.logit_scale_max)

    def prototypes(self) -> torch.Tensor:
        """P = normalize(value_embed.weight), (C, D)."""
        return normalize(self.value_embed.weight)

    def value_head(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """v_pred = normalize(dropout(z_to_value([z; h])))."""
        return normalize(self.dropout(self.z_to_value(torch.cat([z, h], dim=-1))))

    def cleanup(self, v_raw: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        """Snap a read to the prototypes: nearest (top-1), or softmax / mean over the top-k (spec §3.5)."""
        sims = normalize(v_raw) @ protos.T
        if self.s.cleanup_topk == 1:
            return protos[sims.argmax(1)]
        top, idx = sims.topk(self.s.cleanup_topk, dim=1)
        weights = torch.softmax(top / self.s.cleanup_temp, 1) if self.s.cleanup_mode == "softmax" else \
            torch.full_like(top, 1 / self.s.cleanup_topk)
        return normalize((weights[..., None] * protos[idx]).sum(1))

    def main_logits(self, v_raw: torch.Tensor, snapped: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        """s (v_logit · P^T), v_logit = normalize(raw v + clean snapped), then read sharpening (spec §3.5)."""
        s = self.s
        v_logit = normalize(s.cleanup_blend_raw * normalize(v_raw) + s.cleanup_blend_clean * snapped)
        logits = self.logit_scale() * (v_logit @ protos.T)
        if self.training and s.sharpen_eval_only:
            return logits
        if s.sharpen_temp != 1:
            logits = logits / s.sharpen_temp
        if 0 < s.sharpen_topk < logits.shape[1]:
            keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.topk(s.sharpen_topk, 1).indices, True)
            logits = torch.where(keep, logits, logits.min(1, keepdim=True).values - s.sharpen_mask_margin)
        return logits

    def _weights(self) -> dict[str, torch.Tensor]:
        """The (spectrally normalised) recurrence weights, fused for the per-token loop."""
        w1, w2 = self.deq.lin1.weight, self.deq.lin2.weight
        dh, dx = self.deq.d_h, self.deq.d_x
        wz, wh, bias = self.liquid.fused()
        step = DEQ_RELAX * 0.5   # (1 - r) z + r f(z) = keep z + r (0.5 W2 tanh(.) + 0.5 b2), keep = DEQ_KEEP
        return {"w1z": w1[:, :dh].T.contiguous(), "w1x": w1[:, dh:dh + dx], "w1v": w1[:, dh + dx:],
                "b1": self.deq.lin1.bias, "w2": (step * w2.T).contiguous(), "b2": step * self.deq.lin2.bias,
                "lz": wz.contiguous(), "lh": wh.contiguous(), "lb": bias}

    def _recur(self, c: torch.Tensor, z: torch.Tensor, h: torch.Tensor, w: dict[str, torch.Tensor],
               on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor, int, float]:
        """DEQ solve, then liquid update, for each token of c = W1x x_t + W1v v_t + b1 (B, T, H).

        Returns z*_t and h_t (B, T, d_h), the number of Picard iterations and the last max-abs step."""
        zs, hs, stats = Recurrence.apply(c, z, h, w["w1z"], w["w2"], w["b2"], w["lz"], w["lh"], w["lb"],
                                         self.deq_max_iter, self.s.deq_tol, on_step, self.deq_keep)
        return zs, hs, int(stats[0]), float(stats[1])

    # ---- Needle ------------------------------------------------------------------------------
    def forward(self, batch: Batch, ctl: WriteControl, labels: torch.Tensor | None = None) -> Outputs:
        """Needle forward (spec §3.7). `labels` are read only when `ctl` writes oracle / mixed values."""
        if ctl.needs_labels and labels is None:
            raise ValueError("oracle or mixed writes need labels; honest evaluation uses alpha = 0, oracle off")
        tokens, qpos, wpos = batch.tokens, batch.query_pos, batch.write_pos
        b = len(tokens)
        rows = torch.arange(b, device=tokens.device)
        protos = self.prototypes()
        key = normalize(self.key_embed(batch.key_id))
        t_split, t_end = int(qpos.min()), int(qpos.max()) + 1          # all writes happen before t_split
        with parametrize.cached():
            w = self._weights()
            cx = F.linear(self.embed(tokens[:, :t_end]), w["w1x"], w["b1"])     # W1x x_t + b1, all tokens
            z0 = tokens.new_zeros(b, self.deq.d_h, dtype=cx.dtype)
            zs, hs, iters, _ = self._recur(cx[:, :t_split], z0, self.h0.expand(b, -1), w)
            z_w, h_w = zs[rows, wpos], hs[rows, wpos]
            v_pred_w = self.value_head(z_w, h_w)                              # v_pred at write_pos
            state = self.memory.empty(1 if ctl.shared else b)
            mem_rows = torch.zeros_like(rows) if ctl.shared else rows
            if ctl.enabled:
                if ctl.oracle:
                    v_write = protos[labels]                                  # v_true = normalize(value_embed[y])
                elif ctl.alpha > 0:
                    v_write = normalize(ctl.alpha * protos[labels] + (1 - ctl.alpha) * v_pred_w)
                else:
                    v_write = v_pred_w
                if ctl.shared:   # reference order: by time step, then by batch row
                    for i in torch.argsort(wpos * b + rows).tolist():
                        self.memory.write(state, mem_rows[i:i + 1], key[i:i + 1], v_write[i:i + 1].detach(),
                                          ctl.strength)
                else:
                    self.memory.write(state, rows, key, v_write.detach(), ctl.strength)
            v_raw, entropy = self.memory.read(state, mem_rows, key)
            snapped = self.cleanup(v_raw, protos)
            c2 = cx[:, t_split:]
            if self.s.mem_into_deq and ctl.mem_scale > 0:                     # v_t = mem_scale clean(read) at query
                inject = F.linear(ctl.mem_scale * normalize(snapped), w["w1v"])
                at_query = (qpos[:, None] - t_split == torch.arange(c2.shape[1], device=c2.device))
                c2 = c2 + at_query[..., None] * inject[:, None, :]
            zs2, hs2, iters2, residual = self._recur(c2, zs[:, -1], hs[:, -1], w)
            z_q, h_q = zs2[rows, qpos - t_split], hs2[rows, qpos - t_split]
            v_pred_q = self.value_head(z_q, h_q)
        scale = self.logit_scale()
        return Outputs(
            logits_main=self.main_logits(v_raw, snapped, protos), logits_aux=scale * (v_pred_q @ protos.T),
            v_raw=v_raw, snapped=snapped, addr_entropy=entropy, memory=state,
            fp_iters=(iters + iters2) / t_end, residual=residual, scale=scale, key=key,
            v_pred_write=v_pred_w, wrote=torch.full_like(rows, ctl.enabled and not ctl.oracle, dtype=torch.bool))

    # ---- ListOps-lite ------------------------------------------------------------------------
    def forward_classify(self, batch: Batch, ctl: WriteControl, labels: torch.Tensor | None = None) -> Outputs:
        """ListOps forward (spec §3.8): every step writes (key cls_key(h), value mix(alpha, v_true, v_pred)),
        one read with the final h's key. No gradient reaches the backbone, so it runs without autograd."""
        if ctl.needs_labels and labels is None:
            raise ValueError("oracle or mixed writes need labels; honest evaluation uses alpha = 0, oracle off")
        tokens = batch.tokens
        b = len(tokens)
        rows = torch.arange(b, device=tokens.device)
        protos = self.prototypes()
        state = self.memory.empty(1 if ctl.shared else b)
        mem_rows = torch.zeros_like(rows) if ctl.shared else rows
        with torch.no_grad():
            v_true = protos[labels] if ctl.needs_labels else None

            def write(_t: int, z: torch.Tensor, h: torch.Tensor) -> None:
                if not ctl.enabled:
                    return
                key = normalize(self.cls_key(h))
                if ctl.oracle:
                    v = v_true
                else:
                    v_pred = self.value_head(z, h)
                    v = normalize(ctl.alpha * v_true + (1 - ctl.alpha) * v_pred) if ctl.alpha > 0 else v_pred
                if ctl.shared:
                    for i in range(b):
                        self.memory.write(state, mem_rows[i:i + 1], key[i:i + 1], v[i:i + 1], ctl.strength)
                else:
                    self.memory.write(state, rows, key, v, ctl.strength)

            with parametrize.cached():
                w = self._weights()
                cx = F.linear(self.embed(tokens), w["w1x"], w["b1"])
                z0 = cx.new_zeros(b, self.deq.d_h)
                _, hs, iters, residual = self._recur(cx, z0, self.h0.expand(b, -1), w, on_step=write)
                h = hs[:, -1]
                v_raw, entropy = self.memory.read(state, mem_rows, normalize(self.cls_key(h)))
        snapped = self.cleanup(v_raw, protos)
        return Outputs(logits_main=self.main_logits(v_raw, snapped, protos), logits_aux=None, v_raw=v_raw,
                       snapped=snapped, addr_entropy=entropy, memory=state, fp_iters=iters / tokens.shape[1],
                       residual=residual)

    def run(self, batch: Batch, ctl: WriteControl, labels: torch.Tensor | None = None) -> Outputs:
        """`forward` for Needle batches, `forward_classify` for ListOps ones."""
        if batch.query_pos is None:
            return self.forward_classify(batch, ctl, labels)
        return self.forward(batch, ctl, labels)

