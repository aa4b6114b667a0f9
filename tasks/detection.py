"""Task ``detection``: transfer of the trained backbone to object detection, scored by COCO AP.

The protocol of the self-supervised transfer papers (MoCo, He et al. CVPR
2020, Sec. 4.2 / Appendix A; DenseCL, Wang et al. CVPR 2021; HCL, Ge et al.
CVPR 2023, Table 2): a Faster R-CNN (or, with masks, Mask R-CNN) with an FPN
is built on the method's trained backbone (:mod:`._detector`), every layer
fine-tuned on the dataset's ``train`` split with its ``boxes`` through the
core's fine-tuning stage (:mod:`harness.finetune`: checkpoints, progress, AMP
on CUDA), then evaluated on the ``test`` split with COCO's AP, AP50, AP75,
APs, APm, APl (:func:`coco_box_ap`; ``mask_*`` by :func:`coco_segm_ap` for Mask R-CNN).

Data: images at their own size (``dataset.load_image_list``) with their boxes
in those pixels (``dataset.image_list_targets``); the detector resizes them
(shorter side ``min_size``, longer at most ``max_size``). Training batches:
``batch_size`` images drawn without replacement by the core's per-iteration
generator, each flipped horizontally with probability ½ (``flip``), the
``min_size`` of a multi-scale list drawn by the same generator. Images without
objects are kept as negatives (torchvision's R-CNNs take empty targets); objects
the dataset flags ``ignore`` (COCO crowd regions, VOC difficult objects) are left
out of training and scored as COCOeval's ``iscrowd`` regions (neither hits nor
false positives).
Boxes more than 1 px outside their image, boxes of zero width or height and
class ids outside the dataset's box classes are errors naming the image; boxes
within 1 px of the border are clipped to it (as Detectron2 does).

Optimisation as Detectron2: SGD with momentum, weight decay (none on norm
layers), linear warm-up, the learning rate × 0.1 at each of ``lr_steps``.

Presets (``task=…``): ``detection`` (the ``smoke`` preset, CPU-sized: not
comparable with published numbers), ``detection_voc07`` (MoCo's VOC protocol,
with an FPN instead of C4), ``detection_coco_1x`` (DenseCL's / HCL's COCO
Mask R-CNN R50-FPN 1×).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from harness.errors import ConfigError, HarnessError, Incompatible
from harness.task import UNIT, MetricValue, Protocol, Task
from harness.tasks._coco_eval import AP_KEYS, coco_box_ap, coco_segm_ap

__all__ = ["Detection", "coco_box_ap", "coco_segm_ap", "detection_ground_truth", "predictions_to_coco"]

#: Pixels a box may stick out of its image before it is an error (within it, the box is clipped).
BOX_SLACK = 1.0
MASK_KEYS = tuple(f"mask_{k}" for k in AP_KEYS)


class DetectionDataError(HarnessError, ValueError):
    """A box, class id or image the detector cannot train or be scored on; the message names it."""


# -- targets ------------------------------------------------------------------------------------------------
def check_boxes(boxes: np.ndarray, hw: tuple[int, int], num_classes: int, where: str) -> np.ndarray:
    """Validate (k, 5) boxes ``x1 y1 x2 y2 class`` of an image of size ``hw``; return them clipped to it."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
    if len(b) == 0:
        return b
    h, w = hw
    if not np.isfinite(b).all():
        raise DetectionDataError(f"{where}: boxes contain NaN or inf: {b.tolist()}")
    cls = b[:, 4]
    bad = (cls < 0) | (cls >= num_classes) | (cls != np.round(cls))
    if bad.any():
        raise DetectionDataError(f"{where}: class id(s) {sorted(set(cls[bad].tolist()))} outside the dataset's "
                                 f"{num_classes} box classes 0..{num_classes - 1}")
    outside = (b[:, 0] < -BOX_SLACK) | (b[:, 1] < -BOX_SLACK) | (b[:, 2] > w + BOX_SLACK) | (b[:, 3] > h + BOX_SLACK)
    if outside.any():
        raise DetectionDataError(f"{where}: box(es) {b[outside, :4].tolist()} lie outside the {w}×{h} image "
                                 "(x1, y1, x2, y2 in the pixels of the image at its own size)")
    b = b.copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
    empty = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    if empty.any():
        raise DetectionDataError(f"{where}: box(es) {b[empty, :4].tolist()} have zero width or height "
                                 "(x2 must exceed x1 and y2 exceed y1)")
    return b


def ignored(target: dict[str, Any]) -> np.ndarray:
    """Which of a target's objects the evaluation ignores: its optional ``ignore`` flags (COCO crowd,
    VOC difficult; see ``ImageDataset.image_list_targets``), none where the dataset gives none."""
    n = len(np.asarray(target["boxes"]).reshape(-1, 5))
    return np.asarray(target.get("ignore", np.zeros(n, dtype=bool)), dtype=bool).reshape(n)


def to_float_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 (C, H, W) → float32 in [0, 1] (the detector normalises with the backbone's mean / std)."""
    return image.float().div_(255.0)


@dataclass
class DetectionBatch:
    """One training batch: float images in [0, 1] (each its own size), torchvision targets, the scale."""

    images: list[torch.Tensor]
    targets: list[dict[str, torch.Tensor]]
    min_size: int


class DetectionBatches:
    """The training batch of iteration ``i``: ``batch(i, rng)`` draws images, flips, scale from ``rng``."""

    def __init__(self, dataset: Any, indices: np.ndarray, *, batch_size: int, num_classes: int,
                 min_sizes: list[int], flip: bool, masks: bool) -> None:
        if len(indices) < batch_size:
            raise ConfigError(f"detection: the train split has {len(indices)} images, fewer than "
                              f"batch_size={batch_size}")
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)
        self.batch_size, self.num_classes = batch_size, num_classes
        self.min_sizes, self.flip, self.masks = list(min_sizes), flip, masks

    def __call__(self, iteration: int, rng: np.random.Generator) -> DetectionBatch:
        idx = np.sort(rng.choice(self.indices, self.batch_size, replace=False))
        flips = rng.random(len(idx)) < 0.5 if self.flip else np.zeros(len(idx), bool)
        min_size = int(self.min_sizes[int(rng.integers(len(self.min_sizes)))])
        images = self.dataset.load_image_list(idx)
        found = self.dataset.image_list_targets(idx, masks=self.masks)
        out_images, targets = [], []
        for i, image, t, flip in zip(idx, images, found, flips):
            hw = (int(image.shape[-2]), int(image.shape[-1]))
            keep = ~ignored(t)
            b = check_boxes(np.asarray(t["boxes"]).reshape(-1, 5)[keep], hw, self.num_classes,
                            f"training image {int(i)}")  # crowd / difficult objects are not trained on
            x = to_float_image(image)
            target = {"boxes": torch.from_numpy(b[:, :4].copy()), "labels": torch.from_numpy(b[:, 4]).long() + 1}
            if self.masks:
                target["masks"] = torch.as_tensor(t["masks"])[torch.from_numpy(keep)].to(torch.uint8)
            if flip:
                x = x.flip(-1)
                boxes = target["boxes"]
                target["boxes"] = torch.stack([hw[1] - boxes[:, 2], boxes[:, 1], hw[1] - boxes[:, 0], boxes[:, 3]], 1)
                if self.masks:
                    target["masks"] = target["masks"].flip(-1)
            out_images.append(x)
            targets.append(target)
        return DetectionBatch(out_images, targets, min_size)


def detection_loss(model: nn.Module, batch: DetectionBatch) -> torch.Tensor:
    """The sum of the R-CNN's losses (RPN objectness + box, RoI class + box [+ mask]) on one batch."""
    device = next(model.parameters()).device
    images = [x.to(device, non_blocking=True) for x in batch.images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in batch.targets]
    transform = model.transform
    sizes = transform.min_size
    transform.min_size = (batch.min_size,)  # the scale drawn by the batch's generator, not torch's
    try:
        losses = model(images, targets)
    finally:
        transform.min_size = sizes
    return sum(losses.values())


# -- evaluation ---------------------------------------------------------------------------------------------
def detection_ground_truth(image_ids: list[int], sizes: list[tuple[int, int]], targets: list[dict[str, Any]],
                           class_names: list[str], *, masks: bool = False) -> dict:
    """The COCO ground-truth dict of images ``image_ids`` of ``sizes`` (h, w) and their ``targets``
    (``image_list_targets``): category id = class + 1, ``area`` from the target, ``segmentation``
    the mask's RLE when ``masks``, ``iscrowd`` = the target's ``ignore`` (COCOeval's one way to
    ignore an object: a detection matched to it is neither a hit nor a false positive; for VOC's
    difficult objects it matches by intersection over the detection's area, not IoU)."""
    images, annotations = [], []
    for image_id, (h, w), t in zip(image_ids, sizes, targets):
        images.append({"id": int(image_id), "width": int(w), "height": int(h)})
        rles = _encode_masks(t["masks"]) if masks else None
        boxes = np.asarray(t["boxes"], dtype=np.float64).reshape(-1, 5)
        ignore = ignored(t)
        for k, (x1, y1, x2, y2, cls) in enumerate(boxes):
            ann = {"id": len(annotations) + 1, "image_id": int(image_id), "category_id": int(cls) + 1,
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(t["area"][k]), "iscrowd": int(ignore[k])}
            if rles is not None:
                ann["segmentation"] = rles[k]
            annotations.append(ann)
    categories = [{"id": k + 1, "name": str(n)} for k, n in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def predictions_to_coco(image_id: int, output: dict[str, torch.Tensor], *, masks: bool = False,
                        mask_threshold: float = 0.5) -> list[dict]:
    """torchvision R-CNN output of one image → COCO result dicts (category id = label; bbox
    ``[x, y, w, h]``; ``segmentation`` the RLE of the mask probability > ``mask_threshold``)."""
    boxes = output["boxes"].detach().float().cpu().numpy().astype(np.float64)
    scores = output["scores"].detach().float().cpu().numpy().astype(np.float64)
    labels = output["labels"].detach().cpu().numpy()
    rles = _encode_masks(output["masks"][:, 0] > mask_threshold) if masks else None
    out = []
    for k, ((x1, y1, x2, y2), s, lab) in enumerate(zip(boxes, scores, labels)):
        d = {"image_id": int(image_id), "category_id": int(lab), "bbox": [x1, y1, x2 - x1, y2 - y1],
             "score": float(s)}
        if rles is not None:
            d["segmentation"] = rles[k]
        out.append(d)
    return out


def _encode_masks(masks: Any) -> list[dict]:
    """Bool (k, H, W) → COCO RLE dicts (``counts`` as str, so the dicts are JSON-friendly)."""
    from faster_coco_eval.core import mask as mask_utils

    m = torch.as_tensor(masks).detach().cpu().numpy().astype(np.uint8)
    if len(m) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0)))
    for r in rles:
        if isinstance(r["counts"], bytes):
            r["counts"] = r["counts"].decode("ascii")
    return rles


def multistep(milestones: list[float], gamma: float = 0.1):
    """lr multiplier ``gamma ** (number of milestones ≤ t)``, milestones as fractions of training (t ∈ [0, 1))."""
    marks = sorted(float(m) for m in milestones)
    return lambda t: gamma ** sum(t + 1e-12 >= m for m in marks)


def sgd_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: norm layers without weight decay (Detectron2's
    ``WEIGHT_DECAY_NORM = 0``), the rest with ``weight_decay``."""
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    norm_params, other = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (norm_params if isinstance(module, norm_types) else other).append(p)
    return [{"params": other, "weight_decay": weight_decay}, {"params": norm_params, "weight_decay": 0.0}]


class Detection(Task):
    """Fine-tune Faster / Mask R-CNN + FPN on the trained backbone; COCO AP on the ``test`` split."""

    VERSION = "1"
    requires = frozenset({"boxes"})
    METRICS = {**{k: True for k in AP_KEYS}, **{k: True for k in MASK_KEYS}}
    BOUNDS = dict.fromkeys(METRICS, UNIT)
    CONVENTION = ("COCO AP (IoU .50:.95, 101 recall points, 100 detections per image; APs/m/l by object area "
                  "< 32², < 96², ≥ 96² px) of a Faster/Mask R-CNN + FPN fine-tuned on the train split, scored on "
                  "test; the smoke preset (task=detection: 200 iterations at 128 px, fewer proposals) is not "
                  "comparable with published numbers")

    @dataclass
    class Config:
        name: str = "detection"
        detector: str = "faster_rcnn"  # faster_rcnn | mask_rcnn
        pretrain_label: Optional[str] = "label"  # the annotation the method pre-trains on (null: unsupervised)
        iterations: int = 200
        batch_size: int = 4
        lr: float = 0.01  # batch 4; the published presets: 0.02 at batch 16
        momentum: float = 0.9
        weight_decay: float = 0.0001
        warmup_iterations: int = 50
        lr_steps: list[int] = field(default_factory=list)  # iterations where the lr drops × 0.1
        grad_clip: float = 0.0
        checkpoint_every: int = 100
        min_size: list[int] = field(default_factory=lambda: [128])  # training scales; the last one at test
        max_size: int = 128
        flip: bool = True
        feature_indices: Any = 3  # int: the last n feature levels; list: those levels
        fpn_channels: int = 256
        norm: str = "bn"  # frozen_bn | bn | sync_bn
        frozen_stages: int = 0
        rpn_pre_nms_top_n_train: int = 300
        rpn_post_nms_top_n_train: int = 150
        rpn_pre_nms_top_n_test: int = 150
        rpn_post_nms_top_n_test: int = 100
        rpn_batch_size_per_image: int = 128
        box_batch_size_per_image: int = 64
        sampling_ratio: int = 1
        box_head_dim: int = 256
        eval_batch_size: int = 8
        max_eval_images: int = 0  # 0: the whole test split; else a seeded subset of this size

        def min_sizes(self) -> list[int]:
            m = self.min_size
            return [int(m)] if isinstance(m, (int, np.integer)) else [int(s) for s in m]

        def validate(self) -> None:
            from harness.tasks._detector import DETECTORS, NORMS

            if self.detector not in DETECTORS:
                raise ConfigError(f"task.detector must be one of {DETECTORS}, got {self.detector!r}")
            if self.norm not in NORMS:
                raise ConfigError(f"task.norm must be one of {NORMS}, got {self.norm!r}")
            for key in ("iterations", "batch_size", "max_size", "eval_batch_size", "fpn_channels", "box_head_dim",
                        "checkpoint_every", "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train",
                        "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "rpn_batch_size_per_image",
                        "box_batch_size_per_image"):
                if int(getattr(self, key)) < 1:
                    raise ConfigError(f"task.{key} must be >= 1, got {getattr(self, key)}")
            if not self.min_sizes() or min(self.min_sizes()) < 1:
                raise ConfigError(f"task.min_size must be a positive int or a non-empty list of them, "
                                  f"got {self.min_size}")
            for key in ("warmup_iterations", "max_eval_images", "frozen_stages", "sampling_ratio"):
                if int(getattr(self, key)) < 0:
                    raise ConfigError(f"task.{key} must be >= 0, got {getattr(self, key)}")
            for key in ("lr", "momentum", "weight_decay", "grad_clip"):
                value = float(getattr(self, key))
                if not math.isfinite(value) or value < 0 or (key == "lr" and value == 0):
                    raise ConfigError(f"task.{key} must be a finite number {'> 0' if key == 'lr' else '>= 0'}, "
                                      f"got {value}")
            bad = [s for s in self.lr_steps if not 0 < int(s) < self.iterations]
            if bad:
                raise ConfigError(f"task.lr_steps {bad} must lie in 1..iterations-1 ({self.iterations - 1})")

    def _min_sizes(self) -> list[int]:
        return self.cfg.min_sizes()

    @staticmethod
    def _num_classes(dataset: Any) -> int:
        names = getattr(dataset, "object_names", None)
        if not names:
            raise Incompatible(f"dataset '{dataset.name}' names no box classes (object_names / info.class_names)")
        return len(names)

    # -- protocol ---------------------------------------------------------------------------------------------
    def protocol(self, dataset: Any) -> Protocol:
        self.check(dataset)
        if self.cfg.detector == "mask_rcnn" and not dataset.instance_masks:
            raise Incompatible(f"detector=mask_rcnn needs instance masks, which dataset '{dataset.name}' does not "
                               "have; use detector=faster_rcnn")
        label = self.cfg.pretrain_label
        if label is not None and label not in dataset.annotations:
            raise Incompatible(f"task.pretrain_label='{label}' is not an annotation of dataset '{dataset.name}' "
                               "(set it to null for unsupervised pre-training)")
        self._num_classes(dataset)
        train, test = dataset.split("train"), dataset.split("test")
        if len(test) == 0:
            raise Incompatible(f"dataset '{dataset.name}' has an empty test split: nothing to score detection on")
        return Protocol(train=train, train_label=label, eval={"test": test},
                        description=f"{self.cfg.detector} + FPN fine-tuned on train ({len(train)} images), "
                                    f"COCO AP on test ({len(test)} images)")

    # -- fine-tuning (run by the core) ------------------------------------------------------------------------
    def build_model(self, backbone: nn.Module, num_classes: int, mean: tuple, std: tuple) -> nn.Module:
        """The detector of this config on ``backbone`` (see :func:`._detector.build_detector`)."""
        from harness.tasks._detector import build_detector

        c = self.cfg
        indices = c.feature_indices if isinstance(c.feature_indices, int) or c.feature_indices is None \
            else [int(i) for i in c.feature_indices]
        return build_detector(
            backbone, num_classes=num_classes, mean=mean, std=std, detector=c.detector, feature_indices=indices,
            fpn_channels=c.fpn_channels, norm=c.norm, frozen_stages=c.frozen_stages,
            min_size=tuple(self._min_sizes()), max_size=c.max_size,
            rpn_pre_nms_top_n_train=c.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=c.rpn_post_nms_top_n_train,
            rpn_pre_nms_top_n_test=c.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=c.rpn_post_nms_top_n_test,
            rpn_batch_size_per_image=c.rpn_batch_size_per_image, box_batch_size_per_image=c.box_batch_size_per_image,
            sampling_ratio=c.sampling_ratio, box_head_dim=c.box_head_dim)

    def batches(self, dataset: Any, indices: np.ndarray) -> DetectionBatches:
        """The training batches of ``indices``, after checking every image's class ids up front."""
        num_classes = self._num_classes(dataset)
        for i in indices:  # the class column is the same at every image size
            cls = np.asarray(dataset.annotations["boxes"][i], dtype=np.float32).reshape(-1, 5)[:, 4]
            if ((cls < 0) | (cls >= num_classes)).any():
                raise DetectionDataError(f"training image {int(i)}: class id(s) {sorted(set(cls.tolist()))} outside "
                                         f"the dataset's {num_classes} box classes 0..{num_classes - 1}")
        return DetectionBatches(dataset, indices, batch_size=self.cfg.batch_size, num_classes=num_classes,
                                min_sizes=self._min_sizes(), flip=self.cfg.flip,
                                masks=self.cfg.detector == "mask_rcnn")

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.cfg
        return torch.optim.SGD(sgd_param_groups(model, c.weight_decay), lr=c.lr, momentum=c.momentum)

    def finetune(self, ctx: Any) -> Any:
        """The detector on a copy of the trained backbone, with its batches, loss, SGD and schedule."""
        from harness.finetune import Finetune

        c = self.cfg
        model = self.build_model(ctx.backbone_copy(), self._num_classes(ctx.dataset), ctx.mean, ctx.std)
        return Finetune(model=model, batch=self.batches(ctx.dataset, ctx.protocol.train), loss=detection_loss,
                        optimizer=self.optimizer(model), iterations=c.iterations,
                        schedule=multistep([s / c.iterations for s in c.lr_steps]),
                        warmup_iterations=c.warmup_iterations, grad_clip=c.grad_clip,
                        checkpoint_every=c.checkpoint_every)

    # -- evaluation -------------------------------------------------------------------------------------------
    def eval_indices(self, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = self.cfg.max_eval_images
        if n and len(indices) > n:
            return np.sort(rng.choice(indices, n, replace=False))
        return np.asarray(indices, dtype=np.int64)

    @torch.no_grad()
    def predict(self, model: nn.Module, dataset: Any, indices: np.ndarray, device: torch.device
                ) -> tuple[dict, list[dict]]:
        """COCO ground truth and detections of ``model`` (eval mode) on the images at ``indices``.

        Image ids are the dataset indices + 1, category ids the classes + 1 (as ``to_coco``).
        """
        masks = self.cfg.detector == "mask_rcnn"
        num_classes = self._num_classes(dataset)
        was_training = model.training
        model.eval()
        ids, sizes, targets, detections = [], [], [], []
        for s in range(0, len(indices), self.cfg.eval_batch_size):
            idx = indices[s:s + self.cfg.eval_batch_size]
            images = dataset.load_image_list(idx)
            found = dataset.image_list_targets(idx, masks=masks)
            outputs = model([to_float_image(x).to(device) for x in images])
            for i, image, t, out in zip(idx, images, found, outputs):
                hw = (int(image.shape[-2]), int(image.shape[-1]))
                t = {**t, "boxes": check_boxes(t["boxes"], hw, num_classes, f"test image {int(i)}")}
                ids.append(int(i) + 1)
                sizes.append(hw)
                targets.append(t)
                detections.extend(predictions_to_coco(int(i) + 1, out, masks=masks))
        model.train(was_training)
        gt = detection_ground_truth(ids, sizes, targets, list(dataset.object_names), masks=masks)
        return gt, detections

    def evaluate(self, ctx: Any) -> dict[str, MetricValue]:
        model = getattr(ctx, "finetuned", None)
        if model is None:
            raise HarnessError("detection: the core gave no fine-tuned model (ctx.finetuned); the task's "
                               "finetune() stage must run before evaluate()")
        indices = self.eval_indices(ctx.protocol.eval["test"], ctx.rng("detection/eval"))
        gt, detections = self.predict(model, ctx.dataset, indices, ctx.device)
        results = {"": coco_box_ap(gt, detections)}
        if self.cfg.detector == "mask_rcnn":
            results["mask_"] = coco_segm_ap(gt, detections)
        out: dict[str, MetricValue] = {}
        reasons: dict[str, str] = {}
        for prefix, res in results.items():
            for key in AP_KEYS:
                value, reason = res[key], res["reasons"].get(key)
                if value is None and reason is None:
                    reason = "COCOeval gave no value"
                out[prefix + key] = self.metric(prefix + key, value, n=len(indices),
                                                reason=reason if value is None else None)
                if reason is not None and value is None:
                    reasons[prefix + key] = reason
        ctx.details.update(num_test_images=len(indices), num_test_objects=len(gt["annotations"]),
                           num_detections=len(detections), detector=self.cfg.detector, norm=self.cfg.norm,
                           iterations=self.cfg.iterations)
        if reasons:
            ctx.details["null_metrics"] = reasons
        return out
