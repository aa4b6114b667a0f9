"""SimCLR (plugins/methods/simclr.py): NT-Xent, LARS, head, schedule, configs."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError
from harness.method import TrainInfo
from harness.plugins.methods.simclr import LARS, SimCLR, lars_param_groups, nt_xent, simclr_head
from harness.registry import make_config

LARGE_NUM = 1e9


# --- re-typed reference: google-research/simclr, objective.py, add_contrastive_loss (no TPU context),
# in torch; its loss is loss_a + loss_b, the sum of the two directions' means.
def ref_add_contrastive_loss(hidden, hidden_norm=True, temperature=1.0):
    if hidden_norm:
        hidden = F.normalize(hidden, dim=-1)
    hidden1, hidden2 = torch.split(hidden, hidden.shape[0] // 2, 0)
    batch_size = hidden1.shape[0]
    hidden1_large, hidden2_large = hidden1, hidden2
    labels = F.one_hot(torch.arange(batch_size), batch_size * 2).double()
    masks = F.one_hot(torch.arange(batch_size), batch_size).double()
    logits_aa = hidden1 @ hidden1_large.T / temperature
    logits_aa = logits_aa - masks * LARGE_NUM
    logits_bb = hidden2 @ hidden2_large.T / temperature
    logits_bb = logits_bb - masks * LARGE_NUM
    logits_ab = hidden1 @ hidden2_large.T / temperature
    logits_ba = hidden2 @ hidden1_large.T / temperature

    def softmax_cross_entropy(onehot, logits):
        return -(onehot * F.log_softmax(logits, dim=1)).sum(1).mean()

    loss_a = softmax_cross_entropy(labels, torch.cat([logits_ab, logits_aa], 1))
    loss_b = softmax_cross_entropy(labels, torch.cat([logits_ba, logits_bb], 1))
    return loss_a + loss_b


def test_nt_xent_matches_the_released_objective():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(7, 16, generator=g, dtype=torch.float64), torch.randn(7, 16, generator=g, dtype=torch.float64)
    ref = ref_add_contrastive_loss(torch.cat([z1, z2]), temperature=0.5)
    torch.testing.assert_close(2 * nt_xent(z1, z2, tau=0.5), ref)


def test_nt_xent_on_a_hand_computed_pair():
    # two images, views equal: s(i, own view) = 1, other image's views: orthogonal (0)
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    tau = 0.5
    # each view: positive exp(1/τ) against itself-excluded {positive, two others at 0}
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2))
    assert nt_xent(z1, z1.clone(), tau=tau).item() == pytest.approx(expected, rel=1e-12)


# --- re-typed reference: google-research/simclr, lars_optimizer.py, LARSOptimizer.apply_gradients
# (classic_momentum=True, use_nesterov=False), for one tensor.
def ref_lars_update(param, grad, v, lr, momentum, weight_decay, eeta, use_wd, adapt):
    if use_wd:
        grad = grad + weight_decay * param
    trust_ratio = 1.0
    if adapt:
        w_norm, g_norm = param.norm(), grad.norm()
        trust_ratio = torch.where(w_norm > 0, torch.where(g_norm > 0, eeta * w_norm / g_norm, 1.0), 1.0)
    scaled_lr = lr * trust_ratio
    next_v = momentum * v + scaled_lr * grad
    return param - next_v, next_v


def test_lars_steps_match_the_released_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    groups = lars_param_groups([model], 1e-4)
    assert [len(g["params"]) for g in groups] == [1, 3]  # the weight; bias + BN weight and bias
    opt = LARS(groups, lr=0.7, momentum=0.9)
    params = [p.detach().clone() for p in model.parameters()]
    vs = [torch.zeros_like(p) for p in params]
    for _ in range(3):
        model.zero_grad()
        model(torch.randn(8, 4)).pow(2).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
        for i, (name, p) in enumerate(model.named_parameters()):
            decayed = name == "0.weight"
            params[i], vs[i] = ref_lars_update(params[i], grads[i], vs[i], 0.7, 0.9, 1e-4, 0.001, decayed, decayed)
            torch.testing.assert_close(p.detach(), params[i])


def _info(feat_dim=8):
    return TrainInfo(feat_dim=feat_dim, num_classes=0, num_train=32, label_field=None, epochs=1)


def _backbone(feat_dim=8):
    return nn.Sequential(nn.Conv2d(3, feat_dim, 3, padding=1), nn.BatchNorm2d(feat_dim), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_head_optimizer_and_schedule():
    method = SimCLR(make_config(SimCLR, {}), _backbone(), _info())
    head = simclr_head(8, 128)
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert head[0].bias is None and head[3].bias is None and not head[4].bias.requires_grad
    opt = method.configure_optimizer(type("T", (), {"batch_size": 128})())
    assert isinstance(opt, LARS) and opt.param_groups[0]["lr"] == pytest.approx(1.0 * 128 / 256)
    sched = method.lr_schedule(None)
    assert sched(0.0) == 0.0 and sched(0.005) == pytest.approx(0.5) and sched(0.01) == pytest.approx(1.0)
    assert sched(0.505) == pytest.approx(0.5) and sched(0.999999) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("key, value, message", [
    ("tau", 0.0, "tau"), ("warmup", 1.0, "warmup"), ("embedding", "ball", "embedding"), ("lr", 0.0, "lr"),
])
def test_invalid_configs_get_clear_errors(key, value, message):
    with pytest.raises(ConfigError, match=f"simclr: {message}"):
        make_config(SimCLR, {key: value}).validate()


def test_views_use_the_configured_augmentation_policy():
    """Two views per image under ``augment`` (default: the released CIFAR-10 command's ``simclr_cifar``); a typo
    names the choices."""
    seen = []

    class Views:
        def view(self, policy):
            seen.append(policy)
            return torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(len(seen)))

    for overrides in ({}, {"augment": "crop"}):
        method = SimCLR(make_config(SimCLR, overrides), _backbone(), _info())
        assert torch.isfinite(method.training_step(Views(), None))
    assert seen == ["simclr_cifar", "simclr_cifar", "crop", "crop"]
    with pytest.raises(ConfigError, match="simclr: augment: .*did you mean 'simclr'"):
        make_config(SimCLR, {"augment": "simclrr"}).validate()


@pytest.mark.slow
def test_short_pretraining_beats_random_init_on_few_shot(tmp_path):
    from harness.run import run_cell
    from harness.sweep import compose

    def cell(overrides):
        config = compose([*overrides, "task=few_shot", "dataset.images_per_class=30", "seed=0",
                          f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}"])
        result = run_cell(config, progress=False)
        assert result["status"] == "ok", result["reason"]
        return result["metrics"]["acc_5shot"]["value"]

    trained = cell(["method=simclr", "train.epochs=20", "train.batch_size=64"])
    reference = cell(["method=random_init"])
    assert trained > reference + 0.025, (trained, reference)
    assert np.isfinite(trained)


def test_training_loss_is_the_released_sum_of_both_directions():
    """The step's loss is ``add_contrastive_loss``'s ``loss_a + loss_b`` on the head outputs of the two
    views: its scale sets the step of LARS's non-adapted parameters (BatchNorm, biases)."""
    views = [torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i in range(2)]

    class Views:
        def view(self, policy):
            return views.pop(0)

    torch.manual_seed(0)
    method = SimCLR(make_config(SimCLR, {"tau": 0.5}), _backbone(), _info()).double()
    x = torch.cat(views)
    expected = ref_add_contrastive_loss(method.proj(method.backbone(x)), temperature=0.5)
    torch.testing.assert_close(method.training_step(Views(), None), expected)
