"""HCL (plugins/methods/hcl.py): hyperbolic and Euclidean losses, crops, queues, configs, label-freeness."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError, Incompatible
from harness.geometry import expmap0
from harness.method import Batch, TrainInfo, TrainState
from harness.plugins.methods.hcl import (
    HCL,
    HCLEuclideanOnly,
    box_crops,
    draw_scene_members,
    hyperbolic_contrastive_loss,
    hyperbolic_logits,
    sample_crop_boxes,
    symmetric_moco_loss,
)
from harness.registry import make_config


# --- re-typed reference: github.com/shlokk/HCL, HCL/moco/hyptorch/pmath.py (_mobius_add, Artanh, _dist)
# and HCL/moco/builder_hcl.py (MoCo.forward: the loss part after the encoders; queues stored (dim, K)).
def ref_mobius_add(x, y, c):
    x2 = x.pow(2).sum(dim=-1, keepdim=True)
    y2 = y.pow(2).sum(dim=-1, keepdim=True)
    xy = (x * y).sum(dim=-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    denom = 1 + 2 * c * xy + c ** 2 * x2 * y2
    return num / (denom + 1e-5)


def ref_artanh(x):
    x = x.clamp(-1 + 1e-5, 1 - 1e-5)
    return (torch.log(1 + x) - torch.log(1 - x)) * 0.5


def ref_dist(x, y, c, keepdim=False):
    sqrt_c = c ** 0.5
    dist_c = ref_artanh(sqrt_c * ref_mobius_add(-x, y, c).norm(dim=-1, p=2, keepdim=keepdim))
    return dist_c * 2 / sqrt_c


def ref_builder_hcl_loss(qp_normalized, qc_normalized, kp_normalized, kc_normalized, queue_p, queue_c,
                         qc_proj, kp_proj, queue_hyp_p, T, c, theta_moco, theta_hyperbolic):
    criterion = nn.CrossEntropyLoss()
    l_pos_e = torch.einsum('nc,nc->n', [qp_normalized, kc_normalized]).unsqueeze(-1)
    l_neg_e = torch.einsum('nc,ck->nk', [qp_normalized, queue_c.clone().detach()])
    l_pos_e2 = torch.einsum('nc,nc->n', [qc_normalized, kp_normalized]).unsqueeze(-1)
    l_neg_e2 = torch.einsum('nc,ck->nk', [qc_normalized, queue_p.clone().detach()])
    logits_e = torch.cat([torch.cat([l_pos_e, l_neg_e], dim=1), torch.cat([l_pos_e2, l_neg_e2], dim=1)], 0)
    logits_e /= T
    labels_e = torch.zeros(logits_e.shape[0], dtype=torch.long)
    l_pos_h = -ref_dist(qc_proj, kp_proj, c, keepdim=True)
    l_neg_h = -ref_dist(qc_proj.unsqueeze(1), queue_hyp_p.clone().detach().T.unsqueeze(0), c).squeeze()
    logits_h = torch.cat([l_pos_h, l_neg_h], dim=1)
    logits_h /= T
    labels_h = torch.zeros(logits_h.shape[0], dtype=torch.long)
    loss_moco = criterion(logits_e, labels_e)
    loss_hyperbolic = criterion(logits_h, labels_h)
    return theta_moco * loss_moco + theta_hyperbolic * loss_hyperbolic, loss_moco, loss_hyperbolic


def _hand_dist(x, y, c):
    """d = 2/√c artanh(√c ‖(−x) ⊕_c y‖), Möbius addition written out (Ganea et al. 2018, Eq. 2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    mx = -x
    xy, x2, y2 = mx @ y, mx @ mx, y @ y
    num = (1 + 2 * c * xy + c * y2) * mx + (1 - c * x2) * y
    den = 1 + 2 * c * xy + c * c * x2 * y2
    return 2 / math.sqrt(c) * math.atanh(math.sqrt(c) * np.linalg.norm(num / den))


def test_hyperbolic_loss_on_a_two_item_queue_by_hand():
    c, tau = 0.5, 0.2
    z_s = torch.tensor([[0.3, 0.1]], dtype=torch.float64)
    z_o = torch.tensor([[0.2, 0.4]], dtype=torch.float64)
    queue = torch.tensor([[-0.5, 0.2], [0.1, -0.9]], dtype=torch.float64)
    d = [_hand_dist(z_s[0], z_o[0], c), _hand_dist(z_s[0], queue[0], c), _hand_dist(z_s[0], queue[1], c)]
    logits = hyperbolic_logits(z_s, z_o, queue, c=c, tau=tau)
    torch.testing.assert_close(logits, -torch.tensor([d], dtype=torch.float64) / tau)
    expected = -math.log(math.exp(-d[0] / tau) / sum(math.exp(-di / tau) for di in d))
    assert hyperbolic_contrastive_loss(z_s, z_o, queue, c=c, tau=tau).item() == pytest.approx(expected, rel=1e-9)


def test_total_loss_matches_the_released_code():
    g = torch.Generator().manual_seed(0)
    n, d, k, c, tau, lam = 6, 16, 24, 0.05, 0.2, 0.1
    unit = lambda *s: F.normalize(torch.randn(*s, generator=g, dtype=torch.float64), dim=-1)  # noqa: E731
    q_p, q_c, k_p, k_c = unit(n, d), unit(n, d), unit(n, d), unit(n, d)
    queue_p, queue_c = unit(k, d), unit(k, d)
    z_s = expmap0(torch.randn(n, d, generator=g, dtype=torch.float64), c=c)
    z_o = expmap0(torch.randn(n, d, generator=g, dtype=torch.float64), c=c)
    queue_h = unit(k, d)  # the released initial queue: unit vectors (inside the ball of radius 1/√0.05)
    ref, ref_euc, ref_hyp = ref_builder_hcl_loss(q_p, q_c, k_p, k_c, queue_p.T, queue_c.T, z_s, z_o, queue_h.T,
                                                 tau, c, 1.0, lam)
    euc = symmetric_moco_loss(q_p, q_c, k_p, k_c, queue_p, queue_c, tau=tau)
    hyp = hyperbolic_contrastive_loss(z_s, z_o, queue_h, c=c, tau=tau)
    torch.testing.assert_close(euc, ref_euc)
    torch.testing.assert_close(hyp.double(), ref_hyp, rtol=1e-4, atol=1e-5)  # theirs adds 1e-5 in ⊕
    torch.testing.assert_close((euc + lam * hyp).double(), ref, rtol=1e-4, atol=1e-5)


def test_hyperbolic_loss_gradients_are_finite_near_the_boundary():
    c = 1.0
    z = expmap0(torch.randn(4, 8) * 20, c=c).requires_grad_(True)  # ‖z‖ at the projection limit
    keys = expmap0(torch.randn(4, 8) * 20, c=c)
    queue = expmap0(torch.randn(10, 8), c=c)
    hyperbolic_contrastive_loss(z, keys, queue, c=c, tau=0.2).backward()
    assert torch.isfinite(z.grad).all()


def _random_boxes(rng, n_boxes, size=64):
    out = np.zeros((n_boxes, 5), np.float32)
    for j in range(n_boxes):
        x1, y1 = rng.uniform(0, size - 4, 2)
        out[j, :4] = [x1, y1, rng.uniform(x1 + 2, size), rng.uniform(y1 + 2, size)]
    return out


def test_scene_crops_contain_their_object_crops():
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    boxes = [_random_boxes(rng, n) for n in rng.integers(2, 9, size=300)]
    obj, base, scene = (b.numpy() for b in sample_crop_boxes(boxes, (64, 64), gen, context=0.4))
    eps = 1e-4
    for box in (base, scene):  # base and scene boxes hold the object box
        assert (box[:, :2] <= obj[:, :2] + eps).all() and (box[:, 2:] >= obj[:, 2:] - eps).all()
    assert (base[:, :2] >= -eps).all() and (base[:, 2:] <= 64 + eps).all()  # inside the image
    for i, b in enumerate(boxes):
        assert np.abs(b[:, :4] - obj[i]).max(1).min() < eps  # the object is one of the image's boxes
        inside = ((b[:, :2] >= scene[i, :2] - eps) & (b[:, 2:4] <= scene[i, 2:] + eps)).all(1)
        assert inside.sum() >= 2  # the scene is the union of two or more boxes:
        held = b[inside, :4]  # its sides are sides of boxes it holds, not a random enlargement
        np.testing.assert_allclose(scene[i], np.concatenate([held[:, :2].min(0), held[:, 2:].max(0)]), atol=eps)


def loader_distribution(n_box):
    """Exact P(object box, scene members) of the released loader (github.com/shlokk/HCL,
    openimages_dataset_hierarchy_diff_crop_gtbbox.py, OpenImages.__getitem__), by enumerating its draws:
    parent_box_id = randint(0, n); child_box_num = randint(2, max(min(n, 6), 3));
    child_box_ids = randperm(n)[:child_box_num], plus parent_box_id if missing."""
    from itertools import permutations

    top = max(min(n_box, 6), 3)
    perms = list(permutations(range(n_box)))
    out = {}
    for parent in range(n_box):
        for num in range(2, top):
            for perm in perms:
                key = (parent, frozenset(perm[:num]) | {parent})
                out[key] = out.get(key, 0.0) + 1.0 / (n_box * (top - 2) * len(perms))
    return out


@pytest.mark.parametrize("n_box", [2, 3, 4, 5, 7])
def test_object_and_scene_members_follow_the_released_loader(n_box):
    draws = 40_000
    obj, member = draw_scene_members(np.full(draws, n_box), torch.Generator().manual_seed(n_box))
    member = member.reshape(draws, n_box)
    seen = {}
    for p, row in zip(obj.tolist(), member):
        key = (p, frozenset(np.flatnonzero(row).tolist()))
        seen[key] = seen.get(key, 0) + 1
    exact = loader_distribution(n_box)
    assert set(seen) <= set(exact)  # nothing the loader could not draw
    for key, prob in exact.items():
        sigma = math.sqrt(prob * (1 - prob) / draws)
        assert abs(seen.get(key, 0) / draws - prob) < 5 * sigma + 1e-9, (key, prob)


def test_base_box_is_the_object_when_no_context_is_needed():
    rng = np.random.default_rng(2)
    boxes = [_random_boxes(rng, n) for n in rng.integers(2, 10, size=50)]
    obj, base, scene = sample_crop_boxes(boxes, (64, 64), torch.Generator().manual_seed(7), context=0.001)
    torch.testing.assert_close(base, obj)


def test_small_objects_get_context_and_large_ones_do_not():
    gen = torch.Generator().manual_seed(0)
    small = np.array([[30, 30, 34, 34, 0], [0, 0, 60, 60, 1]], np.float32)
    obj, base, _ = sample_crop_boxes([small] * 300, (64, 64), gen, context=0.4)
    side = 0.4 * 64
    grew = (base[:, 2:] - base[:, :2]) - (obj[:, 2:] - obj[:, :2])
    small_rows = (obj[:, 2] - obj[:, 0]) == 4
    assert (grew[small_rows] > 0).any() and (grew[small_rows] <= 2 * (side - 4) + 1e-4).all()
    assert (grew[~small_rows] == 0).all()  # 60 × 60 ≥ S²: the object box as it is


def test_boxes_under_the_released_56_px_of_640_are_never_drawn():
    """The loader skips boxes of area < 56 × 56 px (on a 640-px image): at 64 px the cut is 5.6 px a side
    (area 31.36), so a 5 × 6 box (30) is dropped and a 6 × 6 box (36) kept."""
    from harness.plugins.methods.hcl import _eligible, usable_boxes

    min_box = 56 / 640
    tiny = [4, 4, 9, 10, 0]  # 5 × 6
    image = np.array([tiny, [20, 20, 26, 26, 1], [30, 30, 60, 60, 2]], np.float32)
    assert usable_boxes(image, min_box * 64)[:, 4].tolist() == [1, 2]
    assert usable_boxes(image)[:, 4].tolist() == [0, 1, 2]  # 0: every box of positive size
    obj, _, scene = sample_crop_boxes([image] * 200, (64, 64), torch.Generator().manual_seed(0), context=0.4,
                                      min_box=min_box)
    assert (obj[:, 0] >= 20).all() and (scene[:, :2] >= 20).all()  # the tiny box is never the object nor in a scene
    boxes = np.empty(2, dtype=object)
    boxes[0], boxes[1] = image, image[[0, 2]]  # the second image keeps one usable box: not eligible
    info = TrainInfo(feat_dim=4, num_classes=0, num_train=2, label_field=None, epochs=1,
                     extra_labels={"boxes": boxes}, image_size=(64, 64))
    assert _eligible(info, "hcl", min_box).tolist() == [0]
    assert _eligible(info, "hcl", 0.0).tolist() == [0, 1]


def test_box_crops_cut_the_right_pixels():
    raw = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    raw[0, :, 2:6, 8:14] = 200  # a 6 × 4 block at x 8..14, y 2..6
    raw[1, 1] = 50
    crops = box_crops(raw, torch.tensor([[8.0, 2.0, 14.0, 6.0], [0.0, 0.0, 16.0, 16.0]]))
    assert crops.dtype == torch.uint8 and crops.shape == raw.shape
    assert (crops[0, :, 2:14, 2:14] == 200).all()  # ROI-align blends the outermost samples with the outside
    assert (crops[1] == raw[1]).all()


def _info(boxes, feat_dim=8):
    return TrainInfo(feat_dim=feat_dim, num_classes=0, num_train=len(boxes), label_field=None, epochs=1,
                     extra_labels={"boxes": boxes}, image_size=(16, 16))


def _boxes(n, rng):
    out = np.empty(n, dtype=object)
    for i in range(n):
        out[i] = _random_boxes(rng, 2 + i % 3, size=16)
    return out


def _backbone(feat_dim=8):
    return nn.Sequential(nn.Conv2d(3, feat_dim, 3, padding=1), nn.BatchNorm2d(feat_dim), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _state():
    return TrainState(epoch=0, epochs=1, step=0, device=torch.device("cpu"), rng=np.random.default_rng(0),
                      embed_train=None, labels=None, generator=torch.Generator().manual_seed(0))


def test_step_fills_all_three_queues_and_gradients_are_finite():
    torch.manual_seed(0)
    boxes = _boxes(8, np.random.default_rng(0))
    cfg = make_config(HCL, {"queue_size": 8, "bn_split_size": 4, "lam": 1.0})
    method = HCL(cfg, _backbone(), _info(boxes))
    raw = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    batch = Batch(raw=raw, annotations={"boxes": list(boxes)}, viewer=lambda x, policy: x.float() / 255)
    loss = method.training_step(batch, _state())
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in [*method.backbone.parameters(), *method.proj.parameters()]]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in method.key_encoder.parameters())
    pending = {id(q): k for q, k in method._pending}
    method.after_step(_state())
    for queue in (method.queue_p, method.queue_c, method.queue_hyp):
        torch.testing.assert_close(queue.keys, pending[id(queue)])
    assert (method.queue_hyp.keys.norm(dim=1) < 1 / math.sqrt(cfg.c)).all()  # object keys on the ball


def test_euclidean_only_control_has_no_hyperbolic_branch():
    boxes = _boxes(8, np.random.default_rng(0))
    method = HCLEuclideanOnly(make_config(HCLEuclideanOnly, {"queue_size": 8}), _backbone(), _info(boxes))
    raw = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    batch = Batch(raw=raw, annotations={"boxes": list(boxes)}, viewer=lambda x, policy: x.float() / 255)
    method.training_step(batch, _state())
    assert not hasattr(method, "queue_hyp") and len(method._pending) == 2


def test_plan_skips_images_with_fewer_than_two_boxes_and_reads_no_labels():
    boxes = np.empty(6, dtype=object)
    for i, n in enumerate([1, 2, 0, 3, 1, 2]):
        boxes[i] = np.tile(np.array([[0, 0, 4, 4, 0]], np.float32), (n, 1))
    method = HCL(make_config(HCL, {"queue_size": 3}), _backbone(), _info(boxes))
    plan = [b for b in method.batch_indices(None, 3, np.random.default_rng(0))]
    assert sorted(np.concatenate(plan).tolist()) == [1, 3, 5]
    again = [b for b in method.batch_indices(np.array([9, 9, 9, 9, 9, 9]), 3, np.random.default_rng(0))]
    assert [b.tolist() for b in plan] == [b.tolist() for b in again]


def test_data_without_multi_object_images_is_incompatible():
    boxes = np.empty(3, dtype=object)
    for i in range(3):
        boxes[i] = np.array([[0, 0, 4, 4, 0]], np.float32)
    with pytest.raises(Incompatible, match="no training image has two or more boxes"):
        HCL(make_config(HCL, {}), _backbone(), _info(boxes))


@pytest.mark.parametrize("cls, key, value, message", [
    (HCL, "lam", 0.0, "use method=hcl_euclidean_only"),
    (HCLEuclideanOnly, "lam", 0.1, "lam must be 0 .* use method=hcl for λ > 0"),
    (HCL, "c", 0.0, "hcl: c .* must be > 0"),
    (HCL, "context", 1.5, "hcl: context .* must be in \\(0, 1\\]"),
    (HCL, "min_box", 1.0, "hcl: min_box .* must be in \\[0, 1\\)"),
    (HCL, "tau", -0.2, "hcl: tau .* must be > 0"),
    (HCLEuclideanOnly, "queue_size", 0, "hcl_euclidean_only: queue_size must be >= 1"),
])
def test_invalid_configs_get_clear_errors(cls, key, value, message):
    cfg = make_config(cls, {key: value})
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_projection_embedding_is_on_the_ball_and_measured_there():
    boxes = _boxes(4, np.random.default_rng(0))
    method = HCL(make_config(HCL, {"embedding": "projection", "queue_size": 4}), _backbone(), _info(boxes)).eval()
    emb = method.embed(torch.randn(5, 3, 16, 16) * 50)
    assert method.geometry.name == "poincare" and method.geometry.c == pytest.approx(0.05)
    assert (emb.norm(dim=1) < 1 / math.sqrt(0.05)).all()


def _tiny_scenes():
    from harness.registry import create

    return create("dataset", {"name": "scenes", "n_images": 32, "image_size": 32, "min_objects": 2,
                              "max_objects": 3, "max_radius": 0.15})


def test_hcl_reads_no_labels(tmp_path, monkeypatch):
    """Labels replaced by garbage give bit-identical weights: HCL never reads them."""
    from harness.config import TrainConfig
    from harness.engine import Viewer, train

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    ds = _tiny_scenes()
    idx = ds.split("train")
    extra = {"boxes": ds.annotations["boxes"][idx]}
    states, before = [], None
    for labels in (ds.annotations["label"][idx], np.random.default_rng(5).integers(0, 1000, len(idx))):
        torch.manual_seed(0)
        from harness.backbones import build_backbone

        backbone, dim = build_backbone({"name": "conv4_32", "pretrained": None, "img_size": None, "kwargs": {}},
                                       in_chans=3, img_size=(32, 32))
        info = TrainInfo(feat_dim=dim, num_classes=0, num_train=len(idx), label_field=None, epochs=1,
                         extra_labels=extra, image_size=tuple(ds.info.image_size))
        method = HCL(make_config(HCL, {"queue_size": 16}), backbone, info)
        before = before or {k: v.clone() for k, v in method.state_dict().items()}
        viewer = Viewer((0.5,) * 3, (0.5,) * 3, (32, 32), torch.device("cpu"), torch.Generator().manual_seed(0))
        train(method, dataset=ds, indices=idx, labels=labels, extra=extra,
              cfg=TrainConfig(epochs=1, batch_size=16), viewer=viewer, device=torch.device("cpu"), seed=0,
              progress=False)
        states.append(method.state_dict())
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    assert not torch.equal(states[0]["proj.2.weight"], before["proj.2.weight"])  # it did train


TINY_SCENES = "train_dataset={name:scenes,n_images:64,image_size:32,min_objects:2,max_objects:3,max_radius:0.15}"
TINY_HIERARCHY = ["dataset.n_coarse=3", "dataset.fine_per_coarse=4", "dataset.novel_per_coarse=2",
                  "dataset.images_per_class=12", "dataset.image_size=16"]


def test_pretrained_on_scenes_evaluated_on_another_dataset_end_to_end(tmp_path):
    """``train_dataset=scenes`` (32 px, RGB) with retrieval on 16-px synthetic_hierarchy: the images are
    conformed to the model's input and the model is trained once for both tasks (label-free)."""
    from harness.run import run_cell
    from harness.sweep import compose

    common = ["method=hcl", TINY_SCENES, *TINY_HIERARCHY, "train.epochs=1", "train.batch_size=16",
              "method.queue_size=32", f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}"]
    first = run_cell(compose([*common, "task=retrieval"]), progress=False)
    assert first["status"] == "ok", first["reason"]
    assert first["cell"]["train_dataset"] == "scenes" and first["training"]["steps"] >= 2
    assert 0 <= first["metrics"]["recall@1"]["value"] <= 1
    second = run_cell(compose([*common, "task=few_shot", "task.episodes=20", "task.n_query=5"]), progress=False)
    assert second["status"] == "ok", second["reason"]
    assert second["model_key"] == first["model_key"] and second["timings"]["train_cached"]
