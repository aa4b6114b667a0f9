"""Shared machinery of the datasets read from disk: roots, missing-file errors, lazy image files.

Roots. A config ``root`` is expanded with ``os.path.expandvars`` and
``expanduser``. A root that starts with ``~/data/`` (every default does) is
relative to the *data base directory*: ``$HARNESS_DATA`` when that variable is
set, else ``~/data``. So ``HARNESS_DATA=/mnt/datasets`` moves every default at
once, and ``dataset.root=/elsewhere/CUB_200_2011`` moves one.

Images. :class:`FileImageDataset` keeps one path per image and decodes lazily
with PIL: converted to ``L`` or ``RGB``, resized to the configured ``(H, W)``
with PIL's bilinear filter (which widens its support when shrinking, i.e.
antialiases), returned as uint8 ``(n, C, H, W)``. A dataset whose config has
``eval_crop`` = f in [0.5, 1] reads the images an evaluation reads (every image
outside its ``train`` split, and every image while
:meth:`~harness.data.ImageDataset.reading_for_evaluation`: the harness embeds the
training images of ``ood``'s and ``hierarchy``'s prototypes, and a method's
``state.embed_train``, that way) as the released test transforms do,
``Resize(round(H / f))`` of the shorter side then ``CenterCrop(H)``, so objects
keep their aspect ratio; the training steps read the training images stretched to
the square, which the training views then crop (the released code crops them from
the whole image). With ``preload``, the cropped training images are a second
cached tensor, decoded the first time an evaluation reads one.

``workers`` threads decode a batch in parallel (PIL releases the GIL while decoding), capped at half the
CPUs: on a 2-CPU machine threads only add overhead, so it decodes in the
calling thread (see ``benchmarks/bench_datasets.py``). ``preload=True``
decodes every image once into a uint8 tensor stored with
:func:`harness.data.cached_tensors` (keyed by the fingerprint), so later runs
read the tensor instead of the files.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from harness.config import image_hw
from harness.data import DatasetInfo, ImageDataset, cached_tensors
from harness.errors import ConfigError, DatasetFormatError, DatasetNotFoundError

DATA_ENV = "HARNESS_DATA"
_DEFAULT_BASE = "~/data"

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PROTOCOLS = ("retrieval", "classification")
_ARCHIVES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".zip")


def data_base() -> Path:
    """The directory the default roots live in: ``$HARNESS_DATA``, else ``~/data``."""
    return Path(os.environ.get(DATA_ENV) or _DEFAULT_BASE).expanduser()


def resolve_root(root: str) -> Path:
    """Expand a config root (see the module docstring for the ``~/data/`` rule)."""
    text = os.path.expandvars(str(root))
    if text == _DEFAULT_BASE or text.startswith(_DEFAULT_BASE + "/"):
        return data_base() / text[len(_DEFAULT_BASE):].lstrip("/")
    return Path(text).expanduser()


def canonical_root(root: str) -> str:
    """The folder a config root names, absolute, with links and ``..`` resolved (an empty root stays
    empty): two spellings of one folder give one fingerprint, one relative spelling run from two
    folders gives two."""
    return str(resolve_root(root).resolve()) if root else root


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Re-raise an error met while parsing ``path`` (``what``: e.g. "CUB's image list") as a
    :class:`DatasetFormatError` that names the file."""
    try:
        yield
    except (DatasetNotFoundError, DatasetFormatError, ConfigError, FileNotFoundError):
        raise
    except Exception as exc:  # noqa: BLE001 - any parse error of a published file
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise DatasetFormatError(f"{path} could not be read as {what}: {detail} (a truncated or partial copy, "
                                 "or another format than the published one? copy it again from the source)"
                                 ) from exc


def missing_files(paths: Sequence[Path]) -> list[Path]:
    """The ``paths`` that are not files in their folder, in order (one listing per folder, not a stat per
    file: cheap on network file systems too)."""
    by_dir: dict[Path, list[Path]] = defaultdict(list)
    for p in paths:
        by_dir[p.parent].append(p)
    absent: set[Path] = set()
    for folder, files in by_dir.items():
        try:
            present = {e.name for e in os.scandir(folder) if e.is_file()}
        except OSError:
            present = set()
        absent.update(p for p in files if p.name not in present)
    return [p for p in paths if p in absent]


def missing_hint(path: Path) -> str:
    """Why ``path`` may be missing: a name in the deepest existing folder above it that differs only in
    case, an archive left unextracted there, else that folder."""
    existing = path.parent
    while not existing.is_dir() and existing != existing.parent:
        existing = existing.parent
    wanted = path.relative_to(existing).parts[0]
    try:
        names = sorted(os.listdir(existing))
    except OSError:
        return ""
    if same := [n for n in names if n.lower() == wanted.lower() and n != wanted]:
        return f"{existing / same[0]} exists: names are case-sensitive"
    return _packed_archive(existing) or f"the deepest folder of that path that exists is {existing}"


def _packed_archive(folder: Path) -> str | None:
    """``"<folder> holds <archive>: extract it there"`` for the first archive file in ``folder``, if any."""
    try:
        archives = sorted(n for n in os.listdir(folder) if n.lower().endswith(_ARCHIVES))
    except OSError:
        return None
    return f"{folder} holds {archives[0]}: extract it there" if archives else None


def _holding_folder(root: Path, expected: Sequence[str], depth: int = 2) -> Path | None:
    """A folder up to ``depth`` levels below ``root`` in which every ``expected`` path exists (a root given
    one or two folders too high, e.g. the folder an archive was extracted into)."""
    if depth == 0 or not root.is_dir():
        return None
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return None
    for child in children:
        if all((child / rel).exists() for rel in expected):
            return child
    for child in children:
        if found := _holding_folder(child, expected, depth - 1):
            return found
    return None


def _checklist(root: Path, expected: Sequence[str]) -> list[str]:
    """One line per expected path under ``root``, marked ✓ (there) or ✗ (missing)."""
    return [f"  {'✓' if (root / rel).exists() else '✗'} {root / rel}" for rel in expected]


def _closing_lines(root: Path, expected_sets: Sequence[Sequence[str]], get_it: str) -> list[str]:
    """Where the files may be instead (a folder below ``root`` that holds one whole set of ``expected_sets``,
    else an archive left packed in ``root``), ``get_it``, and how to point the harness at the data."""
    lines = []
    if below := next(filter(None, (_holding_folder(root, rel) for rel in expected_sets)), None):
        lines.append(f"found them all in {below}: use dataset.root={below}")
    elif packed := _packed_archive(root):
        lines.append(packed)
    lines.append(f"{get_it} (nothing is downloaded for you) and unpack it there,")
    lines.append(f"or point to it: dataset.root=<path> on the command line / in the config, "
                 f"or set {DATA_ENV}=<dir> to move every '~/data/...' default "
                 f"(now {data_base()}).")
    return lines


def require(dataset: str, root: Path, expected: Sequence[str], *, source: str, extra: str = "") -> None:
    """Raise :class:`DatasetNotFoundError` unless every path in ``expected`` exists under ``root``.

    The message lists each expected path, marks the missing ones, says where
    the data comes from and how to point the harness at it.
    """
    if all((root / rel).exists() for rel in expected):
        return
    lines = [f"dataset '{dataset}' not found under {root}", "expected (missing marked with ✗):",
             *_checklist(root, expected), *_closing_lines(root, [expected], f"get it from {source}")]
    if extra:
        lines.append(extra)
    raise DatasetNotFoundError("\n".join(lines))


def find_root(cfg: Any, expected: Sequence[str], *, source: str,
              nested: str | None = None, marker: str | None = None) -> Path:
    """Resolve ``cfg.root`` and :func:`require` ``expected`` under it; the data's folder.

    With ``nested``, a root that holds the data one level down (``root/nested``
    is a directory and, where ``marker`` is given, ``root/marker`` is not) is
    taken to mean that folder, so the archive's parent works as a root too.
    """
    root = resolve_root(cfg.root)
    if nested is not None and (root / nested).is_dir() and (marker is None or not (root / marker).is_dir()):
        root = root / nested
    require(cfg.name, root, expected, source=source)
    return root


@dataclass(frozen=True)
class Layout:
    """One published on-disk layout of a dataset: a short stable ``name`` (it goes into the
    fingerprint), the paths it needs (``expected``, relative to its folder), what it is and where to
    get it (``source``), and the folder its archive unpacks to (``nested``): a root holding that
    folder means it, so the archive's parent works as a root too."""

    name: str
    expected: tuple[str, ...]
    source: str
    nested: str | None = None

    def folder(self, root: Path) -> Path:
        """Where this layout is looked for: ``root/nested`` when that is a folder, else ``root``."""
        return root / self.nested if self.nested and (root / self.nested).is_dir() else root

    def is_complete(self, folder: Path) -> bool:
        """Every expected path exists in ``folder``."""
        return all((folder / rel).exists() for rel in self.expected)


def _where_listed(root: Path, layout: Layout, layouts: Sequence[Layout]) -> Path:
    """Where a not-found message lists ``layout``'s files: its own folder under ``root``, or beside
    ``root`` when ``root`` is named after another layout's folder (the default ``cifar-10-batches-py``
    for the binary version's ``cifar-10-batches-bin``)."""
    if not layout.nested or root.name == layout.nested:
        return root
    if root.name in {other.nested for other in layouts}:
        return root.parent / layout.nested
    return root / layout.nested


def find_layout(cfg: Any, layouts: Sequence[Layout]) -> tuple[Path, Layout]:
    """Resolve ``cfg.root`` and the first of ``layouts`` complete there; (its folder, that layout).

    None complete: :class:`DatasetNotFoundError` listing every layout with its
    expected paths (missing marked) and where to get it.
    """
    root = resolve_root(cfg.root)
    for layout in layouts:
        if layout.is_complete(folder := layout.folder(root)):
            return folder, layout
    lines = [f"dataset '{cfg.name}' not found under {root}: none of the {len(layouts)} layouts it reads is "
             "complete (missing marked with ✗)"]
    for layout in layouts:
        nested = f" (the folder {layout.nested}/ or its parent as the root)" if layout.nested else ""
        lines.append(f"layout '{layout.name}'{nested}: {layout.source}")
        lines += _checklist(_where_listed(root, layout, layouts), layout.expected)
    lines += _closing_lines(root, [layout.expected for layout in layouts], "get one of them")
    raise DatasetNotFoundError("\n".join(lines))


def named_sets(cfg: Any) -> dict[str, str]:
    """``{"train": cfg.train_set, "test": cfg.test_set}`` without the ones set to "" (left out)."""
    return {split: s for split, s in (("train", cfg.train_set), ("test", cfg.test_set)) if s}


def check_eval_crop(name: str, eval_crop: float, image_size: Any) -> None:
    """``eval_crop`` is 0 (stretch) or a fraction in [0.5, 1], with a square ``image_size``."""
    if not (math.isfinite(eval_crop) and (eval_crop == 0 or 0.5 <= eval_crop <= 1)):
        raise ConfigError(f"{name}: eval_crop must be 0 (stretch to the square) or a fraction in [0.5, 1] of the "
                          f"resized shorter side (0.875: Resize(256) + CenterCrop(224)), got {eval_crop}")
    size = image_hw(image_size)
    if eval_crop and size[0] != size[1]:
        raise ConfigError(f"{name}: eval_crop takes a square image_size (the released centre crops are square), "
                          f"got {list(size)}")


def read_image(path: Path, size: tuple[int, int] | None, channels: int, centre_crop: float = 0.0) -> np.ndarray:
    """Decode one image file to uint8 ``(C, H, W)`` at ``size`` = (H, W) (``None``: the file's own size).

    ``centre_crop`` 0 stretches the whole image to ``size``; a fraction f in (0, 1] is torchvision's
    ``Resize(round(H / f))`` (the shorter side, the longer one truncated as torchvision does) then
    ``CenterCrop(H)`` of a square ``size``: the released test transforms (0.875 is 256 → 224).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if size is not None and centre_crop:
                im = _resize_shorter_and_centre_crop(im, size[0], centre_crop)
            elif size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetFormatError(f"image file {path} could not be decoded: {type(exc).__name__}: {exc} (copy it "
                                 "again; dataset.preload=true decodes every image before any work)") from exc
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _resize_shorter_and_centre_crop(im: Any, side: int, fraction: float) -> Any:
    """``T.CenterCrop(side)(T.Resize(round(side / fraction))(im))`` for a PIL image, as torchvision computes it."""
    from PIL import Image

    short = round(side / fraction)
    w, h = im.size
    size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    if size != (w, h):
        im = im.resize(size, Image.BILINEAR)
    w, h = im.size
    top, left = int(round((h - side) / 2.0)), int(round((w - side) / 2.0))
    return im.crop((left, top, left + side, top + side))


def class_split(labels: np.ndarray, train_classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of images whose class is / is not in ``train_classes`` (retrieval protocols)."""
    is_train = np.isin(labels, train_classes)
    return np.flatnonzero(is_train), np.flatnonzero(~is_train)


def check_protocol(name: str, protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{name}: protocol must be one of {PROTOCOLS}, got {protocol!r}")


def protocol_splits(protocol: str, labels: np.ndarray, n_classes: int,
                    test_flags: Callable[[], np.ndarray], class_list: str) -> dict[str, np.ndarray]:
    """Splits of a fine-grained set under ``protocol`` (see :data:`PROTOCOLS`).

    ``retrieval`` (Song et al. 2016): ``train`` = every image of the first
    ``n_classes // 2`` classes, ``novel`` = the rest. ``classification``: ``train`` /
    ``test`` from the published per-image test flags (read only in this case). A label outside
    ``0 … n_classes − 1`` (a class list cut short) is an error: the halves would be wrong.
    ``class_list``: where the ``n_classes`` names come from, for that message.
    """
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < n_classes:
        bad = int(labels.max()) if int(labels.max()) >= n_classes else int(labels.min())
        raise DatasetFormatError(f"an image has class {bad + 1} (1-based), but {class_list} names {n_classes} "
                                 "classes: is it cut short?")
    if protocol == "retrieval":
        train, novel = class_split(labels, np.arange(n_classes // 2))
        return {"train": train, "novel": novel}
    test = test_flags()
    return {"train": np.flatnonzero(~test), "test": np.flatnonzero(test)}


class RootedDataset(ImageDataset):
    """A dataset read from a folder: its fingerprint holds where the files are (:func:`canonical_root`),
    not how the path was spelt, and the :class:`Layout` read when it is not the dataset's original
    one (``layout_read``)."""

    #: The name of the layout read, set by a dataset that reads more than one; left out of the
    #: fingerprint for the original layout, so its caches keep their keys.
    layout_read: str | None = None

    def fingerprint_config(self) -> dict[str, Any]:
        cfg = super().fingerprint_config()
        if isinstance(cfg.get("root"), str):
            cfg["root"] = canonical_root(cfg["root"])
        if self.layout_read is not None:
            cfg["layout"] = self.layout_read
        return cfg

    def _find_layout(self, layouts: Sequence[Layout]) -> tuple[Path, Layout]:
        """:func:`find_layout` for this config, noting the layout read in the fingerprint unless it is
        the original one (``layouts[0]``): another layout of the same folder may list the images in
        another order, and the caches (decoded images, trained models) must not take one for the other."""
        folder, layout = find_layout(self.cfg, layouts)
        self.layout_read = None if layout == layouts[0] else layout.name
        return folder, layout


class FileImageDataset(RootedDataset):
    """A dataset whose images are files read lazily (see the module docstring).

    Subclasses call :meth:`_set_contents` (or :meth:`_set_files`) in ``__init__``;
    their config has ``root``, ``image_size``, ``preload`` and ``workers``.
    :meth:`load_image_list` decodes the files at their own size; a dataset with
    boxes gives them in those pixels through :meth:`_set_own_targets`.
    """

    READ_OPTIONS: ClassVar[tuple[str, ...]] = ("preload", "workers")

    def _set_contents(self, files: Sequence[Path], *, splits: dict[str, np.ndarray],
                      annotations: dict[str, np.ndarray], channels: int = 3, **info: Any) -> None:
        """Store the splits, annotations and image files, and ``info`` as the :class:`DatasetInfo`
        (``image_size`` from the config, ``channels`` as given)."""
        size = image_hw(self.cfg.image_size)
        self.splits, self.annotations = splits, annotations
        self._set_files(files, size=size, channels=channels)
        self.info = DatasetInfo(image_size=size, channels=channels, **info)

    def _set_files(self, paths: Sequence[Path], *, size: tuple[int, int], channels: int) -> None:
        self._paths = [Path(p) for p in paths]
        self._size, self._channels = size, channels
        self._preloaded: torch.Tensor | None = None
        self._preloaded_train_eval: torch.Tensor | None = None  # the train split centre-cropped (eval_crop)
        self._own_boxes: np.ndarray | None = None
        self._own_areas: list[np.ndarray] | None = None
        self._segmentations: list[list[Any]] | None = None
        self._ignore: list[np.ndarray] | None = None
        if getattr(self.cfg, "preload", False):
            self.preload()

    def file_problems(self) -> list[str]:
        """Splits that hold no image, and image files the index lists that are not there (without
        decoding: a corrupt image is found when it is read, or before any work with ``preload=true``)."""
        out = []
        if empty := sorted(name for name, idx in self.splits.items() if len(idx) == 0):
            out.append(f"its split(s) {', '.join(empty)} hold no images: their files are missing, or have "
                       "another name or extension than the published ones")
        if missing := missing_files(self._paths):
            shown = "".join(f"\n  ✗ {p}" for p in missing[:3]) + ("\n  …" if len(missing) > 3 else "")
            out.append(f"{len(missing):,} of the {len(self._paths):,} image files it lists are missing{shown}\n"
                       f"  ({missing_hint(missing[0])})")
        return out

    def preload(self) -> torch.Tensor:
        """Decode every image once into a cached uint8 tensor; later reads index it."""
        if self._preloaded is None:
            everything = np.arange(len(self._paths))
            data = cached_tensors("datasets", f"{self.name}-{self.fingerprint()}",
                                  lambda: {"images": self._decode(everything)})
            self._preloaded = data["images"]
        return self._preloaded

    def load_images(self, indices: np.ndarray) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self._preloaded is None:
            return self._decode(idx, evaluating=self.evaluating)
        out = self._preloaded[torch.from_numpy(idx)]
        if not (self.evaluating and self._eval_crop()):
            return out
        train = self._train_indices()
        rows = np.flatnonzero(np.isin(idx, train))
        if len(rows):  # training images as an evaluation reads them: the second cached tensor
            if self._preloaded_train_eval is None:
                self._preloaded_train_eval = cached_tensors(
                    "datasets", f"{self.name}-{self.fingerprint()}-train-eval",
                    lambda: {"images": self._decode(train, evaluating=True)})["images"]
            at = torch.from_numpy(np.searchsorted(train, idx[rows]))
            out[torch.from_numpy(rows)] = self._preloaded_train_eval[at]
        return out

    def _eval_crop(self) -> float:
        return float(getattr(self.cfg, "eval_crop", 0.0) or 0.0)

    def _train_indices(self) -> np.ndarray:
        """The ``train`` split's indices, sorted."""
        return np.sort(getattr(self, "splits", {}).get("train", np.empty(0, np.int64)))

    def _decode(self, idx: np.ndarray, *, evaluating: bool = False) -> torch.Tensor:
        """Decode the files at ``idx``: with ``eval_crop``, centre-cropped outside the ``train`` split,
        and everywhere when ``evaluating``."""
        out = np.empty((len(idx), self._channels, *self._size), dtype=np.uint8)
        crop = self._eval_crop()
        if evaluating or not crop:
            crops = np.full(len(idx), crop)
        else:
            crops = np.where(np.isin(idx, self._train_indices()), 0.0, crop)

        def one(j: int) -> None:
            out[j] = read_image(self._paths[idx[j]], self._size, self._channels, crops[j])

        self._each(one, len(idx))
        return torch.from_numpy(out)

    def _each(self, fn: Callable[[int], None], n: int) -> None:
        """``fn(0) … fn(n - 1)`` on ``workers`` threads (capped at half the CPUs), else in this thread."""
        workers = min(int(getattr(self.cfg, "workers", 0) or 0), (os.cpu_count() or 1) // 2)
        if workers > 1 and n > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(fn, range(n)))
        else:
            for j in range(n):
                fn(j)

    # -- images at their own size (detection) ---------------------------------------------
    def _set_own_targets(self, boxes: Sequence[np.ndarray], *, sizes: Sequence[tuple[int, int]],
                         areas: Sequence[np.ndarray] | None = None,
                         segmentations: Sequence[list[Any]] | None = None,
                         ignore: Sequence[np.ndarray] | None = None) -> None:
        """Per image, its boxes (``x1 y1 x2 y2 class``) in the file's own pixels, its (height, width)
        as the annotation file gives it, optionally each object's area, its COCO
        ``segmentation`` (polygons or RLE) and whether the evaluation ignores it, one per box row."""
        from harness.plugins.datasets._boxes import object_array

        self._own_boxes = object_array(boxes)
        self._own_hw = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        self._own_areas = None if areas is None else [np.asarray(a, dtype=np.float64) for a in areas]
        self._segmentations = None if segmentations is None else [list(s) for s in segmentations]
        self._ignore = None if ignore is None else [np.asarray(g, dtype=bool).reshape(-1) for g in ignore]

    @property
    def instance_masks(self) -> bool:  # type: ignore[override]
        return self._segmentations is not None

    def load_image_list(self, indices: np.ndarray) -> list[torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out: list[Any] = [None] * len(idx)

        def one(j: int) -> None:
            out[j] = torch.from_numpy(read_image(self._paths[idx[j]], None, self._channels).copy())

        self._each(one, len(idx))
        return out

    def image_list_targets(self, indices: np.ndarray, *, masks: bool = False) -> list[dict[str, Any]]:
        if self._own_boxes is None:
            return super().image_list_targets(indices, masks=masks)  # no boxes: its error says so
        if masks and self._segmentations is None:
            from harness.errors import Incompatible

            raise Incompatible(f"dataset '{self.name}' has no instance masks (Mask R-CNN needs them); "
                               "use detector=faster_rcnn")
        out = []
        for i in np.asarray(indices, dtype=np.int64).reshape(-1):
            b = self._own_boxes[i]
            area = (self._own_areas[i] if self._own_areas is not None
                    else ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).astype(np.float64))
            target: dict[str, Any] = {"boxes": b, "area": area}
            if self._ignore is not None:
                target["ignore"] = self._ignore[i]
            if masks:
                assert self._segmentations is not None
                h, w = (int(v) for v in self._own_hw[i])
                target["masks"] = segmentation_masks(self._segmentations[i], h, w)
            out.append(target)
        return out


def segmentation_masks(segmentations: Sequence[Any], h: int, w: int) -> torch.Tensor:
    """COCO ``segmentation`` entries (polygon lists, RLE dicts) → bool masks ``(k, h, w)``.

    Polygons are rasterised and merged as ``pycocotools``' ``annToMask`` does
    (faster-coco-eval's ``segmToRle``, the same C code).
    """
    if not len(segmentations):
        return torch.zeros((0, h, w), dtype=torch.bool)
    from faster_coco_eval.core import mask as mask_utils

    rles = [mask_utils.segmToRle(s, w, h) for s in segmentations]
    return torch.from_numpy(mask_utils.decode(rles).astype(bool)).permute(2, 0, 1).contiguous()


class ArrayImageDataset(RootedDataset):
    """A dataset held in memory as uint8 ``(N, C, h, w)``, resized per batch to ``image_size``."""

    def _set_array(self, images: torch.Tensor, *, size: tuple[int, int]) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
        self._images, self._size = images, size

    def _set_labelled(self, images: torch.Tensor, labels: np.ndarray, n_classes: int, *,
                      n_train: int | None = None) -> None:
        """Store ``images`` (resized to the config's ``image_size``) and the ``train`` / ``test`` splits.

        With ``n_train`` the first ``n_train`` images are ``train`` and the rest
        ``test`` (a published split); without, a seeded stratified
        ``cfg.test_fraction`` is ``test`` (:func:`stratified_split`). The config's
        ``novel_classes`` then move into a ``novel`` split (:func:`hold_out_classes`).
        """
        c = self.cfg
        self._set_array(images, size=image_hw(c.image_size))
        if n_train is None:
            train, test = stratified_split(labels, c.test_fraction, c.seed)
        else:
            train, test = np.arange(n_train), np.arange(n_train, len(labels))
        self.splits = hold_out_classes({"train": train, "test": test}, labels, c.novel_classes, n_classes)

    def load_images(self, indices: np.ndarray) -> torch.Tensor:
        from harness.data import conform_images

        batch = self._images[torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))]
        if tuple(batch.shape[-2:]) != self._size:
            batch = conform_images(batch, channels=batch.shape[1], size=self._size)
        return batch


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded random ``test_fraction`` of the images (rounded) goes to test; sorted indices."""
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        k = int(round(len(members) * test_fraction))
        test.append(rng.permutation(members)[:k])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def hold_out_classes(splits: dict[str, np.ndarray], labels: np.ndarray,
                     novel_classes: Sequence[int], n_classes: int) -> dict[str, np.ndarray]:
    """Move every image of ``novel_classes`` out of the splits into a ``novel`` split."""
    novel_classes = [int(c) for c in novel_classes]
    if not novel_classes:
        return splits
    bad = [c for c in novel_classes if not 0 <= c < n_classes]
    if bad:
        raise ConfigError(f"novel_classes {bad} out of range: classes are 0..{n_classes - 1}")
    if len(set(novel_classes)) >= n_classes:
        raise ConfigError("novel_classes may not hold every class (nothing would be left to train on)")
    is_novel = np.isin(labels, novel_classes)
    out = {k: v[~is_novel[v]] for k, v in splits.items()}
    out["novel"] = np.flatnonzero(is_novel)
    return out
