"""A reference-style Needle forward of the same `EmmaModel`: token by token, item by item (spec §3.7).

It mirrors the structure of the original trainer — every token runs the DEQ through the modules
(spectral norm recomputed on each call), computes v_pred, and each write or read is a Python loop over
batch items and slots — and exists for two checks: the tests compare the batched model with it (values
and gradients), and `benchmarks/emma_epoch.py` times it against the batched trainer.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from trainables.emma.data import Batch
from trainables.emma.model import (
    DEQ_RELAX,
    TAU_MIN,
    EmmaModel,
    WriteControl,
    bind,
    normalize,
    unbind,
)


def _slots(model: EmmaModel, k: torch.Tensor) -> tuple[list[int], list[int]]:
    """The bucket's slots and the top-k of them for one key (D,)."""
    mem = model.memory
    bucket = int(torch.argmax(mem.projections @ k))
    slots = mem.bucket_slots[bucket].tolist()
    sims = torch.stack([mem.addresses[j] @ k for j in slots])
    return slots, [slots[j] for j in torch.topk(sims, mem.k).indices.tolist()]


@torch.no_grad()
def item_write(model: EmmaModel, memory: torch.Tensor, k: torch.Tensor, v: torch.Tensor, strength: float) -> None:
    """One item's write into memory (S, D): decay its bucket, add beta k ⊛ v to the top-k slots, renormalise."""
    mem = model.memory
    slots, chosen = _slots(model, k)
    for j in slots:
        memory[j] *= mem.decay
    u = strength * bind(k, v)
    if mem.clip is not None and float(u.norm()) > mem.clip:
        u = u * (mem.clip / u.norm())
    for j in chosen:
        memory[j] += u
        memory[j] /= memory[j].norm() + 1e-8


@torch.no_grad()
def item_read(model: EmmaModel, memory: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """One item's read: unbind the sum of its top-k slots with k, normalised."""
    _, chosen = _slots(model, k)
    trace = sum(memory[j] for j in chosen)
    return normalize(unbind(trace, k))


def deq_update(model: EmmaModel, z: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """f(z; x, v) = z + 0.5 W2 tanh(W1 [z; x; v] + b1) + 0.5 b2 (`deq_update=residual`), or without the z term
    (`contractive`), through the (spectrally normalised) modules."""
    lin1, lin2 = model.deq.lin1, model.deq.lin2
    z_term = z if model.s.deq_update == "residual" else torch.zeros_like(z)
    return z_term + 0.5 * F.linear(torch.tanh(lin1(torch.cat([z, x, v], dim=-1))), lin2.weight) + 0.5 * lin2.bias


def liquid(model: EmmaModel, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The liquid cell through its modules (dt = 1)."""
    cell = model.liquid
    pre = torch.tanh(cell.w_in(z) + cell.w_rec(h))
    tau = (F.softplus(cell.w_tau(torch.cat([z, h], dim=-1))) + TAU_MIN).clamp(min=1.01)
    h = h + (-h / (tau + 1e-8) + pre)
    return torch.nan_to_num(h, nan=0.0, posinf=1e6, neginf=-1e6).clamp(-1e3, 1e3)


def reference_forward(model: EmmaModel, batch: Batch, ctl: WriteControl,
                      labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Needle forward over all L tokens with per-item memory (one per sequence, or one shared if ctl.shared)."""
    tokens, key_id, wpos, qpos = batch.tokens, batch.key_id, batch.write_pos, batch.query_pos
    b, length = tokens.shape
    d = model.s.mem_dim
    protos = model.prototypes()
    key = normalize(model.key_embed(key_id))
    memories = [torch.zeros(model.memory.addresses.shape) for _ in range(1 if ctl.shared else b)]
    x = model.embed(tokens)
    z, h = x.new_zeros(b, model.deq.d_h), model.h0.expand(b, -1)
    logits_main = [None] * b
    logits_aux, v_pred_write = [None] * b, [None] * b
    for t in range(length):
        v = x.new_zeros(b, d)
        queried = [i for i in range(b) if int(qpos[i]) == t]
        reads = {i: item_read(model, memories[0 if ctl.shared else i], key[i]) for i in queried}
        if model.s.mem_into_deq and ctl.mem_scale > 0 and queried:
            inject = [ctl.mem_scale * normalize(model.cleanup(reads[i][None], protos))[0] for i in queried]
            v = v.index_put((torch.tensor(queried),), torch.stack(inject))
        for _ in range(model.deq_max_iter):
            z_new = (1 - DEQ_RELAX) * z + DEQ_RELAX * deq_update(model, z, x[:, t], v)
            converged = float((z_new - z).detach().abs().max()) < model.s.deq_tol
            z = z_new
            if converged:
                break
        h = liquid(model, z, h)
        v_pred = model.value_head(z, h)
        for i in range(b):
            if int(wpos[i]) == t:
                v_pred_write[i] = v_pred[i]
                if ctl.enabled:
                    if ctl.oracle:
                        v_w = protos[labels[i]]
                    elif ctl.alpha > 0:
                        v_w = normalize(ctl.alpha * protos[labels[i]] + (1 - ctl.alpha) * v_pred[i])
                    else:
                        v_w = v_pred[i]
                    item_write(model, memories[0 if ctl.shared else i], key[i], v_w.detach(), ctl.strength)
        for i in queried:
            snapped = model.cleanup(reads[i][None], protos)
            logits_main[i] = model.main_logits(reads[i][None], snapped, protos)[0]
            logits_aux[i] = model.logit_scale() * (v_pred[i] @ protos.T)
    return {"logits_main": torch.stack(logits_main), "logits_aux": torch.stack(logits_aux),
            "v_pred_write": torch.stack(v_pred_write)}
