"""Hyp-ViT (Ermolov et al., CVPR 2022) and its sphere control: loss, head, plan, optimiser.

References used here:
* a re-typed copy of the released loss (github.com/htdt/hyp_metric, ``train.py`` ``contrastive_loss``
  and the ordered-pair loop of its training step; ``hyptorch/pmath.py`` ``dist_matrix`` with
  ``_mobius_addition_batch`` and the clamped ``artanh``), with ``.cuda()`` dropped;
* a brute force in plain Python floats of the loss formula on points of one line of the ball,
  where the distance has the closed form ``2/√c·|artanh(√c x) − artanh(√c y)|``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.errors import ConfigError
from harness.method import Batch, TrainInfo
from harness.plugins.methods._balanced import class_balanced_batches
from harness.plugins.methods.hyp_vit import (
    HypViT,
    HypViTSphere,
    cosine_distance,
    freeze_patch_embedding,
    pairwise_cross_entropy,
)
from harness.geometry import pairwise_dist


# --- re-typed released code (github.com/htdt/hyp_metric) ------------------------------------------------
class _Artanh(torch.autograd.Function):  # hyptorch/pmath.py Artanh
    @staticmethod
    def forward(ctx, x):
        x = x.clamp(-1 + 1e-5, 1 - 1e-5)
        ctx.save_for_backward(x)
        return (torch.log_(1 + x).sub_(torch.log_(1 - x))).mul_(0.5)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output / (1 - x**2)


def _mobius_addition_batch(x, y, c):  # hyptorch/pmath.py
    xy = torch.einsum("ij,kj->ik", (x, y))
    x2 = x.pow(2).sum(-1, keepdim=True)
    y2 = y.pow(2).sum(-1, keepdim=True)
    num = 1 + 2 * c * xy + c * y2.permute(1, 0)
    num = num.unsqueeze(2) * x.unsqueeze(1)
    num = num + (1 - c * x2).unsqueeze(2) * y
    denom = 1 + 2 * c * xy + c**2 * x2 * y2.permute(1, 0)
    return num / (denom.unsqueeze(2) + 1e-5)


def _dist_matrix(x, y, c=1.0):  # hyptorch/pmath.py
    c = torch.as_tensor(c).type_as(x)
    sqrt_c = c**0.5
    return 2 / sqrt_c * _Artanh.apply(sqrt_c * torch.norm(_mobius_addition_batch(-x, y, c=c), dim=-1))


def _released_contrastive_loss(x0, x1, tau, hyp_c):  # train.py contrastive_loss (stats dropped)
    if hyp_c == 0:
        dist_f = lambda x, y: x @ y.t()  # noqa: E731
    else:
        dist_f = lambda x, y: -_dist_matrix(x, y, c=hyp_c)  # noqa: E731
    bsize = x0.shape[0]
    target = torch.arange(bsize)
    eye_mask = torch.eye(bsize) * 1e9
    logits00 = dist_f(x0, x0) / tau - eye_mask
    logits01 = dist_f(x0, x1) / tau
    logits = torch.cat([logits01, logits00], dim=1)
    logits -= logits.max(1, keepdim=True)[0].detach()
    return F.cross_entropy(logits, target)


def _released_step_loss(z, tau, hyp_c):  # train.py: z (classes, num_samples, emb); sum over i != j
    loss = 0
    for i in range(z.shape[1]):
        for j in range(z.shape[1]):
            if i != j:
                loss += _released_contrastive_loss(z[:, i], z[:, j], tau, hyp_c)
    return loss


# --- brute force of the formula ------------------------------------------------------------------------
def _brute_force(dist, k, m, tau):
    """sum over i != j of mean over a of -log(e^{-D(ai,aj)/τ} / (Σ_b e^{-D(ai,bj)/τ} + Σ_{b≠a} e^{-D(ai,bi)/τ}))."""
    total = 0.0
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            terms = []
            for a in range(k):
                den = sum(math.exp(-dist(a, i, b, j) / tau) for b in range(k))
                den += sum(math.exp(-dist(a, i, b, i) / tau) for b in range(k) if b != a)
                terms.append(-math.log(math.exp(-dist(a, i, a, j) / tau) / den))
            total += sum(terms) / k
    return total


def _poincare(c):
    return lambda z: pairwise_dist(z, c=c)


def test_loss_on_points_of_one_line_equals_the_formula_with_closed_form_distances():
    c, tau = 0.1, 0.2
    # 2 classes x 2 samples on one diameter: u = artanh(√c x), so d = 2/√c·|Δu|
    u = {(0, 0): -0.9, (0, 1): -0.4, (1, 0): 0.3, (1, 1): 1.1}
    z = torch.tensor([[[math.tanh(u[a, i]) / math.sqrt(c), 0.0] for i in range(2)] for a in range(2)],
                     dtype=torch.float64)

    def dist(a, i, b, j):
        return 2 / math.sqrt(c) * abs(u[a, i] - u[b, j])

    ours = pairwise_cross_entropy(z, _poincare(c), tau=tau)
    assert float(ours) == pytest.approx(_brute_force(dist, 2, 2, tau), rel=1e-10)


def test_loss_matches_the_released_code_on_a_hand_made_batch_and_on_random_batches():
    c, tau = 0.1, 0.2
    # 2 classes x 2 samples (the released "views" i, j are the sample slots), points inside the ball.
    # hyptorch adds 1e-5 to the Möbius denominator: the two agree to ~1e-5 relative, not to rounding.
    z = torch.tensor([[[0.5, -0.2, 0.1], [-0.3, 0.4, 0.3]], [[0.2, 0.3, -0.1], [-0.1, -0.4, 0.5]]],
                     dtype=torch.float64)
    ref = _released_step_loss(z, tau, c)
    assert float(ref) > 1.0  # classes not yet separated: every term counts
    assert float(pairwise_cross_entropy(z, _poincare(c), tau=tau)) == pytest.approx(float(ref), rel=1e-4)
    g = torch.Generator().manual_seed(0)
    for k, m in ((5, 3), (7, 9)):
        x = torch.randn(k, m, 16, generator=g, dtype=torch.float64)
        zb = HypViT(HypViT.Config(dim=16), torch.nn.Identity(), _info(16)).to_ball(x)  # clip 2.3 + exp map
        assert float(pairwise_cross_entropy(zb, _poincare(c), tau=tau)) == pytest.approx(
            float(_released_step_loss(zb, tau, c)), rel=1e-4)


def test_sphere_mode_is_the_same_formula_with_the_cosine_distance_and_matches_the_released_sphere_loss():
    tau = 0.1
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(4, 3, 8, generator=g, dtype=torch.float64), dim=-1)
    ours = pairwise_cross_entropy(z, cosine_distance, tau=tau)
    flat = z.reshape(12, 8)

    def dist(a, i, b, j):
        return 1 - float(flat[a * 3 + i] @ flat[b * 3 + j])

    assert float(ours) == pytest.approx(_brute_force(dist, 4, 3, tau), rel=1e-10)
    assert float(ours) == pytest.approx(float(_released_step_loss(z, tau, 0)), rel=1e-10)  # logits z·z'/τ


def _info(feat_dim, **kw):
    return TrainInfo(feat_dim=feat_dim, num_classes=4, num_train=16, label_field="label", epochs=1, **kw)


def _batch(images, labels):
    return Batch(images=images, labels=labels, viewer=lambda x, policy: x)


def test_head_clips_then_maps_to_the_ball_and_the_sphere_head_normalises():
    method = HypViT(HypViT.Config(dim=4), torch.nn.Identity(), _info(6))
    x = torch.randn(5, 6) * 100
    z = method.head(x)
    proj = method.proj(x)
    # ‖x‖ >> r: the clipped feature has norm 2.3 and expmap0 gives tanh(√c·2.3)/√c
    torch.testing.assert_close(z.norm(dim=-1), torch.full((5,), math.tanh(0.1**0.5 * 2.3) / 0.1**0.5))
    assert F.cosine_similarity(z, proj).min() > 1 - 1e-6  # radial map: direction kept
    assert torch.allclose(method.proj.weight @ method.proj.weight.T, torch.eye(4), atol=1e-5)  # orthogonal init
    sphere = HypViTSphere(HypViTSphere.Config(dim=4), torch.nn.Identity(), _info(6))
    torch.testing.assert_close(sphere.head(x).norm(dim=-1), torch.ones(5))
    assert sphere.geometry.name == "euclidean" and method.geometry.name == "poincare"


def test_gradients_are_finite_also_for_coinciding_and_clipped_embeddings():
    torch.manual_seed(0)
    for cls in (HypViT, HypViTSphere):
        method = cls(cls.Config(dim=8), torch.nn.Identity(), _info(8))
        x = torch.randn(6, 8, dtype=torch.float64) * torch.tensor([1, 1, 1, 1, 1e3, 1e3], dtype=torch.float64)[:, None]
        x[1] = x[0]  # two samples of class 0 coincide: distance 0
        x.requires_grad_(True)
        method = method.double()
        loss = method.loss(method.head(x), _batch(x, torch.tensor([0, 0, 1, 1, 2, 2])))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in method.parameters())


def test_a_batch_not_in_class_order_is_refused_with_the_reason():
    method = HypViT(HypViT.Config(dim=4), torch.nn.Identity(), _info(4))
    x = torch.randn(4, 4)
    with pytest.raises(ValueError, match="K distinct classes x m=2"):
        method.loss(method.head(x), _batch(x, torch.tensor([0, 1, 0, 1])))
    with pytest.raises(ValueError, match="K >= 2 classes"):
        method.loss(method.head(x[:2]), _batch(x[:2], torch.tensor([0, 0])))


def test_class_balanced_plan_draws_k_distinct_classes_of_m_distinct_images():
    rng = np.random.default_rng(0)
    sizes = {0: 12, 1: 9, 2: 30, 3: 4, 4: 11, 5: 10, 6: 15}  # class 3 has fewer than m images
    labels = rng.permutation(np.concatenate([np.full(n, c) for c, n in sizes.items()]))
    m, batch_size = 5, 16  # K = 3 classes per batch, 15 images
    plan = class_balanced_batches(labels, batch_size, m, np.random.default_rng(1))
    assert len(plan) == len(labels) // 15
    seen = np.zeros(len(sizes), int)
    for batch in plan:
        rows = labels[batch].reshape(3, m)
        assert (rows == rows[:, :1]).all() and len(set(rows[:, 0])) == 3  # one class per row, all distinct
        for row, idx in zip(rows[:, 0], batch.reshape(3, m)):
            if sizes[row] >= m:
                assert len(set(idx)) == m  # distinct images
        seen[rows[:, 0]] += 1
    assert seen.max() - seen.min() <= 1  # every class once before any class twice
    # fewer classes than batch_size // m: every batch holds all classes
    few = np.repeat([0, 1], 10)
    assert all(len(b) == 4 for b in class_balanced_batches(few, 64, 2, rng))
    with pytest.raises(ConfigError, match="raise train.batch_size to >= 10"):
        class_balanced_batches(labels, 9, 5, rng)


@pytest.mark.parametrize("cls, overrides, message", [
    (HypViT, {"c": 0.0}, "c must be > 0.*method=hyp_vit_sphere"),
    (HypViTSphere, {"c": 0.1}, "c must be 0.*method=hyp_vit"),
    (HypViT, {"tau": 0.0}, "tau"),
    (HypViT, {"m": 1}, "m \\(images per class"),
    (HypViT, {"clip_r": -1.0}, "clip_r"),
    (HypViT, {"lr": 0.0}, "lr must be > 0"),
    (HypViT, {"grad_clip": -3.0}, "grad_clip"),
    (HypViT, {"dim": 0}, "dim"),
])
def test_invalid_configs_get_clear_errors(cls, overrides, message):
    with pytest.raises(ConfigError, match=message):
        cls.Config(**overrides).validate()


def _tiny_vit():
    from harness.backbones import build_backbone

    torch.manual_seed(0)
    return build_backbone({"name": "vit_tiny_patch16_224", "kwargs": {"patch_size": 4, "depth": 1}},
                          in_chans=3, img_size=(16, 16))


def test_patch_embedding_stays_frozen_through_a_step_and_the_gradient_norm_is_clipped():
    backbone, dim = _tiny_vit()
    method = HypViT(HypViT.Config(dim=8, lr=1e-2), backbone, _info(dim))
    optimizer = method.configure_optimizer(None)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    patch = list(backbone.patch_embed.parameters())
    assert patch and not any(id(p) in in_optimizer for p in patch)
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    images = torch.randn(6, 3, 16, 16)
    loss = method.loss(method.embed(images), _batch(images, labels)) * 1e4  # a huge gradient
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for name, p in method.named_parameters():
        if name.startswith("backbone.patch_embed"):
            assert torch.equal(p, before[name]), name
    assert not torch.equal(method.backbone.cls_token, before["backbone.cls_token"])
    assert not torch.equal(method.proj.weight, before["proj.weight"])
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    assert float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) == \
        pytest.approx(3.0, rel=1e-4)  # clipped in place before the step


def test_a_cnn_has_no_patch_embedding_to_freeze():
    from harness.backbones import build_backbone

    backbone, dim = build_backbone({"name": "conv4_32"}, in_chans=3, img_size=(16, 16))
    assert freeze_patch_embedding(backbone) == 0
    method = HypViT(HypViT.Config(), backbone, _info(dim))
    assert method.frozen_params == 0 and all(p.requires_grad for p in method.parameters())


def test_half_precision_embeddings_are_computed_in_float32():
    g = torch.Generator().manual_seed(2)
    z = HypViT(HypViT.Config(dim=8), torch.nn.Identity(), _info(8)).to_ball(torch.randn(3, 2, 8, generator=g))
    zb = z.bfloat16()
    reference = pairwise_cross_entropy(zb.float(), _poincare(0.1), tau=0.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = pairwise_cross_entropy(zb, _poincare(0.1), tau=0.2)
    assert loss.dtype == torch.float32 and float(loss) == float(reference)  # not bf16 logits
