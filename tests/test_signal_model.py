"""The dense GNN (spec §3.2) equals per-edge message passing (spec §3.1), values and gradients."""

import pytest
import torch

from trainables.signal.model import SignalGNN, edge_index, per_edge_derivative


def _model(low_rank=None, learn_embedding=True):
    torch.manual_seed(0)
    model = SignalGNN(7, embedding_dim=2, hidden_dim=16, low_rank=low_rank, learn_embedding=learn_embedding).double()
    with torch.no_grad():
        if learn_embedding:
            model.a.normal_()  # distinct embeddings, so a mix-up of source and target would show
        if low_rank is None:
            model.W.fill_diagonal_(5.0)  # the mask must hide the diagonal
    return model


def _grads(model, du):
    model.zero_grad()
    (du**2).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("low_rank", [None, 3])
@pytest.mark.parametrize("chunk_edges", [None, 10])
def test_dense_equals_per_edge(low_rank, chunk_edges):
    model = _model(low_rank)
    u = torch.randn(3, 7, dtype=torch.float64) * 5
    dense, per_edge = model(u), per_edge_derivative(model, u, chunk_edges)
    torch.testing.assert_close(dense, per_edge, rtol=1e-12, atol=1e-12)
    dense_grads, edge_grads = _grads(model, model(u)), _grads(model, per_edge_derivative(model, u, chunk_edges))
    assert dense_grads.keys() == edge_grads.keys() and "a" in dense_grads
    for name in dense_grads:
        torch.testing.assert_close(dense_grads[name], edge_grads[name], rtol=1e-10, atol=1e-12)


def test_edge_index_is_all_edges_without_self_loops():
    source, target = edge_index(5)
    assert len(source) == 20 and not (source == target).any()
    assert len(set(zip(source.tolist(), target.tolist()))) == 20


def test_init_and_frozen_embeddings():
    torch.manual_seed(1)
    model = SignalGNN(100, learn_embedding=False)
    assert "a" not in dict(model.named_parameters()) and torch.equal(model.a, torch.ones(100, 2))
    assert torch.all(model.W.diagonal() == 0) and 0.9 < model.W[model.mask.bool()].std() < 1.1  # randn, std 1
    for mlp in (model.lin_edge, model.lin_phi):
        assert mlp[0].in_features == 3 and mlp[2].in_features == 64 and mlp[4].out_features == 1
        for layer in (mlp[2], mlp[4]):
            assert torch.all(layer.bias == 0) and 0.08 < layer.weight.std() < 0.12  # N(0, 0.1^2)
    factorized = SignalGNN(30, low_rank=5)
    assert factorized.W_L.shape == (30, 5) and factorized.W_R.shape == (5, 30)
    assert torch.all(factorized.W_L.diagonal() == 0) and torch.all(factorized.W_R.diagonal() == 0)
    assert torch.all(factorized.connectivity().diagonal() == 0)
