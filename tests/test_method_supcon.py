"""SupCon (Khosla et al., NeurIPS 2020): the loss L_out (Eq. 2), the head, the configs.

Reference: a re-typed copy of the released ``SupConLoss`` (github.com/HobbitLong/SupContrast,
``losses.py``, class ``SupConLoss``, contrast_mode 'all'), run with ``base_temperature`` equal to
``temperature`` (its extra factor ``temperature / base_temperature`` is then 1).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.errors import ConfigError
from harness.method import Batch, TrainInfo
from harness.plugins.methods.supcon import SupCon, supcon_loss


def _released_supcon_loss(features, labels, temperature, base_temperature):  # losses.py SupConLoss.forward
    device = features.device
    batch_size = features.shape[0]
    labels = labels.contiguous().view(-1, 1)
    mask = torch.eq(labels, labels.T).float().to(device)
    contrast_count = features.shape[1]
    contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
    anchor_feature = contrast_feature
    anchor_count = contrast_count
    anchor_dot_contrast = torch.div(torch.matmul(anchor_feature, contrast_feature.T), temperature)
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    mask = mask.repeat(anchor_count, contrast_count)
    logits_mask = torch.scatter(torch.ones_like(mask), 1,
                                torch.arange(batch_size * anchor_count).view(-1, 1).to(device), 0)
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    loss = -(temperature / base_temperature) * mean_log_prob_pos
    return loss.view(anchor_count, batch_size).mean()


def test_loss_on_hand_made_batches():
    tau = 0.1
    # two images, two views each, on the unit circle: view 0 at ±e1, view 1 at ±e2
    f = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64)
    # different labels: every anchor has one positive (dot 0) and negatives at dots -1 and 0
    assert float(supcon_loss(f, torch.tensor([0, 1]), tau=tau)) == pytest.approx(math.log(2 + math.exp(-1 / tau)))
    # one label: three positives with dots -1, 0, 0 -> mean log-prob = -(1/τ)/3 - log(2 + e^{-1/τ})
    assert float(supcon_loss(f, torch.tensor([0, 0]), tau=tau)) == pytest.approx(
        (1 / tau) / 3 + math.log(2 + math.exp(-1 / tau)))


@pytest.mark.parametrize("views", [2, 3])
def test_loss_matches_the_released_supconloss(views):
    g = torch.Generator().manual_seed(0)
    f = F.normalize(torch.randn(10, views, 16, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 1, 2, 0, 1, 3, 3, 0, 4, 2])  # class 4 has one image: only its other views
    ours = supcon_loss(f, labels, tau=0.1)
    assert float(ours) == pytest.approx(float(_released_supcon_loss(f, labels, 0.1, 0.1)), rel=1e-12)
    # the released default base_temperature 0.07 only scales the loss
    assert float(_released_supcon_loss(f, labels, 0.1, 0.07)) == pytest.approx(float(ours) * 0.1 / 0.07, rel=1e-12)


def test_gradients_are_finite_also_for_identical_views():
    f = torch.randn(6, 2, 8, dtype=torch.float64)
    f[:, 1] = f[:, 0]
    f.requires_grad_(True)
    loss = supcon_loss(F.normalize(f, dim=-1), torch.tensor([0, 0, 1, 1, 2, 2]), tau=0.1)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f.grad).all()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="V >= 2 views"):
        supcon_loss(torch.randn(4, 1, 3), torch.arange(4), tau=0.1)
    with pytest.raises(ValueError, match="labels must be \\(4,\\)"):
        supcon_loss(torch.randn(4, 2, 3), torch.arange(5), tau=0.1)


def test_tasks_measure_the_normalised_encoder_output_and_training_the_projection():
    info = TrainInfo(feat_dim=12, num_classes=3, num_train=6, label_field="label", epochs=1)
    method = SupCon(SupCon.Config(), torch.nn.Identity(), info)
    x = torch.randn(6, 12) * 5
    torch.testing.assert_close(method.embed(x), F.normalize(x, dim=-1))
    assert [tuple(m.weight.shape) for m in method.projection if hasattr(m, "weight")] == [(12, 12), (128, 12)]
    z = method.project(x)
    assert z.shape == (6, 128)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(6))
    views = iter([x, x + 0.5])  # two views of the same images
    batch = Batch(images=x, labels=torch.tensor([0, 0, 1, 1, 2, 2]), viewer=lambda raw, policy: next(views),
                  raw=x)
    expected = supcon_loss(torch.stack([method.project(x), method.project(x + 0.5)], 1),
                           batch.labels, tau=0.1)
    torch.testing.assert_close(method.training_step(batch, None), expected)


@pytest.mark.parametrize("overrides, message", [
    ({"tau": 0.0}, "tau"), ({"tau": float("nan")}, "tau"), ({"dim": 0}, "dim"), ({"hidden": -1}, "hidden"),
])
def test_invalid_configs_get_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        SupCon.Config(**overrides).validate()


def test_half_precision_features_are_computed_in_float32():
    f = F.normalize(torch.randn(6, 2, 8, generator=torch.Generator().manual_seed(3)), dim=-1).bfloat16()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    reference = supcon_loss(f.float(), labels, tau=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = supcon_loss(f, labels, tau=0.1)
    assert loss.dtype == torch.float32 and float(loss) == float(reference)  # not bf16 logits


def test_its_own_learning_rate_replaces_the_grids_on_the_same_optimiser():
    import geoopt

    from harness.config import TrainConfig

    info = TrainInfo(feat_dim=8, num_classes=3, num_train=12, label_field="label", epochs=1)
    train = TrainConfig(lr=5e-3, weight_decay=1e-4)
    assert SupCon(SupCon.Config(), torch.nn.Identity(), info).configure_optimizer(train) is None  # the engine's
    method = SupCon(SupCon.Config(lr=2e-3), torch.nn.Identity(), info)
    opt = method.configure_optimizer(train)
    assert isinstance(opt, geoopt.optim.RiemannianAdam)  # train.optimizer's kind, this method's lr
    assert [g["lr"] for g in opt.param_groups] == [2e-3] and opt.param_groups[0]["weight_decay"] == 1e-4
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in method.parameters())
