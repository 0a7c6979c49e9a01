"""The flyvis GNN (spec §2): node-level g_phi equals the per-edge evaluation; optimizer groups; read-outs."""

import numpy as np
import torch

from trainables.flyvis.connectome import build_connectome
from trainables.flyvis.model import FlyVisGNN, edge_slopes, line_fit, message_gain, update_line_fit
from trainables.flyvis.settings import FlyVisSettings


def make_model(**overrides):
    graph = build_connectome(1)
    s = FlyVisSettings(**{"extent": 1, "w_init": "randn_scaled", "w_init_scale": 30.0, **overrides})
    torch.manual_seed(0)
    model = FlyVisGNN(graph.source, graph.target, graph.n_neurons, s).double()
    with torch.no_grad():
        model.a.normal_()
    return model, graph


def test_node_level_g_phi_equals_per_edge_values_and_gradients():
    model, graph = make_model()
    v = torch.randn(3, graph.n_neurons, dtype=torch.double)          # 3 disjoint graph copies
    node = model.message(model.edge_function(v))
    edge = model.message_per_edge(v)
    assert torch.allclose(node, edge, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(node)
    params = [model.W, model.a, *model.g_phi.parameters()]
    grads_node = torch.autograd.grad((node * weights).sum(), params)
    grads_edge = torch.autograd.grad((edge * weights).sum(), params)
    for a, b in zip(grads_node, grads_edge):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert grads_node[0].abs().sum() > 0                              # W gets a gradient


def test_batch_copies_are_disjoint():
    model, graph = make_model()
    v = torch.randn(2, graph.n_neurons, dtype=torch.double)
    both = model.message(model.edge_function(v))
    alone = model.message(model.edge_function(v[1:]))
    assert torch.allclose(both[1], alone[0])


def test_optimizer_groups():
    model, _ = make_model(lr_W=1e-3, lr=2e-3, lr_emb=3e-3)
    groups = model.configure_optimizers(FlyVisSettings(extent=1, lr_W=1e-3, lr=2e-3, lr_emb=3e-3)).param_groups
    assert [g["lr"] for g in groups] == [1e-3, 2e-3, 3e-3]
    assert groups[0]["params"][0] is model.W and groups[2]["params"][0] is model.a
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_mlp_depth_follows_n_layers():
    model, _ = make_model(n_layers=4, n_layers_update=2)
    assert sum(isinstance(m, torch.nn.Linear) for m in model.g_phi) == 4
    assert sum(isinstance(m, torch.nn.Linear) for m in model.f_theta) == 2


def test_readouts_of_a_linear_update():
    model, graph = make_model()
    n = graph.n_neurons
    with torch.no_grad():                                              # f_theta = -2 v + 0.5 msg + 0.3
        first = model.f_theta[0]
        model.f_theta = torch.nn.Sequential(torch.nn.Linear(first.in_features, 1)).double()
        model.f_theta[0].weight.zero_()
        model.f_theta[0].weight[0, 0], model.f_theta[0].weight[0, -2] = -2.0, 0.5
        model.f_theta[0].bias.fill_(0.3)
    mu, sigma = torch.zeros(n, dtype=torch.double), torch.ones(n, dtype=torch.double)
    slope, intercept = update_line_fit(model, mu, sigma, n_points=50)
    assert torch.allclose(slope, torch.full_like(slope, -2.0)) and torch.allclose(intercept, torch.full_like(slope, 0.3))
    v = torch.randn(4, n, dtype=torch.double)
    assert torch.allclose(message_gain(model, v, torch.zeros_like(v)), torch.full((n,), 0.5, dtype=torch.double))
    r = edge_slopes(model, torch.full((n,), -5.0, dtype=torch.double), sigma)
    assert torch.equal(r, torch.ones(n, dtype=torch.double))           # silent neurons: r = 1


def test_line_fit():
    x = torch.linspace(0, 1, 11)
    slope, intercept = line_fit(x, 3 * x - 1)
    assert np.isclose(slope.item(), 3) and np.isclose(intercept.item(), -1)
