"""The dataset plugin API: images plus the annotations a dataset has.

A dataset plugin subclasses :class:`ImageDataset`. It holds per-image
annotation arrays (all of length ``len(dataset)``) and its canonical named
splits (index arrays). Tasks read annotations and splits to build their
protocol; the engine reads images in batches. A task that fine-tunes a
detector reads images at their own size (:meth:`ImageDataset.load_image_list`)
with their boxes in those pixels (:meth:`ImageDataset.image_list_targets`).

Annotation names used across the harness (a dataset provides a subset):

``label``         fine class id, int64
``coarse_label``  coarse (parent) class id, int64; the hierarchy is fine → coarse
``pid``           identity (re-ID), int64
``camid``         camera id (re-ID), int64
``boxes``         object array; entry i is a float32 (k, 5) array ``x1, y1, x2, y2, class``
                  in pixels of image i (detection, scene/object crops)
``is_query``      bool, query (True) / gallery (False) membership (re-ID)
``lineage``       int64 ``(n, L)``: ancestor ids from the top level down, the class itself last (deep trees)
``typicality``    float32 in [0, 1], 1 = most typical: how little nuisance a generated image
                  carries (the dataset's docstring says how it combines its nuisances)

Canonical split names (a dataset provides the ones its protocol has):

``train``      training images (for class-disjoint protocols: the base classes)
``test``       held-out images of the training classes (in-distribution test)
``novel``      images of classes disjoint from ``train`` (few-shot episodes, retrieval)
``val``        validation images, where the dataset publishes them
``query`` / ``gallery``  re-ID evaluation sets (``train`` holds the training identities)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from harness.config import check_dataset_config

ANNOTATIONS: dict[str, str] = {
    "label": "fine class id",
    "coarse_label": "coarse (parent) class id",
    "pid": "person / object identity",
    "camid": "camera id",
    "boxes": "per-image (k, 5) boxes x1, y1, x2, y2, class in pixels",
    "is_query": "query (True) or gallery (False)",
    "lineage": "(n, L) ancestor ids from the top level down, the class last (a deep label tree)",
    "typicality": "per-image typicality in [0, 1] (1 = most typical), from a generator's nuisance strengths",
}


def check_image_batch(dataset: Any, images: Any, n: int) -> None:
    """``images`` must be what :meth:`ImageDataset.load_images` promises for ``n`` indices: a uint8
    tensor ``(n, C, H, W)`` with the dataset's ``info.channels`` and ``info.image_size``."""
    name = getattr(getattr(dataset, "cfg", None), "name", "") or type(dataset).__name__
    want = (n, dataset.info.channels, *dataset.info.image_size)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"dataset '{name}': load_images returned {type(images).__name__}; it returns a uint8 torch "
                        f"tensor of shape {want} (torch.from_numpy(array))")
    if images.dtype != torch.uint8:
        raise TypeError(f"dataset '{name}': load_images returned {images.dtype} images; it returns uint8 in [0, 255] "
                        "(for floats in [0, 1]: (x * 255).round().to(torch.uint8))")
    if tuple(images.shape) != want:
        raise ValueError(f"dataset '{name}': load_images returned shape {tuple(images.shape)} for {n} images, not "
                         f"(n, C, H, W) = {want} as its info says (channels first: x.permute(0, 3, 1, 2); "
                         "or set info.channels / info.image_size to what the images are)")


def _checked_load_images(load: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    @functools.wraps(load)
    def load_images(self: Any, indices: np.ndarray) -> torch.Tensor:
        images = load(self, indices)
        check_image_batch(self, images, int(np.asarray(indices).size))
        return images

    return load_images


@dataclass
class DatasetInfo:
    """Facts a task or the engine needs besides the arrays."""

    image_size: tuple[int, int]  # (H, W) of every image the dataset returns
    channels: int  # 1 (grayscale) or 3 (RGB)
    class_names: list[str] | None = None
    coarse_names: list[str] | None = None
    mean: tuple[float, ...] | None = None  # per-channel normalisation, in [0, 1] units
    std: tuple[float, ...] | None = None
    license: str = ""
    citation: str = ""


class ImageDataset(torch.utils.data.Dataset):
    """Base class of dataset plugins.

    Subclasses set ``self.annotations``, ``self.splits`` and ``self.info`` in
    ``__init__`` and implement :meth:`load_images`. Images are uint8 tensors
    ``(C, H, W)`` of one fixed size. ``VERSION`` is part of every cache key:
    bump it when the data a config produces changes.
    """

    VERSION: ClassVar[str] = "1"
    #: The dataset gives per-object masks (``image_list_targets(..., masks=True)``).
    instance_masks: ClassVar[bool] = False
    #: Config keys that change how the data is read, not what it is (``preload``, ``workers``): left
    #: out of the fingerprint, the result's config hash and its variant tag.
    READ_OPTIONS: ClassVar[tuple[str, ...]] = ()
    #: True while the harness reads images for an evaluation (every task's embeddings and far sets, a
    #: method's ``state.embed_train``, a fine-tuned classifier's test): a dataset with a test transform
    #: (the folder datasets' ``eval_crop``) then reads every image through it, training images included.
    evaluating: bool = False

    @dataclass
    class Config:
        """Config schema of the plugin; subclasses replace it."""

        name: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # every subclass's load_images is checked against the contract on each call (cheap: dtype and
        # shape), so a float or HWC image batch is an error at once, not a silently rescaled input
        super().__init_subclass__(**kwargs)
        if "load_images" in cls.__dict__:
            cls.load_images = _checked_load_images(cls.__dict__["load_images"])

    def __init__(self, cfg: Any = None) -> None:
        self.cfg = cfg if cfg is not None else self.Config()
        check_dataset_config(self.cfg)
        self.annotations: dict[str, np.ndarray] = {}
        self.splits: dict[str, np.ndarray] = {}
        self.info = DatasetInfo(image_size=(0, 0), channels=3)

    # -- what subclasses implement ----------------------------------------------
    def load_images(self, indices: np.ndarray) -> torch.Tensor:
        """Return the images at ``indices`` as a uint8 tensor ``(n, C, H, W)``."""
        raise NotImplementedError

    def load_image_list(self, indices: np.ndarray) -> list[torch.Tensor]:
        """The images at ``indices`` each at its own size: uint8 ``(C, H_i, W_i)`` tensors.

        For detection, whose models batch images of different sizes themselves.
        Default: the fixed-size images of :meth:`load_images`. Datasets read from
        files of many sizes (COCO, VOC) return the decoded files unresized.
        """
        return list(self.load_images(np.asarray(indices, dtype=np.int64).reshape(-1)))

    def image_list_targets(self, indices: np.ndarray, *, masks: bool = False) -> list[dict[str, Any]]:
        """Per image of :meth:`load_image_list`, its objects in that image's pixels.

        Each dict has ``boxes`` (float32 (k, 5): ``x1, y1, x2, y2, class``, the
        ``boxes`` annotation's convention) and ``area`` (float64 (k,): the object's
        area in pixels — its mask's where the dataset has masks, as COCO's
        ``area`` field, else the box's); with ``masks=True`` also ``masks``
        (bool (k, H_i, W_i), one per box row), for datasets with ``instance_masks``.
        An optional ``ignore`` (bool (k,)) marks objects the benchmark's evaluation ignores
        (COCO's crowd regions, VOC's difficult objects): detection training leaves them out and
        its evaluation neither rewards nor penalises detections on them (COCO's ``iscrowd``).
        Default: the ``boxes`` annotation (the images are the fixed-size ones).
        """
        from harness.errors import Incompatible

        if "boxes" not in self.annotations:
            raise Incompatible(f"dataset '{self.name}' has no 'boxes' annotation")
        if masks and not self.instance_masks:
            raise Incompatible(f"dataset '{self.name}' has no instance masks (Mask R-CNN needs them); "
                               "use detector=faster_rcnn")
        out = []
        for i in np.asarray(indices, dtype=np.int64).reshape(-1):
            b = np.asarray(self.annotations["boxes"][i], dtype=np.float32).reshape(-1, 5)
            out.append({"boxes": b, "area": ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).astype(np.float64)})
        return out

    # -- shared behaviour ---------------------------------------------------------
    @contextmanager
    def reading_for_evaluation(self) -> Iterator[ImageDataset]:
        """Within the block :attr:`evaluating` is True: images are read as an evaluation reads them."""
        previous, self.evaluating = self.evaluating, True
        try:
            yield self
        finally:
            self.evaluating = previous

    @property
    def name(self) -> str:
        return str(getattr(self.cfg, "name", "")) or type(self).__name__

    @property
    def object_names(self) -> list[str] | None:
        """Names of the box classes (column 4 of ``boxes``); default ``info.class_names``."""
        return self.info.class_names

    @property
    def provides(self) -> frozenset[str]:
        """The annotation names this dataset has."""
        return frozenset(self.annotations)

    def __len__(self) -> int:
        first = next(iter(self.annotations.values()), None)
        return 0 if first is None else len(first)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.load_images(np.asarray([index]))[0]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        # torch's DataLoader calls this with a whole batch of indices: one vectorised read.
        return self.load_images(np.asarray(indices))

    def fingerprint(self) -> str:
        """A stable hash of what determines the data: class, version and :meth:`fingerprint_config`."""
        blob = json.dumps([type(self).__qualname__, self.VERSION, self.fingerprint_config()], sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def fingerprint_config(self) -> dict[str, Any]:
        """The config as far as it determines the data: without the ``READ_OPTIONS``."""
        cfg = dataclasses.asdict(self.cfg) if dataclasses.is_dataclass(self.cfg) else dict(self.cfg)
        return {k: v for k, v in cfg.items() if k not in self.READ_OPTIONS}

    def file_problems(self) -> list[str]:
        """What is wrong with the dataset's files that reading them would only find mid-run, one line or
        paragraph each (empty: nothing found). It runs before any cell (``check_requirements``) and must be
        cheap: no decoding. Default: nothing to check (generated and in-memory datasets)."""
        return []

    def split(self, name: str) -> np.ndarray:
        """Indices of a canonical split; an unknown name lists the splits there are."""
        if name not in self.splits:
            from harness.errors import Incompatible

            raise Incompatible(f"dataset '{self.name}' has no split '{name}' "
                               f"(it has: {', '.join(sorted(self.splits)) or 'none'})")
        return self.splits[name]


def check_contents(dataset: Any) -> None:
    """Check, in place, what a dataset plugin's ``__init__`` set, before any work reads it: ``annotations``
    and ``splits`` are dicts of per-image arrays (lists become numpy arrays; a ``boxes`` list an object
    array of its per-image arrays), every annotation has ``len(dataset)`` entries and every split holds
    integer indices in ``0 .. len(dataset) - 1``. A :class:`~harness.errors.PluginLoadError` says what is
    wrong; without this check it shows mid-run (after training) as an ``IndexError`` or ``TypeError``."""
    from harness.errors import PluginLoadError

    kind = type(dataset).__name__
    if not hasattr(dataset, "cfg") or not hasattr(dataset, "info"):
        raise PluginLoadError(f"dataset {kind} has no cfg / info: its __init__ must call super().__init__(cfg) "
                              "first, then set self.annotations, self.splits and self.info")
    for field in ("annotations", "splits"):
        if not isinstance(getattr(dataset, field, None), dict):
            raise PluginLoadError(f"dataset '{dataset.name}': self.{field} is a {type(getattr(dataset, field, None)).__name__}, "
                                  "not a dict of per-image arrays")
    for key, values in dataset.annotations.items():
        if isinstance(values, (list, tuple)):
            if key == "boxes":
                values, listed = np.empty(len(values), dtype=object), values
                values[:] = [np.asarray(b, dtype=np.float32).reshape(-1, 5) for b in listed]
            else:
                values = np.asarray(values)
            dataset.annotations[key] = values
    n = len(dataset)
    for key, values in dataset.annotations.items():
        if len(values) != n:
            raise PluginLoadError(f"dataset '{dataset.name}': annotation '{key}' has {len(values)} entries, "
                                  f"'{next(iter(dataset.annotations))}' has {n}: every annotation has one per image")
    for split, indices in dataset.splits.items():
        indices = np.asarray(indices)
        if indices.size == 0:
            indices = indices.astype(np.int64)
        if not np.issubdtype(indices.dtype, np.integer):
            raise PluginLoadError(f"dataset '{dataset.name}': split '{split}' holds {indices.dtype} values; a split "
                                  "is an array of image indices (int64)")
        outside = indices[(indices < 0) | (indices >= n)]
        if outside.size:
            raise PluginLoadError(f"dataset '{dataset.name}': split '{split}' holds {outside.size} indices outside "
                                  f"0..{n - 1} (e.g. {outside[:3].tolist()}); len(dataset) = {n} is the length of its "
                                  "annotations (a dataset without annotations defines __len__)")
        dataset.splits[split] = indices.astype(np.int64, copy=False).reshape(-1)


def far_images(dataset: Any, split: str | None, key: str) -> tuple[np.ndarray, str]:
    """The images of ``dataset`` read as a far OOD set (``task.far``) and which they are: ``split`` when
    given (a :class:`ConfigError` naming ``key`` when the dataset has no such split, or it is empty),
    else its ``test`` split, else every image ("all")."""
    from harness.errors import ConfigError

    if split is None:
        return (dataset.splits["test"], "test") if "test" in dataset.splits else (np.arange(len(dataset)), "all")
    if split not in dataset.splits or not len(dataset.splits[split]):
        have = ", ".join(f"{k} ({len(v)})" for k, v in dataset.splits.items())
        raise ConfigError(f"{key}: dataset '{dataset.name}' has no images in a split '{split}' (its splits: "
                          f"{have}); name one of them, or leave split out for its test split, else every image")
    return dataset.splits[split], split


def conform_images(images: torch.Tensor, *, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Make uint8 images ``(n, C, H, W)`` match another dataset's channels and size.

    Grayscale → RGB repeats the channel; RGB → grayscale uses ITU-R 601 luma;
    the size changes by bilinear resizing (antialiased when shrinking).
    """
    if images.shape[1] != channels:
        if images.shape[1] == 1 and channels == 3:
            images = images.expand(-1, 3, -1, -1)
        elif images.shape[1] == 3 and channels == 1:
            w = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
            images = (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise ValueError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")
    if tuple(images.shape[-2:]) != tuple(size):
        resized = torch.nn.functional.interpolate(images.float(), size=tuple(size), mode="bilinear",
                                                  align_corners=False, antialias=True)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images.contiguous()


def hash_indices(indices: np.ndarray) -> str:
    """A short stable hash of an index array (part of model and embedding cache keys)."""
    arr = np.ascontiguousarray(np.asarray(indices, dtype=np.int64))
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


def cache_root() -> Path:
    """Where generated datasets and trained models are cached (``HARNESS_CACHE``, else ``~/.cache/harness``)."""
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness")).expanduser()


def cached_tensors(kind: str, key: str, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Load a dict of tensors from the cache, or ``build()`` and store it atomically.

    Used by generated datasets (uint8 images + annotation arrays, keyed by their
    fingerprint) so generation runs once per config. Stored with ``torch.save``
    and read back with ``weights_only=True`` (tensors only, no arbitrary pickles),
    beside the entry's own key: a file that cannot be read, or that was not written
    for this entry (a foreign or hand-placed file), is built again.
    """
    path = cache_root() / kind / f"{key}.pt"
    if path.exists():
        try:
            loaded = torch.load(path, weights_only=True)
            tag = loaded.pop(_CACHE_KEY, None) if isinstance(loaded, dict) else None
            if not isinstance(tag, torch.Tensor) or bytes(tag.tolist()) != key.encode():
                raise ValueError("it was not written for this entry")
            return loaded
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: rebuild it
            print(f"  the cached {kind} entry {path} could not be read ({type(exc).__name__}: "
                  f"{str(exc).splitlines()[0][:120] if str(exc) else 'no message'}): building it again", file=sys.stderr)
    tensors = build()
    save_tensors({**tensors, _CACHE_KEY: torch.tensor(list(key.encode()), dtype=torch.uint8)}, path)
    return tensors


#: The entry of a :func:`cached_tensors` file that holds its cache key (UTF-8 bytes).
_CACHE_KEY = "__cache_key__"


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``torch.save`` a dict of tensors atomically (temp file + rename): readers never see a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(tensors, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
