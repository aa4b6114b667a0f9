"""Detection transfer: the detector on a timm backbone, batches, COCO conversion, the task's plumbing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
from torch import nn

from harness.errors import ConfigError, Incompatible
from harness.plugins.datasets.scenes import SHAPES, Scenes, mask_boxes
from harness.tasks._detector import build_detector, freeze_stages
from harness.tasks.detection import (Detection, DetectionDataError, check_boxes, coco_box_ap, coco_segm_ap,
                                     detection_ground_truth, detection_loss, multistep, predictions_to_coco)

SMOKE = dict(min_size=64, max_size=64, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150,
             rpn_pre_nms_top_n_test=150, rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128,
             box_batch_size_per_image=64, sampling_ratio=1, box_head_dim=256, fpn_channels=64)


@pytest.fixture(scope="module")
def scenes():
    return Scenes(Scenes.Config(n_images=40, image_size=64))


def _conv4():
    import harness.plugins.backbones.conv4  # noqa: F401 - registers conv4 in timm

    return timm.create_model("conv4", num_classes=0)


def _backbone(name):
    return _conv4() if name == "conv4" else timm.create_model(name, num_classes=0)


def _batch(task, ds):
    return task.batches(ds, ds.split("train"))(0, np.random.default_rng([0, 0]))


# -- the detector on the backbone's maps ----------------------------------------------------------------------
@pytest.mark.parametrize("name, strides, names", [("conv4", [4, 8, 16], ["stages.1", "stages.2", "stages.3"]),
                                                   ("resnet18", [8, 16, 32], ["layer2", "layer3", "layer4"])])
def test_pyramid_reads_the_backbones_maps(name, strides, names):
    bb = _backbone(name)
    model = build_detector(bb, num_classes=2, mean=(0.5,) * 3, std=(0.5,) * 3, feature_indices=3, **SMOKE)
    pyramid = model.backbone
    body = pyramid.body
    assert body.strides == strides and body.backbone is bb  # the same module: the trained weights
    assert pyramid.strides == [*strides, 2 * strides[-1]] and pyramid.level_names == [*names, "pool"]
    assert model.rpn.anchor_generator.sizes == tuple((8 * s,) for s in pyramid.strides)
    maps = body(torch.rand(2, 3, 64, 64))
    assert list(maps) == names
    for (k, m), c, s in zip(maps.items(), body.channels, body.strides):
        assert m.shape == (2, c, 64 // s, 64 // s), k


@pytest.mark.parametrize("name, detector", [("conv4", "faster_rcnn"), ("resnet18", "faster_rcnn"),
                                            ("conv4", "mask_rcnn")])
def test_train_step_has_finite_losses_reaching_the_backbone(scenes, name, detector):
    task = Detection(Detection.Config(detector=detector, min_size=[64], max_size=64, norm="bn", fpn_channels=64))
    model = task.build_model(_backbone(name), len(SHAPES), (0.5,) * 3, (0.25,) * 3)
    model.train()
    losses = model(*_as_model_input(_batch(task, scenes)))
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert set(losses) == expected | ({"loss_mask"} if detector == "mask_rcnn" else set())
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    first = next(p for n, p in model.backbone.body.backbone.named_parameters() if n.endswith("weight"))
    assert first.grad is not None and first.grad.abs().sum() > 0  # the backbone's own weights are trained


def _as_model_input(batch):
    return batch.images, batch.targets


@pytest.mark.parametrize("name", ["conv4", "resnet18"])
def test_predictions_are_coco_dicts_inside_the_image(scenes, name):
    torch.manual_seed(0)
    task = Detection(Detection.Config(min_size=[64], max_size=64, fpn_channels=64))
    model = task.build_model(_backbone(name), len(SHAPES), (0.5,) * 3, (0.25,) * 3)
    # an untrained detector scores near-uniform classes: let every box through so there are some
    model.roi_heads.score_thresh = 0.0
    model.eval()
    images = scenes.load_image_list(scenes.split("test")[:3])
    with torch.no_grad():
        outputs = model([x.float() / 255 for x in images])
    dets = [d for k, out in enumerate(outputs) for d in predictions_to_coco(k + 1, out)]
    assert dets
    for d in dets:
        x, y, w, h = d["bbox"]
        assert set(d) == {"image_id", "category_id", "bbox", "score"}
        assert 1 <= d["category_id"] <= len(SHAPES) and 0 <= d["score"] <= 1
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 64 + 1e-4 and y + h <= 64 + 1e-4


def test_backbone_without_multiscale_features_is_incompatible():
    class Flat(nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    with pytest.raises(Incompatible, match="forward_intermediates"):
        build_detector(Flat(), num_classes=2, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_frozen_stages_follow_detectron2_freeze_at():
    # Detectron2's FREEZE_AT = 2 on a ResNet: the stem (conv1, bn1) and res2 (layer1) are frozen, res3+ train.
    bb = timm.create_model("resnet18", num_classes=0)
    frozen = freeze_stages(bb, 2)
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert frozen and all(n.split(".")[0] in {"conv1", "bn1", "layer1"} for n in frozen)
    assert {n for n, _ in bb.named_parameters() if n.split(".")[0] in {"conv1", "bn1", "layer1"}} == set(frozen)
    assert all(n.split(".")[0] in {"layer2", "layer3", "layer4"} for n in trainable)
    with pytest.raises(ConfigError, match="frozen_stages must be in 0..5"):
        freeze_stages(timm.create_model("resnet18", num_classes=0), 6)


def test_frozen_bn_uses_fixed_statistics():
    from torchvision.ops.misc import FrozenBatchNorm2d

    bb = timm.create_model("resnet18", num_classes=0)
    bb.bn1.running_mean.uniform_(-1, 1)
    model = build_detector(bb, num_classes=2, mean=(0.5,) * 3, std=(0.5,) * 3, norm="frozen_bn", **SMOKE)
    body = model.backbone.body
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    frozen = [m for m in body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen) == 20  # resnet18: the stem's BN + 2 per block × 8 blocks + 3 downsample BNs
    x = torch.rand(2, 3, 64, 64)
    body.train()
    a = body(x)
    body.eval()
    b = body(x)
    assert all(torch.equal(a[k], b[k]) for k in a)  # no batch statistics in train mode
    bn_model = build_detector(timm.create_model("resnet18", num_classes=0), num_classes=2, mean=(0.5,) * 3,
                              std=(0.5,) * 3, norm="bn", **SMOKE)
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn_model.backbone.body.modules())


def test_smoke_settings_reach_torchvision():
    model = build_detector(timm.create_model("resnet18", num_classes=0), num_classes=3, mean=(0.5,) * 3,
                           std=(0.5,) * 3, **SMOKE)
    rpn, roi = model.rpn, model.roi_heads
    assert rpn._pre_nms_top_n == {"training": 300, "testing": 150}
    assert rpn._post_nms_top_n == {"training": 150, "testing": 100}
    assert rpn.fg_bg_sampler.batch_size_per_image == 128 and roi.fg_bg_sampler.batch_size_per_image == 64
    assert roi.box_roi_pool.sampling_ratio == 1 and roi.box_head.fc7.out_features == 256
    assert roi.box_predictor.cls_score.out_features == 4  # 3 classes + background
    # anchors: 8 × stride per level (strides 4…32 and the pooled 64 of resnet18's last 4 maps)
    assert model.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))


# -- batches and targets --------------------------------------------------------------------------------------
def test_batches_are_deterministic_and_flips_move_boxes_with_pixels(scenes):
    task = Detection(Detection.Config(detector="mask_rcnn", batch_size=4))
    batches = task.batches(scenes, scenes.split("train"))
    a, b = batches(3, np.random.default_rng([0, 3])), batches(3, np.random.default_rng([0, 3]))
    assert all(torch.equal(x, y) for x, y in zip(a.images, b.images))
    found_flip = False
    for it in range(6):
        batch = batches(it, np.random.default_rng([1, it]))
        for t in batch.targets:
            # the (possibly flipped) boxes are the tight boxes of the (possibly flipped) masks
            assert torch.equal(mask_boxes(t["masks"].bool()).float(), t["boxes"])
            assert t["labels"].min() >= 1 and t["labels"].max() <= len(SHAPES)
        rng = np.random.default_rng([1, it])
        idx = np.sort(rng.choice(scenes.split("train"), 4, replace=False))
        flips = rng.random(4) < 0.5
        for k, (i, f) in enumerate(zip(idx, flips)):
            original = scenes.load_images([i])[0].float() / 255
            assert torch.equal(batch.images[k], original.flip(-1) if f else original)
            found_flip |= bool(f)
    assert found_flip


def test_ignored_objects_are_not_trained_on(scenes):
    # a dataset whose first object of each image is flagged ignore (COCO crowd, VOC difficult)
    def targets(idx, masks=False):
        out = scenes.image_list_targets(idx, masks=masks)
        return [{**t, "ignore": np.arange(len(t["boxes"])) == 0} for t in out]

    flagged = SimpleNamespace(**{k: getattr(scenes, k) for k in ("name", "object_names", "load_image_list",
                                                                  "annotations")}, image_list_targets=targets)
    task = Detection(Detection.Config(detector="mask_rcnn", batch_size=4, flip=False))
    plain, ignored = task.batches(scenes, scenes.split("train")), task.batches(flagged, scenes.split("train"))
    a, b = plain(0, np.random.default_rng(0)), ignored(0, np.random.default_rng(0))
    for full, kept in zip(a.targets, b.targets):
        assert torch.equal(kept["boxes"], full["boxes"][1:]) and torch.equal(kept["labels"], full["labels"][1:])
        assert torch.equal(kept["masks"], full["masks"][1:])


def test_a_detection_on_an_ignored_object_is_neither_a_hit_nor_a_false_positive():
    boxes = np.array([[10, 10, 30, 30, 0], [50, 50, 90, 90, 0]], np.float32)
    area = np.array([400.0, 1600.0])

    def gt(ignore):
        return detection_ground_truth([1], [(100, 100)], [{"boxes": boxes, "area": area, "ignore": ignore}], ["a"])

    def det(box, score):
        return {"image_id": 1, "category_id": 1, "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                "score": score}

    on_ignored_first = [det(boxes[1], 0.9), det(boxes[0], 0.8)]
    assert gt([False, True])["annotations"][1]["iscrowd"] == 1
    assert coco_box_ap(gt([False, True]), on_ignored_first)["AP"] == 1.0
    assert coco_box_ap(gt([False, True]), [det(boxes[0], 0.8)])["AP"] == 1.0  # missing it is no miss either
    # the object dropped instead (the old treatment): the same detection is a false positive ranked first
    dropped = detection_ground_truth([1], [(100, 100)], [{"boxes": boxes[:1], "area": area[:1]}], ["a"])
    assert coco_box_ap(dropped, on_ignored_first)["AP"] == pytest.approx(0.5, abs=1e-12)


def test_check_boxes_errors_and_clipping():
    ok = check_boxes(np.array([[-0.5, 0, 10, 64.5, 2]]), (64, 64), 3, "image 0")
    assert ok.tolist() == [[0, 0, 10, 64, 2]]
    with pytest.raises(DetectionDataError, match="image 5: box.*outside the 64×64 image"):
        check_boxes(np.array([[0, 0, 70, 10, 0]]), (64, 64), 3, "image 5")
    with pytest.raises(DetectionDataError, match=r"class id\(s\) \[3.0\] outside the dataset's 3 box classes"):
        check_boxes(np.array([[0, 0, 5, 5, 3]]), (64, 64), 3, "image 0")
    with pytest.raises(DetectionDataError, match="zero width or height"):
        check_boxes(np.array([[5, 0, 5, 5, 0]]), (64, 64), 3, "image 0")


def test_bad_training_data_fails_before_training(scenes):
    task = Detection(Detection.Config(batch_size=4))
    broken = SimpleNamespace(**{k: getattr(scenes, k) for k in ("name", "object_names", "load_image_list",
                                                                 "image_list_targets")})
    boxes = scenes.annotations["boxes"].copy()
    boxes[int(scenes.split("train")[1])] = np.array([[1, 1, 9, 9, 11]], np.float32)
    broken.annotations = {**scenes.annotations, "boxes": boxes}
    with pytest.raises(DetectionDataError, match=r"class id\(s\) \[11.0\] outside"):
        task.batches(broken, scenes.split("train"))
    with pytest.raises(ConfigError, match="fewer than batch_size=64"):
        Detection(Detection.Config(batch_size=64)).batches(scenes, scenes.split("train"))


def test_empty_images_train_as_negatives(scenes):
    task = Detection(Detection.Config(min_size=[64], max_size=64, fpn_channels=32, batch_size=2))
    model = task.build_model(timm.create_model("test_resnet", num_classes=0), len(SHAPES), (0.5,) * 3, (0.25,) * 3)
    model.train()
    batch = _batch(task, scenes)
    batch.targets[0] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    assert torch.isfinite(detection_loss(model, batch))


def test_config_and_protocol_errors(scenes):
    with pytest.raises(ConfigError, match="task.detector must be one of"):
        Detection(Detection.Config(detector="yolo")).protocol(scenes)
    with pytest.raises(ConfigError, match="task.norm must be one of"):
        Detection(Detection.Config(norm="group")).protocol(scenes)
    with pytest.raises(ConfigError, match="lr_steps"):
        Detection(Detection.Config(lr_steps=[500])).protocol(scenes)
    p = Detection(Detection.Config()).protocol(scenes)
    assert np.array_equal(p.train, scenes.split("train")) and np.array_equal(p.eval["test"], scenes.split("test"))
    assert p.train_label == "label"
    assert Detection(Detection.Config(pretrain_label=None)).protocol(scenes).train_label is None
    with pytest.raises(Incompatible, match="pretrain_label='pid'"):
        Detection(Detection.Config(pretrain_label="pid")).protocol(scenes)
    no_boxes = SimpleNamespace(name="glyphs", provides=frozenset({"label"}))
    with pytest.raises(Incompatible, match=r"needs annotation\(s\) \['boxes'\]"):
        Detection(Detection.Config()).check(no_boxes)


def test_multistep_schedule():
    s = multistep([0.5, 0.75])
    assert [s(t) for t in (0.0, 0.49, 0.5, 0.74, 0.75, 0.99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert multistep([])(0.9) == 1.0


# -- evaluation plumbing ---------------------------------------------------------------------------------------
def test_ground_truth_matches_the_dataset_coco_export(scenes):
    idx = scenes.split("test")
    targets = scenes.image_list_targets(idx)
    gt = detection_ground_truth([int(i) + 1 for i in idx], [(64, 64)] * len(idx), targets, list(SHAPES))
    ref = scenes.to_coco("test")  # _boxes.to_coco_dict: an independent export of the same boxes
    assert [im["id"] for im in gt["images"]] == [im["id"] for im in ref["images"]]
    key = lambda a: (a["image_id"], a["category_id"], tuple(np.round(a["bbox"], 6)))  # noqa: E731
    assert sorted(map(key, gt["annotations"])) == sorted(map(key, ref["annotations"]))
    # areas are the sprites' pixel counts: inside their boxes, and most of the box for a disc
    for a in gt["annotations"]:
        assert 0 < a["area"] <= a["bbox"][2] * a["bbox"][3]


class _Oracle(nn.Module):
    """Returns the ground truth of each image (by its pixels) as detections: a perfect detector."""

    def __init__(self, scenes, masks=False):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.lookup = {scenes.load_images([i])[0].float().div(255).sum().item(): i for i in range(len(scenes))}
        self.scenes, self.masks = scenes, masks

    def forward(self, images):
        out = []
        for x in images:
            i = self.lookup[x.sum().item()]
            t = self.scenes.image_list_targets([i], masks=True)[0]
            b = torch.from_numpy(t["boxes"])
            o = {"boxes": b[:, :4], "labels": b[:, 4].long() + 1, "scores": torch.ones(len(b))}
            if self.masks:
                o["masks"] = t["masks"][:, None].float()
            out.append(o)
        return out


@pytest.mark.parametrize("detector", ["faster_rcnn", "mask_rcnn"])
def test_evaluate_scores_a_perfect_detector_one(scenes, detector):
    task = Detection(Detection.Config(detector=detector, eval_batch_size=3))
    protocol = task.protocol(scenes)
    ctx = SimpleNamespace(dataset=scenes, protocol=protocol, device=torch.device("cpu"), details={},
                          finetuned=_Oracle(scenes, masks=detector == "mask_rcnn"),
                          rng=lambda salt="": np.random.default_rng(0))
    metrics = task.evaluate(ctx)
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    expected = keys + ([f"mask_{k}" for k in keys] if detector == "mask_rcnn" else [])
    assert sorted(metrics) == sorted(expected)
    # sprites of 64² scenes are at most 25.6 px wide (radius 0.2 · 64): every object is small (< 32²),
    # so APm and APl are null with the reason, every other value is 1
    null = {f"{p}{k}" for p in ("", "mask_") for k in ("APm", "APl")} & set(expected)
    assert set(ctx.details["null_metrics"]) == null
    for k in expected:
        assert (metrics[k].value is None and metrics[k].reason if k in null else metrics[k].value == 1.0), k
        assert metrics[k].higher_is_better
    assert ctx.details["num_test_images"] == len(protocol.eval["test"])


def test_segm_ap_of_cut_masks_by_hand(scenes):
    # Each predicted mask keeps the columns right of a fraction f of its box (f from 0.1 to 0.7): its IoU with
    # the true mask is |kept| / |mask| (sprites never overlap, so it meets no other object). With distinct
    # scores, AP50 per class is that of the ranked hit list (IoU >= 0.5), computed below as COCOeval does.
    idx = scenes.split("test")[:6]
    targets = scenes.image_list_targets(idx, masks=True)
    gt = detection_ground_truth([int(i) + 1 for i in idx], [(64, 64)] * len(idx), targets, list(SHAPES), masks=True)
    rng = np.random.default_rng(0)
    dets, ious, classes, scores = [], [], [], []
    for i, t in zip(idx, targets):
        m = t["masks"].clone()
        for k, (x1, _, x2, _, _) in enumerate(t["boxes"]):
            cut = int(x1 + rng.uniform(0.1, 0.7) * (x2 - x1))
            m[k, :, :cut] = False
            ious.append((m[k].sum() / t["masks"][k].sum()).item())
        s = rng.uniform(0.1, 1.0, len(m))
        out = {"boxes": torch.from_numpy(t["boxes"][:, :4]), "labels": torch.from_numpy(t["boxes"][:, 4]).long() + 1,
               "scores": torch.from_numpy(s), "masks": m[:, None].float()}
        dets += predictions_to_coco(int(i) + 1, out, masks=True)
        classes += t["boxes"][:, 4].tolist()
        scores += s.tolist()
    ious, classes, scores = np.array(ious), np.array(classes), np.array(scores)
    assert (ious < 0.5).any() and (ious >= 0.5).any()
    assert coco_box_ap(gt, dets)["AP"] == 1.0  # the boxes are the true ones
    assert coco_segm_ap(gt, dets)["AP50"] == pytest.approx(_ap_by_hand(classes, scores, ious >= 0.5), abs=1e-12)


def _ap_by_hand(classes, scores, hit):
    """Mean over classes of the 101-point interpolated AP of detections ranked by score, one per object."""
    aps = []
    for c in np.unique(classes):
        order = np.argsort(-scores[classes == c], kind="stable")
        h = hit[classes == c][order]
        tp = np.cumsum(h)
        prec = tp / np.arange(1, len(h) + 1)
        rec = tp / len(h)
        prec = np.maximum.accumulate(prec[::-1])[::-1]  # p(r) = max over r' >= r
        at = np.searchsorted(rec, np.linspace(0, 1, 101), side="left")
        aps.append(np.mean([prec[j] if j < len(prec) else 0.0 for j in at]))
    return float(np.mean(aps))


def test_sync_bn_is_bn_in_one_process():
    torch.manual_seed(0)
    bb = timm.create_model("test_resnet", num_classes=0)
    ref = build_detector(bb, num_classes=2, mean=(0.5,) * 3, std=(0.5,) * 3, norm="bn", **SMOKE).backbone.body
    import copy

    sync = build_detector(copy.deepcopy(bb), num_classes=2, mean=(0.5,) * 3, std=(0.5,) * 3, norm="sync_bn",
                          **SMOKE).backbone.body
    assert any(isinstance(m, nn.SyncBatchNorm) for m in sync.modules())
    x = torch.rand(2, 3, 64, 64)
    ref.train(), sync.train()
    a, b = ref(x), sync(x)  # batch statistics, no process group: the same numbers
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_run_cell_fine_tunes_then_scores(tmp_path):
    # The whole cell through the core: pre-training (none for random_init), the task's fine-tuning
    # stage, evaluation; a second run re-evaluates with the fine-tuned model from the cache.
    import harness.run
    from harness.run import run_cell
    from harness.sweep import compose

    overrides = ["method=random_init", "backbone=test_resnet", "dataset=scenes", "dataset.n_images=48",
                 "task=detection", "task.iterations=3", "task.batch_size=2", "task.min_size=[64]",
                 "task.max_size=64", "task.fpn_channels=32", "task.warmup_iterations=0", "task.eval_batch_size=4",
                 "task.checkpoint_every=2", f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}"]
    harness.run._MODELS.clear()
    first = run_cell(compose(overrides), progress=False)
    assert first["status"] == "ok", first.get("reason")
    assert set(first["metrics"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert first["metrics"]["APl"]["value"] is None  # no large object in 64² scenes: null, with the reason
    assert "APl" in first["details"]["null_metrics"]
    assert first["timings"]["finetune_cached"] is False and first["training"]["finetune"]["iterations"] == 3
    again = run_cell(compose([*overrides, "force=true"]), progress=False)
    assert again["timings"]["finetune_cached"] is True
    assert again["metrics"] == first["metrics"]  # the cached detector scores the same


@pytest.mark.slow
def test_short_fine_tune_beats_the_untrained_detector(tmp_path, capsys):
    # The smoke preset (200 iterations, 128 px, batch 4) on a random-init Conv-4 through the core's
    # fine-tuning loop: AP50 on held-out scenes must rise well above the untrained detector's (≈ 0).
    from harness.finetune import FinetuneContext, run_finetune

    backbone = _conv4()
    ds = Scenes(Scenes.Config(n_images=600, image_size=128))
    task = Detection(Detection.Config(max_eval_images=100))
    protocol = task.protocol(ds)
    torch.manual_seed(0)
    ctx = FinetuneContext(dataset=ds, protocol=protocol, seed=0, device=torch.device("cpu"), cfg=task.cfg,
                          amp_dtype=None, method=SimpleNamespace(backbone=backbone), mean=(0.5,) * 3, std=(0.5,) * 3)
    spec = task.finetune(ctx)

    def ap50() -> float:
        ev = SimpleNamespace(dataset=ds, protocol=protocol, device=torch.device("cpu"), details={},
                             finetuned=spec.model, rng=lambda salt="": np.random.default_rng(0))
        return task.evaluate(ev)["AP50"].value

    before = ap50()
    stats = run_finetune(spec, cache_file=tmp_path / "detector.pt", seed=0, device=torch.device("cpu"),
                         amp_dtype=None, progress=False)
    after = ap50()
    with capsys.disabled():
        print(f"\nsmoke detection, conv4 random init, 128 px: AP50 untrained {before:.3f}, after "
              f"{stats['iterations']} iterations {after:.3f} ({stats['seconds']:.0f} s)")
    assert before < 0.02
    assert after > before + 0.1
