"""HRR algebra, the batched model against the reference-style per-item loop, and honest evaluation."""

import pytest
import torch
import torch.nn.functional as F

from trainables.emma import picard
from trainables.emma.data import batches, train_set, val_set
from trainables.emma.metrics import prototype_cos
from trainables.emma.model import EmmaModel, WriteControl, bind, normalize, unbind
from trainables.emma.reference import deq_update, item_write, reference_forward
from trainables.emma.settings import EmmaSettings
from trainables.emma.train import evaluate
from tuner.validation import TunerInputError, validate_settings

SMALL = {"seq_len": 48, "train_size": 6, "val_size": 8, "mem_dim": 32, "memory_slots": 32, "memory_buckets": 4,
         "memory_k_top": 3, "hid_dim": 16, "emb_dim": 8, "num_values": 8, "vocab_extra": 10, "n_pairs": 2,
         "cleanup_blend_raw": 0.7, "cleanup_blend_clean": 0.3, "write_norm_clip": 0.5, "write_strength": 0.5,
         "write_decay": 0.9}


@pytest.fixture(params=["cpp", "eager"])
def picard_kernel(request, monkeypatch):
    """The Picard chain as the C++ kernel (which must build here: a C++ compiler and ninja) or the eager loop."""
    if request.param == "eager":
        monkeypatch.setattr(picard, "kernels", lambda: None)
    else:
        assert picard.kernels() is not None, "the C++ Picard kernel did not build (see the warning)"
    return request.param


def test_bind_unbind_round_trip():
    g = torch.Generator().manual_seed(0)
    a, b = normalize(torch.randn(5, 256, generator=g)), normalize(torch.randn(5, 256, generator=g))
    assert torch.allclose(unbind(bind(a, b), a), b, atol=1e-4)
    assert F.cosine_similarity(unbind(bind(a, b), b), a).min() > 0.999   # binding commutes
    assert F.cosine_similarity(unbind(bind(a, b), a[[1, 2, 3, 4, 0]]), b).abs().max() < 0.3  # wrong key: noise


def loss_of(logits_main, logits_aux, v_pred_write, protos, y):
    return (F.cross_entropy(logits_main, y) + 0.3 * F.cross_entropy(logits_aux, y)
            + (1 - (v_pred_write * protos[y]).sum(-1)).mean())


@pytest.mark.parametrize("update", ["residual", "contractive"])
@pytest.mark.parametrize(("shared", "alpha", "deq_tol"), [(False, 0.0, 1e-4), (False, 0.4, 1e-4), (True, 0.0, 1e-4),
                                                        (True, 0.4, 1e-4), (False, 0.4, 0.1)])
def test_batched_model_equals_per_item_loop_values_and_gradients(shared, alpha, deq_tol, update, picard_kernel):
    torch.set_default_dtype(torch.float64)
    try:
        s = EmmaSettings(**SMALL, memory_mode="shared" if shared else "per_sequence", deq_tol=deq_tol,
                         deq_update=update)
        torch.manual_seed(0)
        model = EmmaModel(s).eval()                      # eval: spectral norm without a power-iteration update
        batch = train_set(s, 0)
        ctl = WriteControl(alpha=alpha, mem_scale=0.6, strength=0.5, shared=shared)
        out = model(batch, ctl, batch.target)
        if deq_tol > 0.01:                               # the early exit of the Picard loop is exercised
            assert out.fp_iters < s.deq_max_iter
        loss_of(out.logits_main, out.logits_aux, out.v_pred_write, model.prototypes(), batch.target).backward()
        batched = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        ref = reference_forward(model, batch, ctl, batch.target)
        loss_of(ref["logits_main"], ref["logits_aux"], ref["v_pred_write"], model.prototypes(), batch.target).backward()
        looped = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        assert torch.allclose(out.logits_main, ref["logits_main"], atol=1e-10)
        assert torch.allclose(out.logits_aux, ref["logits_aux"], atol=1e-10)
        assert batched.keys() == looped.keys() and "deq.lin1.parametrizations.weight.original" in batched
        for name, grad in batched.items():
            assert torch.allclose(grad, looped[name], atol=1e-9), name
    finally:
        torch.set_default_dtype(torch.float32)


def test_contractive_update_reaches_a_fixed_point_and_residual_update_integrates(picard_kernel):
    """Long sequence, many Picard iterations, no early exit: with `contractive` z*_t is a fixed point of the
    reference-style f (z* = f(z*), f without the z term) and |z*| stays bounded; with `residual` z integrates."""
    s = EmmaSettings(**{**SMALL, "seq_len": 256}, deq_max_iter=40, deq_tol=0.0)
    batch = train_set(s, 0)
    final = {}
    for update in ("residual", "contractive"):
        torch.manual_seed(0)
        model = EmmaModel(s.model_copy(update={"deq_update": update})).eval()
        b = len(batch.tokens)
        with torch.no_grad():
            w = model._weights()
            x = model.embed(batch.tokens)
            c = F.linear(x, w["w1x"], w["b1"])
            zs, _, iters, residual = model._recur(c, c.new_zeros(b, s.hid_dim), model.h0.expand(b, -1), w)
            norms = zs.norm(dim=-1).mean(0)                                   # mean |z*_t| per position t
            assert iters == 40 * s.seq_len
            if update == "contractive":
                v = x.new_zeros(b, s.mem_dim)
                for t in (0, 100, s.seq_len - 1):                              # z*_t = f(z*_t; x_t, 0)
                    assert (deq_update(model, zs[:, t], x[:, t], v) - zs[:, t]).abs().max() < 1e-4
                assert residual < 1e-4 and norms.max() < 10 and norms[-1] < 2 * norms[10]
            else:
                assert residual > 1e-2 and norms[-1] > 10 * norms[10]          # no fixed point: z keeps growing
        final[update] = float(norms[-1])
    assert final["residual"] > 20 * final["contractive"]


@pytest.mark.parametrize("update", ["residual", "contractive"])
def test_cpp_and_eager_picard_chains_agree_in_float32(update, monkeypatch):
    """The training precision: the C++ kernel (MKL sgemm / vsTanh) and the eager loop give the same forward and
    gradients, up to float32 rounding, with and without the early exit."""
    s = EmmaSettings(**SMALL, deq_update=update, deq_tol=0.1)
    batch = train_set(s, 0)
    ctl = WriteControl(alpha=0.4, mem_scale=0.6, strength=0.5)
    built = picard.kernels()
    assert built is not None, "the C++ Picard kernel did not build (see the warning)"
    runs = {}
    for name, kernels in (("cpp", built), ("eager", None)):
        monkeypatch.setattr(picard, "kernels", lambda k=kernels: k)
        torch.manual_seed(0)
        model = EmmaModel(s).eval()
        out = model(batch, ctl, batch.target)
        loss_of(out.logits_main, out.logits_aux, out.v_pred_write, model.prototypes(), batch.target).backward()
        runs[name] = (out, {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    (cpp, cpp_grads), (eager, eager_grads) = runs["cpp"], runs["eager"]
    assert cpp.fp_iters == eager.fp_iters and cpp.fp_iters < s.deq_max_iter      # the same early exits
    assert torch.allclose(cpp.logits_main, eager.logits_main, atol=1e-5)
    assert torch.allclose(cpp.logits_aux, eager.logits_aux, atol=1e-5)
    assert cpp_grads.keys() == eager_grads.keys()
    for name, grad in cpp_grads.items():
        assert torch.allclose(grad, eager_grads[name], rtol=1e-4, atol=1e-6), name


def test_bad_deq_update_names_the_field_and_the_choices():
    with pytest.raises(TunerInputError, match=r"deq_update.*'residual' or 'contractive'"):
        validate_settings(EmmaSettings, {"deq_update": "contracting"})
    assert EmmaSettings().deq_update == "residual"


@pytest.mark.parametrize("k_top", [3, 8])                       # top-k inside the bucket, or all of its 8 slots
def test_vectorised_write_equals_item_writes(k_top):
    s = EmmaSettings(**{**SMALL, "memory_k_top": k_top})
    torch.manual_seed(1)
    model = EmmaModel(s)
    k, v = normalize(torch.randn(6, 32)), normalize(torch.randn(6, 32))
    state = model.memory.empty(6)
    model.memory.write(state, torch.arange(6), k, v, 0.5)
    model.memory.write(state, torch.arange(6), v, k, 0.5)          # second writes: decay, collisions
    looped = torch.zeros(6, 32, 32)
    for i in range(6):
        item_write(model, looped[i], k[i], v[i], 0.5)
        item_write(model, looped[i], v[i], k[i], 0.5)
    assert torch.allclose(state.slots(), looped, atol=1e-6)
    assert int(state.slot_writes.sum()) == 2 * 6 * k_top and int(state.collisions.sum()) <= 6 * k_top


def test_labels_are_required_for_assisted_writes():
    s = EmmaSettings(**SMALL)
    model = EmmaModel(s)
    with pytest.raises(ValueError, match="labels"):
        model(train_set(s, 0), WriteControl(alpha=0.5))


@pytest.mark.parametrize("task", ["needle", "listops"])
def test_honest_evaluation_never_reads_the_label(task):
    extra = {"seq_len": 345, "mem_dim": 32} if task == "listops" else {}
    s = EmmaSettings(**{**SMALL, **extra, "task": task, "val_size": 16})
    torch.manual_seed(0)
    model = EmmaModel(s).eval()                      # train mode would update spectral-norm vectors per call
    data = batches(val_set(s, 0), 8)
    honest = WriteControl(mem_scale=0.6)
    assisted = WriteControl(alpha=0.7, mem_scale=0.6)
    with torch.no_grad():
        before = [model.run(b, honest).logits_main for b in data]
        corrupted = [b.rows(slice(None)) for b in data]
        for b in corrupted:
            b.target = (b.target + 1) % 8                             # every label wrong
        after = [model.run(b, honest).logits_main for b in corrupted]
        mixed = [model.run(b, assisted, b.target).logits_main for b in data]
        mixed_bad = [model.run(b, assisted, b.target).logits_main for b in corrupted]
    assert all(torch.equal(x, y) for x, y in zip(before, after))
    assert not all(torch.equal(x, y) for x, y in zip(mixed, mixed_bad))   # the assisted score does read them
    good = evaluate(model, data, honest, s, honest=True, prefix="h_")
    bad = evaluate(model, corrupted, honest, s, honest=True, prefix="h_")
    for key in ("h_read_cleanup_cos", "h_addr_entropy", "h_bucket_collision_rate"):   # label-free: identical
        assert good[key] == bad[key], key
    assert good["h_read_cos"] != bad["h_read_cos"]                        # label-scored: the labels did change


def test_prototype_cos_tells_apart_from_collapsed():
    assert prototype_cos(torch.eye(6)) == 0.0                                     # orthogonal prototypes
    assert prototype_cos(normalize(torch.ones(6, 4))) == pytest.approx(1.0)      # all the same direction
    assert prototype_cos(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-1.0)
