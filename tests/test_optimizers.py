"""The default optimisers of ``train.optimizer``, and the guard that keeps manifold parameters off a
Euclidean optimiser (a plain step leaves the Poincaré ball)."""

import dataclasses

import geoopt
import pytest
import torch
from torch import nn

from harness.config import TrainConfig
from harness.engine import _check_manifold_params, make_optimizer
from harness.errors import ConfigError


@pytest.mark.parametrize("kind, cls", [
    ("riemannian_adam", geoopt.optim.RiemannianAdam), ("riemannian_sgd", geoopt.optim.RiemannianSGD),
    ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD),
])
def test_each_optimizer_kind_with_the_configs_rates(kind, cls):
    cfg = dataclasses.replace(TrainConfig(), optimizer=kind, lr=0.03, weight_decay=0.002, momentum=0.7)
    opt = make_optimizer([nn.Parameter(torch.zeros(3))], cfg)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.03 and group["weight_decay"] == 0.002
    if "sgd" in kind:
        assert group["momentum"] == 0.7


def test_an_unknown_optimizer_is_refused_with_the_choices():
    cfg = dataclasses.replace(TrainConfig(), optimizer="lbfgs")
    with pytest.raises(ConfigError, match="riemannian_adam, riemannian_sgd, adam, adamw or sgd, got 'lbfgs'"):
        make_optimizer([nn.Parameter(torch.zeros(3))], cfg)


def _ball_point():
    ball = geoopt.PoincareBall(c=1.0)
    return geoopt.ManifoldParameter(torch.tensor([[0.5, 0.0]]), manifold=ball)


def _one_step(opt, point):
    opt.zero_grad()
    (-(point[:, 0]).sum() * 10).backward()  # pulls x outwards hard
    opt.step()
    return float(point.detach().norm())


def test_riemannian_sgd_keeps_a_ball_parameter_inside_where_plain_sgd_leaves_the_ball():
    cfg = dataclasses.replace(TrainConfig(), optimizer="riemannian_sgd", lr=0.1, momentum=0.0, weight_decay=0.0)
    inside = _ball_point()
    assert _one_step(make_optimizer([inside], cfg), inside) < 1.0
    outside = _ball_point()
    assert _one_step(torch.optim.SGD([outside], lr=0.1), outside) == pytest.approx(1.5)  # 0.5 + 0.1·10


def test_a_manifold_parameter_under_a_euclidean_optimizer_is_refused():
    module = nn.Module()
    module.point = _ball_point()
    with pytest.raises(ConfigError, match="ManifoldParameters but its optimiser is SGD: use geoopt.optim"):
        _check_manifold_params(module, torch.optim.SGD(module.parameters(), lr=0.1))
    _check_manifold_params(module, geoopt.optim.RiemannianSGD(module.parameters(), lr=0.1))
    module.point.requires_grad_(False)  # a frozen manifold parameter takes no step: any optimiser will do
    _check_manifold_params(module, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))
