"""Loaders of real benchmarks, on tiny fake trees in each dataset's published layout (hand-written expectations)."""

from __future__ import annotations

import gzip
import json
import shutil
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import ConfigError, DatasetFormatError, DatasetNotFoundError
from harness.registry import create


def _img(path: Path, value: int, size=(12, 10), mode="RGB") -> None:
    """A flat image whose every pixel is ``value`` (so a load can be traced back to its file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (value, value, value) if mode == "RGB" else value
    # JPEG for .jpg (as published; a flat image survives at quality 100), PNG for anything else
    Image.new(mode, size, colour).save(path, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=100)


def _values(ds, idx=None) -> list[int]:
    """The flat value of each loaded image (checks they are flat, i.e. come from one _img file)."""
    idx = np.arange(len(ds)) if idx is None else np.asarray(idx)
    images = ds.load_images(idx).int()
    out = []
    for im in images:
        assert int(im.max()) - int(im.min()) <= 2
        out.append(int(round(im.float().mean().item())))
    return out


# -- shared machinery ----------------------------------------------------------------------
def test_resolve_root_uses_harness_data(monkeypatch, tmp_path):
    from harness.plugins.datasets._folder import resolve_root

    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    assert resolve_root("~/data/CUB_200_2011") == tmp_path / "CUB_200_2011"
    assert resolve_root("~/data") == tmp_path
    assert resolve_root(str(tmp_path / "x")) == tmp_path / "x"
    monkeypatch.delenv("HARNESS_DATA")
    assert resolve_root("~/data/CUB_200_2011") == Path.home() / "data" / "CUB_200_2011"
    monkeypatch.setenv("MYDATA", "/srv/d")
    assert resolve_root("$MYDATA/cars") == Path("/srv/d/cars")


def test_image_hw():
    from harness.config import image_hw

    assert image_hw(32) == (32, 32) and image_hw([256, 128]) == (256, 128) and image_hw((5, 7)) == (5, 7)
    for bad in ([1, 2, 3], "32", 0, True):
        with pytest.raises(ConfigError):
            image_hw(bad)


def test_stratified_split_and_hold_out():
    from harness.plugins.datasets._folder import hold_out_classes, stratified_split

    labels = np.array([0] * 10 + [1] * 5 + [2] * 4)
    train, test = stratified_split(labels, 0.2, 0)
    assert np.array_equal(np.bincount(labels[test]), [2, 1, 1])  # round(10·.2), round(5·.2), round(4·.2)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 19
    out = hold_out_classes({"train": train, "test": test}, labels, [2], 3)
    assert np.array_equal(out["novel"], np.arange(15, 19))
    assert set(labels[out["train"]]) == {0, 1} and set(labels[out["test"]]) == {0, 1}
    with pytest.raises(ConfigError, match="every class"):
        hold_out_classes({"train": train}, labels, [0, 1, 2], 3)


def test_box_helpers():
    from harness.plugins.datasets._boxes import largest_box_label, scale_boxes

    b = np.array([[10, 20, 30, 40, 3], [0, 0, 5, 5, 1]], np.float32)
    s = scale_boxes(b, (100, 50), (25, 50))  # 100 wide × 50 high → 25 high × 50 wide: x × .5, y × .5
    assert np.allclose(s, [[5, 10, 15, 20, 3], [0, 0, 2.5, 2.5, 1]])
    assert largest_box_label(b) == 3 and largest_box_label(np.zeros((0, 5))) == -1


def test_file_dataset_preload_and_workers(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)  # lift the half-the-CPUs cap so threads really run
    root = _cub_tree(tmp_path)
    lazy = create("dataset", "cub200", root=str(root), image_size=8, workers=0)
    threaded = create("dataset", "cub200", root=str(root), image_size=8, workers=3)
    pre = create("dataset", "cub200", root=str(root), image_size=8, preload=True)
    everything = np.arange(len(lazy))
    assert torch.equal(lazy.load_images(everything), threaded.load_images(everything))
    assert torch.equal(lazy.load_images(everything), pre.load_images(everything))
    assert lazy.fingerprint() == pre.fingerprint() == threaded.fingerprint()  # read options are not data
    assert lazy.fingerprint() != create("dataset", "cub200", root=str(root), image_size=9).fingerprint()


# -- CUB-200-2011 ---------------------------------------------------------------------------
def _cub_tree(tmp_path: Path) -> Path:
    root = tmp_path / "CUB_200_2011"
    classes = ["001.Albatross", "002.Auklet", "003.Blackbird", "004.Bunting"]
    # image ids deliberately out of order in images.txt; class of image i listed separately
    entries = [(3, "002.Auklet/a_3.jpg", 2, 0), (1, "001.Albatross/a_1.jpg", 1, 1), (2, "001.Albatross/a_2.jpg", 1, 0),
               (4, "003.Blackbird/b_4.jpg", 3, 1), (5, "004.Bunting/b_5.jpg", 4, 1), (6, "004.Bunting/b_6.jpg", 4, 0)]
    root.mkdir(parents=True)
    (root / "images.txt").write_text("".join(f"{i} {p}\n" for i, p, _, _ in entries))
    (root / "image_class_labels.txt").write_text("".join(f"{i} {k}\n" for i, _, k, _ in entries))
    (root / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in entries))
    (root / "classes.txt").write_text("".join(f"{k + 1} {n}\n" for k, n in enumerate(classes)))
    for i, p, _, _ in entries:
        _img(root / "images" / p, 10 * i)
    return root


def test_cub200(tmp_path):
    root = _cub_tree(tmp_path)
    ds = create("dataset", "cub200", root=str(root), image_size=[6, 5])
    # sorted by image id: 1, 2 (class 0), 3 (class 1), 4 (class 2), 5, 6 (class 3)
    assert list(ds.annotations["label"]) == [0, 0, 1, 2, 3, 3]
    assert _values(ds) == [10, 20, 30, 40, 50, 60]
    assert tuple(ds.load_images(np.array([0])).shape) == (1, 3, 6, 5)
    assert list(ds.split("train")) == [0, 1, 2] and list(ds.split("novel")) == [3, 4, 5]  # classes 1–2 | 3–4
    assert ds.info.class_names == ["001.Albatross", "002.Auklet", "003.Blackbird", "004.Bunting"]
    cls = create("dataset", "cub200", root=str(root), protocol="classification", image_size=4)
    assert list(cls.split("train")) == [0, 3, 4] and list(cls.split("test")) == [1, 2, 5]  # is_training 1: ids 1, 4, 5
    with pytest.raises(ConfigError, match="protocol"):
        create("dataset", "cub200", root=str(root), protocol="zero_shot")


@pytest.mark.parametrize("fraction, side", [(0.875, 24), (84 / 92, 84), (1.0, 20), (227 / 256, 227)])
@pytest.mark.parametrize("hw, mode", [((37, 50), "RGB"), ((61, 29), "L"), ((40, 40), "RGB")])
def test_eval_crop_is_torchvisions_resize_and_centre_crop(tmp_path, fraction, side, hw, mode):
    """The released test transforms, T.Resize(round(side / f)) + T.CenterCrop(side), by torchvision itself."""
    import torchvision.transforms as T

    from harness.plugins.datasets._folder import read_image

    rng = np.random.default_rng(side)
    shape = (*hw, 3) if mode == "RGB" else hw
    path = tmp_path / "x.png"
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    ours = read_image(path, (side, side), 3 if mode == "RGB" else 1, centre_crop=fraction)
    with Image.open(path) as im:
        ref = np.asarray(T.CenterCrop(side)(T.Resize(round(side / fraction))(im.convert(mode))), dtype=np.uint8)
    assert np.array_equal(ours, ref[None] if mode == "L" else ref.transpose(2, 0, 1))


def test_eval_crop_reads_the_evaluated_images_cropped_and_the_training_steps_images_stretched(tmp_path):
    root = _cub_tree(tmp_path)
    rng = np.random.default_rng(0)
    for path in (root / "images").rglob("*.jpg"):  # wide images with structure, as PNG bytes under the .jpg names
        Image.fromarray(rng.integers(0, 256, (30, 48, 3), dtype=np.uint8)).save(path, format="PNG")
    plain = create("dataset", "cub200", root=str(root), image_size=16)
    cropped = create("dataset", "cub200", root=str(root), image_size=16, eval_crop=0.875)
    train, novel = cropped.split("train"), cropped.split("novel")
    assert torch.equal(cropped.load_images(train), plain.load_images(train))  # training images: stretched
    from harness.plugins.datasets._folder import read_image

    for i in novel:
        want = read_image(cropped._paths[i], (16, 16), 3, centre_crop=0.875)
        assert np.array_equal(cropped.load_images(np.array([i]))[0].numpy(), want)
    assert not torch.equal(cropped.load_images(novel), plain.load_images(novel))
    assert cropped.fingerprint() != plain.fingerprint()
    for bad in (1.5, 0.1, float("nan")):  # 0.1 would ask for a 160-px shorter side to crop 16 px from
        with pytest.raises(ConfigError, match=r"eval_crop must be 0 \(stretch to the square\) or a fraction in \[0.5, 1\]"):
            create("dataset", "cub200", root=str(root), eval_crop=bad)
    preloaded = create("dataset", "cub200", root=str(root), image_size=16, eval_crop=0.875, preload=True)
    everything = np.arange(len(cropped))
    assert torch.equal(preloaded.load_images(everything), cropped.load_images(everything))
    # an evaluation (the prototypes of ood and hierarchy, state.embed_train) reads the training images cropped too
    want = np.stack([read_image(cropped._paths[i], (16, 16), 3, centre_crop=0.875) for i in everything])
    for ds in (cropped, preloaded):
        mixed = np.array([train[-1], novel[0], train[0]])
        with ds.reading_for_evaluation():
            assert ds.evaluating
            assert np.array_equal(ds.load_images(everything).numpy(), want)
            assert np.array_equal(ds.load_images(mixed).numpy(), want[mixed])
        assert not ds.evaluating and torch.equal(ds.load_images(train), plain.load_images(train))
    with pytest.raises(ConfigError, match="eval_crop takes a square image_size"):
        create("dataset", "cub200", root=str(root), image_size=[16, 8], eval_crop=0.875)


def _problems(ds) -> str:
    return "\n".join(ds.file_problems())


def test_listed_images_that_are_missing_are_found_before_any_work_with_why(tmp_path):
    root = _cub_tree(tmp_path)
    assert create("dataset", "cub200", root=str(root)).file_problems() == []
    (root / "images" / "004.Bunting" / "b_6.jpg").unlink()
    assert _problems(create("dataset", "cub200", root=str(root))) == (
        f"1 of the 6 image files it lists are missing\n  ✗ {root / 'images/004.Bunting/b_6.jpg'}\n"
        f"  (the deepest folder of that path that exists is {root / 'images/004.Bunting'})")
    # a folder renamed in another case: names are case-sensitive
    (root / "images" / "001.Albatross").rename(root / "images" / "001.albatross")
    problems = _problems(create("dataset", "cub200", root=str(root)))
    assert problems.startswith("3 of the 6 image files it lists are missing")
    assert f"({root / 'images/001.albatross'} exists: names are case-sensitive)" in problems
    # the images still in their archive
    shutil.rmtree(root / "images")
    (root / "images").mkdir()
    (root / "images" / "CUB_images.tgz").write_bytes(b"")
    assert f"({root / 'images'} holds CUB_images.tgz: extract it there)" in _problems(
        create("dataset", "cub200", root=str(root)))


def test_a_split_without_images_is_a_problem_before_any_work(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    for folder, name in (("bounding_box_train", "0002_c1s1_000451_03.jpg"), ("bounding_box_test", "0003_c2s1_000001_01.jpg")):
        _img(root / folder / name, 10)
    (root / "query").mkdir()
    assert _problems(create("dataset", "market1501", root=str(root))).startswith(
        "its split(s) query hold no images: their files are missing, or have another name or extension")


def test_cub_index_files_cut_short_are_errors_that_name_the_file(tmp_path):
    root = _cub_tree(tmp_path)
    classes = (root / "classes.txt").read_text().splitlines()
    (root / "classes.txt").write_text("\n".join(classes[:2]) + "\n")  # 4 classes, 2 named
    with pytest.raises(DatasetFormatError, match=r"an image has class 4 \(1-based\), but .*classes.txt names 2 "):
        create("dataset", "cub200", root=str(root))
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    labels = (root / "image_class_labels.txt").read_text().splitlines()
    (root / "image_class_labels.txt").write_text("\n".join(labels[:-1]) + "\n")  # the last row (image 6) cut
    with pytest.raises(DatasetFormatError, match=r"image_class_labels.txt has no row for 1 image id\(s\) listed in "
                                                 r"images.txt, e.g. 6"):
        create("dataset", "cub200", root=str(root))
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    images = (root / "images.txt").read_text()
    (root / "images.txt").write_text(images[:images.index("\n5 ")])  # cut after image 4
    with pytest.raises(DatasetFormatError, match=r"images.txt lists 4 images, .*image_class_labels.txt has labels for "
                                                 r"6: image ids \[5, 6\] have no path \(images.txt cut short\?\)"):
        create("dataset", "cub200", root=str(root))
    (root / "images.txt").write_text(images)
    (root / "train_test_split.txt").write_text("1 1\n2\n")
    with pytest.raises(DatasetFormatError, match=r"train_test_split.txt, line 2: 1 column\(s\), expected 2"):
        create("dataset", "cub200", root=str(root))


def test_an_undecodable_image_is_an_error_that_names_the_file(tmp_path):
    root = _cub_tree(tmp_path)
    bad = root / "images" / "001.Albatross" / "a_2.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated JPEG
    ds = create("dataset", "cub200", root=str(root), image_size=4)
    with pytest.raises(DatasetFormatError, match=f"image file {bad} could not be decoded: OSError"):
        ds.load_images(np.arange(len(ds)))
    bad.write_text("not an image")
    with pytest.raises(DatasetFormatError, match="UnidentifiedImageError"):
        ds.load_images(np.array([1]))


def test_one_folder_spelt_two_ways_has_one_fingerprint(tmp_path, monkeypatch):
    root = _cub_tree(tmp_path)
    (tmp_path / "link").symlink_to(root)
    spellings = [str(root), str(root) + "/", str(tmp_path / "link"), str(root / "images" / ".."),
                 "CUB_200_2011"]
    monkeypatch.chdir(tmp_path)  # the relative spelling, from the folder above
    prints = {create("dataset", "cub200", root=r, image_size=4).fingerprint() for r in spellings}
    assert len(prints) == 1
    other = tmp_path / "elsewhere"
    shutil.copytree(root, other / "CUB_200_2011")
    monkeypatch.chdir(other)  # the same relative spelling names other files: another fingerprint
    assert create("dataset", "cub200", root="CUB_200_2011", image_size=4).fingerprint() not in prints


def test_a_coco_annotation_of_an_unlisted_category_names_the_file(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.jpg", "width": 4, "height": 4}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 99, "bbox": [0, 0, 2, 2]}],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}))
    with pytest.raises(DatasetFormatError, match="instances_val2017.json: annotation 5 has category_id 99, which "
                                                 "the categories do not list"):
        create("dataset", "coco", root=str(root), train_set="")
    (root / "annotations" / "instances_val2017.json").write_text('{"images": [')
    with pytest.raises(DatasetFormatError, match="instances_val2017.json could not be read as a COCO instances "
                                                 "file: JSONDecodeError"):
        create("dataset", "coco", root=str(root), train_set="")


def test_missing_root_says_what_is_expected_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError) as err:
        create("dataset", "cub200")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "CUB_200_2011" / "images.txt") in msg
    assert "image_class_labels.txt" in msg and "train_test_split.txt" in msg and "classes.txt" in msg
    assert "HARNESS_DATA" in msg and "dataset.root" in msg
    # a partial tree marks only what is missing
    root = _cub_tree(tmp_path)
    (root / "classes.txt").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        create("dataset", "cub200", root=str(root))
    assert f"✗ {root / 'classes.txt'}" in str(err.value) and f"✓ {root / 'images.txt'}" in str(err.value)
    # a root one or two folders too high: the folder that holds the files is named
    (root / "classes.txt").write_text("1 a\n2 b\n3 c\n4 d\n")
    with pytest.raises(DatasetNotFoundError, match=f"found them all in {root}: use dataset.root={root}\n"):
        create("dataset", "cub200", root=str(tmp_path))
    # the archive, not extracted
    (tmp_path / "packed").mkdir()
    (tmp_path / "packed" / "CUB_200_2011.tgz").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="packed holds CUB_200_2011.tgz: extract it there"):
        create("dataset", "cub200", root=str(tmp_path / "packed"))


@pytest.mark.parametrize("name", ["cars196", "sop", "market1501", "mini_imagenet", "omniglot", "coco",
                                  "voc2007", "cifar10", "cifar100", "mnist"])
def test_every_loader_reports_a_missing_root(name, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="dataset.root") as err:
        create("dataset", name, root=str(tmp_path / "missing"))
    assert str(tmp_path / "missing") in str(err.value)


@pytest.mark.parametrize("name, first", [
    ("cars196", {"cars_annos": "cars_annos.mat", "torchvision": "stanford_cars/devkit/cars_meta.mat"}),
    ("mini_imagenet", {"ravi": "train.csv", "feat": "split/train.csv"}),
    ("cifar10", {"python": "cifar-10-batches-py/data_batch_1", "binary": "cifar-10-batches-bin/data_batch_1.bin"}),
    ("cifar100", {"python": "cifar-100-python/train", "binary": "cifar-100-binary/train.bin"})])
def test_a_missing_dataset_lists_every_layout_it_reads(name, first, tmp_path):
    """Each layout with its expected paths (``first``: its first one, in the folder its archive unpacks to)
    and where to get it."""
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        create("dataset", name, root=str(tmp_path))
    msg = str(err.value)
    assert msg.startswith(f"dataset '{name}' not found under {tmp_path}: none of the 2 layouts it reads is complete")
    for layout, path in first.items():
        assert f"\nlayout '{layout}'" in msg and f"\n  ✗ {tmp_path / path}\n" in msg
    assert msg.count("https://") >= 2 and "dataset.root=<path>" in msg
    if name == "mini_imagenet":  # what is there is marked, in both layouts
        assert msg.count(f"✓ {tmp_path / 'images'}\n") == 2
    # a root named after one layout's folder lists the other's beside it, not inside it
    if name == "cifar10":
        with pytest.raises(DatasetNotFoundError) as err:
            create("dataset", name, root=str(tmp_path / "cifar-10-batches-py"))
        assert f"\n  ✗ {tmp_path / 'cifar-10-batches-bin' / 'data_batch_1.bin'}\n" in str(err.value)
    # the second layout one folder too deep is found
    if name == "cifar10":
        _cifar10_binary(tmp_path / "downloads" / "cifar-10-batches-bin")
        with pytest.raises(DatasetNotFoundError, match="found them all in .*downloads/cifar-10-batches-bin: use "):
            create("dataset", name, root=str(tmp_path))


# -- Cars-196 --------------------------------------------------------------------------------
CAR_NAMES = ["AM General Hummer", "Acura RL", "Acura TL", "Acura TSX"]
#: (image number, class 1-based, test flag); image n's pixels are all 7·n
CAR_ROWS = [(1, 1, 0), (2, 3, 1), (3, 2, 1), (4, 4, 0), (5, 3, 0)]


def _mat_struct(fields: list[str], rows: list[tuple]) -> np.ndarray:
    """A 1×n MATLAB struct array (as savemat writes one) with one element per row."""
    out = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for j, row in enumerate(rows):
        out[0, j] = row
    return out


def _mat_cell(values: list[str]) -> np.ndarray:
    out = np.empty((1, len(values)), dtype=object)
    out[0] = values
    return out


def _cars_annos_tree(root: Path) -> Path:
    """:data:`CAR_ROWS` in the devkit's cars_annos.mat layout (images in image-number order)."""
    from scipy.io import savemat

    rows = [(f"car_ims/{n:06d}.jpg", 1, 1, 5, 5, k, t) for n, k, t in CAR_ROWS]
    for (n, _, _), row in zip(CAR_ROWS, rows):
        _img(root / row[0], 7 * n)
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    savemat(root / "cars_annos.mat", {"annotations": _mat_struct(fields, rows), "class_names": _mat_cell(CAR_NAMES)})
    return root


def _cars_torchvision_tree(folder: Path) -> Path:
    """:data:`CAR_ROWS` in torchvision's StanfordCars layout: train and test files each number their images
    from 00001.jpg (so a name is in both folders), the test file lists its images last-first."""
    from scipy.io import savemat

    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    (folder / "devkit").mkdir(parents=True)
    for test, images, annos_file in ((0, "cars_train", "devkit/cars_train_annos.mat"),
                                     (1, "cars_test", "cars_test_annos_withlabels.mat")):
        members = [(n, k) for n, k, t in CAR_ROWS if t == test][::1 if test == 0 else -1]
        rows = []
        for j, (n, k) in enumerate(members):
            rows.append((1, 1, 5, 5, k, f"{j + 1:05d}.jpg"))
            _img(folder / images / rows[-1][-1], 7 * n)
        savemat(folder / annos_file, {"annotations": _mat_struct(fields, rows)})
    savemat(folder / "devkit" / "cars_meta.mat", {"class_names": _mat_cell(CAR_NAMES)})
    return folder


def test_cars196(tmp_path):
    root = _cars_annos_tree(tmp_path / "cars")
    ds = create("dataset", "cars196", root=str(root), image_size=4)
    assert list(ds.annotations["label"]) == [0, 2, 1, 3, 2]
    assert _values(ds) == [7, 14, 21, 28, 35]
    assert list(ds.split("train")) == [0, 2] and list(ds.split("novel")) == [1, 3, 4]  # classes 1–2 | 3–4
    assert ds.info.class_names[1] == "Acura RL"
    cls = create("dataset", "cars196", root=str(root), protocol="classification", image_size=4)
    assert list(cls.split("train")) == [0, 3, 4] and list(cls.split("test")) == [1, 2]


def _by_image(ds, split: str) -> list[tuple[int, int]]:
    """(pixel value, label) of each image of ``split``, sorted: what a split holds, whatever the order."""
    idx = ds.split(split)
    return sorted(zip(_values(ds, idx), ds.annotations["label"][idx].tolist()))


def test_cars196_torchvision_layout_gives_the_cars_annos_data(tmp_path):
    old = _cars_annos_tree(tmp_path / "cars")
    _cars_torchvision_tree(tmp_path / "tv" / "stanford_cars")
    for protocol, splits in (("retrieval", ("train", "novel")), ("classification", ("train", "test"))):
        a = create("dataset", "cars196", root=str(old), image_size=4, protocol=protocol)
        # the folder holding stanford_cars/, as torchvision's root
        b = create("dataset", "cars196", root=str(tmp_path / "tv"), image_size=4, protocol=protocol)
        assert b.info.class_names == a.info.class_names == CAR_NAMES
        assert set(b.splits) == set(splits) and all(_by_image(b, s) == _by_image(a, s) for s in splits)
    # the train file's images (numbers 1, 4, 5), then the test file's (listed last-first: 3, 2)
    assert _values(b) == [7, 28, 35, 21, 14] and list(b.annotations["label"]) == [0, 3, 2, 1, 2]
    assert list(b.split("train")) == [0, 1, 2] and list(b.split("test")) == [3, 4]
    # another image order: another fingerprint, also for one folder holding both layouts
    assert "layout" not in a.fingerprint_config() and b.fingerprint_config()["layout"] == "torchvision"
    # Kaggle's copy unpacks the images one folder deeper (cars_train/cars_train/…): read as they are
    kaggle = _cars_torchvision_tree(tmp_path / "kaggle")
    for images in ("cars_train", "cars_test"):
        (kaggle / images).rename(kaggle / "tmp")
        (kaggle / images).mkdir()
        (kaggle / "tmp").rename(kaggle / images / images)
    deeper = create("dataset", "cars196", root=str(kaggle), image_size=4)
    assert _values(deeper) == [7, 28, 35, 21, 14] and deeper.file_problems() == []
    both = _cars_torchvision_tree(tmp_path / "both")
    tv_only = create("dataset", "cars196", root=str(both), image_size=4).fingerprint()
    _cars_annos_tree(both)
    assert create("dataset", "cars196", root=str(both), image_size=4).fingerprint() != tv_only


# -- Stanford Online Products -------------------------------------------------------------------
def test_sop(tmp_path):
    root = tmp_path / "Stanford_Online_Products"
    train = [(1, 1, 1, "bicycle_final/111_0.JPG"), (2, 1, 1, "bicycle_final/111_1.JPG"),
             (3, 2, 3, "chair_final/222_0.JPG")]
    test = [(4, 3, 2, "cabinet_final/333_0.JPG"), (5, 4, 3, "chair_final/444_0.JPG")]
    for fname, rows in (("Ebay_train.txt", train), ("Ebay_test.txt", test)):
        root.mkdir(exist_ok=True)
        (root / fname).write_text("image_id class_id super_class_id path\n"
                                  + "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in rows))
        for a, _, _, d in rows:
            _img(root / d, 11 * a)
    ds = create("dataset", "sop", root=str(root), image_size=5)
    assert list(ds.annotations["label"]) == [0, 0, 1, 2, 3]
    assert list(ds.annotations["coarse_label"]) == [0, 0, 2, 1, 2]
    assert list(ds.split("train")) == [0, 1, 2] and list(ds.split("novel")) == [3, 4]
    assert ds.info.coarse_names == ["bicycle", "cabinet", "chair"]
    assert _values(ds) == [11, 22, 33, 44, 55]


# -- Market-1501 ------------------------------------------------------------------------------
def test_market1501(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    files = {"bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c1s1_000151_01.jpg"],
             "bounding_box_test": ["0000_c1s1_000001_01.jpg", "-1_c3s1_000001_00.jpg", "0003_c2s1_000001_01.jpg",
                                   "0003_c3s1_000101_01.jpg"],
             "query": ["0003_c1s1_000201_00.jpg"]}
    value = 10
    for folder, names in files.items():
        for n in names:
            _img(root / folder / n, value, size=(8, 16))
            value += 10
    ds = create("dataset", "market1501", root=str(tmp_path))  # the parent folder works too
    a = ds.annotations
    # order: train (sorted), test (sorted, junk −1 dropped), query
    assert list(a["pid"]) == [2, 2, 7, 0, 3, 3, 3]
    assert list(a["camid"]) == [0, 1, 0, 0, 1, 2, 0]
    assert list(a["label"]) == [0, 0, 1, 2, 3, 3, 3]  # train pids 2, 7 → 0, 1; then 0, 3 → 2, 3
    assert list(a["is_query"]) == [False] * 6 + [True]
    assert list(ds.split("train")) == [0, 1, 2] and list(ds.split("gallery")) == [3, 4, 5]
    assert list(ds.split("query")) == [6] and list(ds.split("novel")) == [4, 5, 6]
    # sorted test folder: "-1_…" (junk, value 50) < "0000_…" (40) < "0003_c2" (60) < "0003_c3" (70)
    assert _values(ds) == [10, 20, 30, 40, 60, 70, 80]
    assert tuple(ds.load_images(np.array([0])).shape) == (1, 3, 256, 128)


def test_market_file_names():
    from harness.plugins.datasets.market1501 import parse_market_name

    assert parse_market_name("0002_c1s1_000451_03.jpg") == (2, 0)
    assert parse_market_name("-1_c6s2_000001_00.jpg") == (-1, 5)
    with pytest.raises(ValueError, match="Market-1501 file name"):
        parse_market_name("person.jpg")


# -- miniImageNet --------------------------------------------------------------------------------
MINI_SPLITS = {"train.csv": [("n01.jpg", "n01532829"), ("n02.jpg", "n02074367"), ("n03.jpg", "n01532829")],
               "val.csv": [("v1.jpg", "n01855672")], "test.csv": [("t1.jpg", "n01930112"), ("t2.jpg", "n01981276")]}


def _mini_tree(root: Path, csv_folder: str = "") -> Path:
    """:data:`MINI_SPLITS` with images/ in ``root``, the CSVs in ``root/csv_folder``; pixels 5, 10, … in CSV order."""
    value = 5
    (root / csv_folder).mkdir(parents=True, exist_ok=True)
    for csv_name, rows in MINI_SPLITS.items():
        (root / csv_folder / csv_name).write_text("filename,label\n" + "".join(f"{f},{w}\n" for f, w in rows))
        for f, _ in rows:
            _img(root / "images" / f, value)
            value += 5
    return root


def test_mini_imagenet(tmp_path):
    root = _mini_tree(tmp_path / "miniImageNet")
    ds = create("dataset", "mini_imagenet", root=str(root), image_size=6)
    assert list(ds.annotations["label"]) == [0, 1, 0, 2, 3, 4]
    assert ds.info.class_names == ["n01532829", "n02074367", "n01855672", "n01930112", "n01981276"]
    assert list(ds.split("train")) == [0, 1, 2] and list(ds.split("val")) == [3]
    assert list(ds.split("novel")) == [4, 5]
    assert _values(ds) == [5, 10, 15, 20, 25, 30]
    (root / "val.csv").write_text("file,label\nv1.jpg,n01855672\n")
    with pytest.raises(ValueError, match="filename,label"):
        create("dataset", "mini_imagenet", root=str(root))


def test_mini_imagenet_feat_layout_gives_the_same_data(tmp_path):
    a = create("dataset", "mini_imagenet", root=str(_mini_tree(tmp_path / "ravi")), image_size=6)
    b = create("dataset", "mini_imagenet", root=str(_mini_tree(tmp_path / "feat", "split")), image_size=6)
    assert b.info.class_names == a.info.class_names and _values(b) == _values(a) == [5, 10, 15, 20, 25, 30]
    assert np.array_equal(b.annotations["label"], a.annotations["label"])
    assert set(b.splits) == set(a.splits) == {"train", "val", "novel"}
    assert all(np.array_equal(b.split(s), a.split(s)) for s in a.splits)
    assert b.fingerprint_config()["layout"] == "feat" and "layout" not in a.fingerprint_config()


# -- Omniglot ----------------------------------------------------------------------------------------
def test_omniglot(tmp_path):
    root = tmp_path / "omniglot-py"
    layout = [("images_background", "Greek", "character02", ["0395_01.png", "0395_02.png"]),
              ("images_background", "Greek", "character01", ["0394_01.png"]),
              ("images_background", "Alphabet_of_the_Magi", "character01", ["0709_01.png"]),
              ("images_evaluation", "Kannada", "character01", ["1206_01.png", "1206_02.png"])]
    value = 20
    for folder, alphabet, char, files in layout:
        for f in files:
            _img(root / folder / alphabet / char / f, value, size=(105, 105), mode="L")
            value += 20
    ds = create("dataset", "omniglot", root=str(tmp_path))  # torchvision's omniglot-py parent works
    # sorted: Alphabet_of_the_Magi/character01, Greek/character01, Greek/character02, then Kannada
    assert ds.info.class_names == ["Alphabet_of_the_Magi/character01", "Greek/character01", "Greek/character02",
                                   "Kannada/character01"]
    assert ds.info.coarse_names == ["Alphabet_of_the_Magi", "Greek", "Kannada"]
    assert list(ds.annotations["label"]) == [0, 1, 2, 2, 3, 3]
    assert list(ds.annotations["coarse_label"]) == [0, 1, 1, 1, 2, 2]
    assert list(ds.split("train")) == [0, 1, 2, 3] and list(ds.split("novel")) == [4, 5]
    assert _values(ds) == [80, 60, 20, 40, 100, 120]
    assert tuple(ds.load_images(np.array([0])).shape) == (1, 1, 28, 28)
    inv = create("dataset", "omniglot", root=str(root), invert=True)
    assert _values(inv) == [255 - v for v in [80, 60, 20, 40, 100, 120]]


# -- CIFAR ---------------------------------------------------------------------------------------------
def _cifar_images(n: int, offset: int) -> np.ndarray:
    """Image i: red plane = offset+i, green = offset+i+1, blue = offset+i+2, pixel (0, 1) of red = 200."""
    data = np.zeros((n, 3, 32, 32), np.uint8)
    for i in range(n):
        data[i, 0], data[i, 1], data[i, 2] = offset + i, offset + i + 1, offset + i + 2
        data[i, 0, 0, 1] = 200
    return data.reshape(n, 3072)


def _dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({k.encode(): v for k, v in obj.items()}, f, protocol=2)


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar10_batches() -> list[tuple[str, np.ndarray, list[int]]]:
    """(file stem, data (n, 3072), labels) of five train batches of 2 images and a test batch of 3."""
    train = [(f"data_batch_{b + 1}", _cifar_images(2, 10 * b), [b, 9 - b]) for b in range(5)]
    return [*train, ("test_batch", _cifar_images(3, 100), [3, 8, 1])]


def _cifar10_python(folder: Path) -> None:
    for stem, data, labels in _cifar10_batches():
        _dump(folder / stem, {"data": data, "labels": labels, "batch_label": b"training batch"})
    _dump(folder / "batches.meta", {"label_names": [n.encode() for n in CIFAR10_NAMES]})


def _cifar_bin(path: Path, labels: list[list[int]], data: np.ndarray) -> None:
    """Records of CIFAR's binary version: the label bytes of each image (one list per kind), then its 3,072 bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.concatenate([np.array(labels, np.uint8).T, data], axis=1).tobytes())


def _cifar10_binary(folder: Path) -> None:
    for stem, data, labels in _cifar10_batches():
        _cifar_bin(folder / f"{stem}.bin", [labels], data)
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")  # a blank line is no class


def test_cifar10(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _cifar10_python(folder)
    ds = create("dataset", "cifar10", root=str(tmp_path))  # the parent folder works too
    assert list(ds.annotations["label"]) == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5, 3, 8, 1]
    assert list(ds.annotations["coarse_label"]) == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0]  # vehicle 0, animal 1
    assert list(ds.split("train")) == list(range(10)) and list(ds.split("test")) == [10, 11, 12]
    img = ds.load_images(np.array([3, 11]))
    assert tuple(img.shape) == (2, 3, 32, 32)
    assert [int(img[0, c, 5, 5]) for c in range(3)] == [11, 12, 13]  # batch 2, image 1: offset 10 + 1
    assert int(img[0, 0, 0, 1]) == 200 and int(img[0, 0, 1, 0]) == 11  # row-major within each plane
    assert [int(img[1, c, 0, 0]) for c in range(3)] == [101, 102, 103]
    assert ds.info.class_names[0] == "airplane"
    held = create("dataset", "cifar10", root=str(folder), novel_classes=[3])
    assert list(held.split("novel")) == [6, 10] and 6 not in held.split("train")


def _same_cifar(a, b) -> None:
    """``a`` and ``b`` hold the same images, annotations, splits and class names, in the same order."""
    everything = np.arange(len(a))
    assert len(b) == len(a) and torch.equal(b.load_images(everything), a.load_images(everything))
    assert set(b.annotations) == set(a.annotations)
    assert all(np.array_equal(b.annotations[k], a.annotations[k]) for k in a.annotations)
    assert set(b.splits) == set(a.splits) and all(np.array_equal(b.split(s), a.split(s)) for s in a.splits)
    assert b.info.class_names == a.info.class_names and b.info.coarse_names == a.info.coarse_names


def test_cifar10_binary_version_gives_the_python_data(tmp_path):
    _cifar10_python(tmp_path / "cifar-10-batches-py")
    _cifar10_binary(tmp_path / "cifar-10-batches-bin")
    a = create("dataset", "cifar10", root=str(tmp_path / "cifar-10-batches-py"), novel_classes=[3])
    b = create("dataset", "cifar10", root=str(tmp_path / "cifar-10-batches-bin"), novel_classes=[3])
    _same_cifar(a, b)
    assert b.info.class_names == CIFAR10_NAMES and list(b.annotations["label"][-3:]) == [3, 8, 1]
    assert b.fingerprint_config()["layout"] == "binary" and "layout" not in a.fingerprint_config()
    (tmp_path / "cifar-10-batches-py").rename(tmp_path / "elsewhere")  # the parent of the binary folder works too
    _same_cifar(a, create("dataset", "cifar10", root=str(tmp_path), novel_classes=[3]))


CIFAR100_FILES = {"train": (_cifar_images(3, 0), [19, 29, 0], [11, 15, 4]),
                  "test": (_cifar_images(2, 50), [51, 0], [10, 4])}  # data, fine labels, coarse labels


def _cifar100_python(folder: Path) -> None:
    for stem, (data, fine, coarse) in CIFAR100_FILES.items():
        _dump(folder / stem, {"data": data, "fine_labels": fine, "coarse_labels": coarse})
    _dump(folder / "meta", {"fine_label_names": [f"class{k}".encode() for k in range(100)],
                            "coarse_label_names": [f"super{k}".encode() for k in range(20)]})


def _cifar100_binary(folder: Path) -> None:
    for stem, (data, fine, coarse) in CIFAR100_FILES.items():
        _cifar_bin(folder / f"{stem}.bin", [coarse, fine], data)
    (folder / "fine_label_names.txt").write_text("".join(f"class{k}\n" for k in range(100)))
    (folder / "coarse_label_names.txt").write_text("".join(f"super{k}\n" for k in range(20)))


def test_cifar100(tmp_path):
    folder = tmp_path / "cifar-100-python"
    _cifar100_python(folder)
    ds = create("dataset", "cifar100", root=str(folder), image_size=16)
    assert list(ds.annotations["label"]) == [19, 29, 0, 51, 0]
    assert list(ds.annotations["coarse_label"]) == [11, 15, 4, 10, 4]
    assert list(ds.split("train")) == [0, 1, 2] and list(ds.split("test")) == [3, 4]
    assert ds.info.coarse_names[4] == "super4" and len(ds.info.class_names) == 100
    assert tuple(ds.load_images(np.array([0])).shape) == (1, 3, 16, 16)


def test_cifar100_binary_version_gives_the_python_data(tmp_path):
    _cifar100_python(tmp_path / "cifar-100-python")
    _cifar100_binary(tmp_path / "cifar-100-binary")
    a = create("dataset", "cifar100", root=str(tmp_path / "cifar-100-python"))
    b = create("dataset", "cifar100", root=str(tmp_path / "cifar-100-binary"))
    _same_cifar(a, b)
    assert list(b.annotations["label"]) == [19, 29, 0, 51, 0]
    assert list(b.annotations["coarse_label"]) == [11, 15, 4, 10, 4]
    assert b.info.class_names[7] == "class7" and b.info.coarse_names[4] == "super4"


def test_a_cifar_binary_file_cut_short_names_the_file_and_the_record_size(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    _cifar100_binary(folder)
    test = folder / "test.bin"
    test.write_bytes(test.read_bytes()[:-5])  # 2 records of 3,074 bytes, cut by 5
    with pytest.raises(DatasetFormatError, match=f"{test} holds 6,143 bytes: not a whole, positive number of "
                                                 r"3,074-byte records \(2 label byte\(s\) \+ 3,072 image bytes each\)"):
        create("dataset", "cifar100", root=str(folder))
    _cifar10_binary(tmp_path / "cifar-10-batches-bin")
    (tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin").write_bytes(b"")
    with pytest.raises(DatasetFormatError, match="data_batch_3.bin holds 0 bytes: .* 3,073-byte records"):
        create("dataset", "cifar10", root=str(tmp_path))


def test_cifar_unpickler_refuses_code(tmp_path):
    from harness.plugins.datasets._formats import load_cifar_batch

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DatasetFormatError, match="could not be read as a pickled CIFAR batch: UnpicklingError: refusing"):
        load_cifar_batch(path)


# -- IDX: MNIST / Fashion-MNIST ---------------------------------------------------------------------------
def _write_idx(path: Path, arr: np.ndarray, *, gz: bool) -> None:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[arr.dtype]
    blob = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, ">i4").tobytes() + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)


def test_read_idx_matches_torchvision(tmp_path):
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    from harness.plugins.datasets._formats import read_idx

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    ints = rng.integers(-1000, 1000, (3, 2)).astype(">i4")
    _write_idx(tmp_path / "a-idx3-ubyte", images, gz=False)
    _write_idx(tmp_path / "a-idx3-ubyte", images, gz=True)
    _write_idx(tmp_path / "b-idx2-int", ints, gz=False)
    ref = read_sn3_pascalvincent_tensor(str(tmp_path / "a-idx3-ubyte")).numpy()
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), ref)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), ref)
    ref_int = read_sn3_pascalvincent_tensor(str(tmp_path / "b-idx2-int"), strict=False).numpy()
    assert np.array_equal(read_idx(tmp_path / "b-idx2-int"), ref_int)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetFormatError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    raw = (tmp_path / "a-idx3-ubyte").read_bytes()
    (tmp_path / "cut-idx3-ubyte").write_bytes(raw[:-3])
    with pytest.raises(DatasetFormatError, match=r"header says \(7, 5, 4\) × 1 bytes, file holds 137 bytes"):
        read_idx(tmp_path / "cut-idx3-ubyte")
    (tmp_path / "cut-idx3-ubyte.gz").write_bytes((tmp_path / "a-idx3-ubyte.gz").read_bytes()[:30])
    with pytest.raises(DatasetFormatError, match=r"cut-idx3-ubyte.gz could not be read as an IDX file \(gzip\): EOFError"):
        read_idx(tmp_path / "cut-idx3-ubyte.gz")


MNIST_NAMES = {"published": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                               "t10k-labels-idx1-ubyte"),
               "kaggle": ("train-images.idx3-ubyte", "train-labels.idx1-ubyte", "t10k-images.idx3-ubyte",
                          "t10k-labels.idx1-ubyte")}


@pytest.mark.parametrize("layout", ["flat_gz", "torchvision_raw", "kaggle_dotted", "kaggle_dotted_gz"])
def test_mnist_idx_layouts(tmp_path, layout):
    rng = np.random.default_rng(1)
    train_x = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    train_y, test_y = np.array([5, 0, 4, 1, 9, 2], np.uint8), np.array([7, 2, 1, 0], np.uint8)
    base = tmp_path / "MNIST" / "raw" if layout == "torchvision_raw" else tmp_path / "flat"
    gz = layout.endswith("_gz")
    names = MNIST_NAMES["kaggle" if layout.startswith("kaggle") else "published"]
    for name, arr in zip(names, (train_x, train_y, test_x, test_y)):
        _write_idx(base / name, arr, gz=gz)
    root = tmp_path if layout == "torchvision_raw" else base
    ds = create("dataset", "mnist", root=str(root), novel_classes=[9])
    assert list(ds.annotations["label"]) == [5, 0, 4, 1, 9, 2, 7, 2, 1, 0]
    assert list(ds.split("train")) == [0, 1, 2, 3, 5] and list(ds.split("test")) == [6, 7, 8, 9]
    assert list(ds.split("novel")) == [4]
    assert torch.equal(ds.load_images(np.arange(10))[:, 0], torch.from_numpy(np.concatenate([train_x, test_x])))


def test_missing_mnist_names_both_spellings(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        create("dataset", "fashion_mnist", root=str(tmp_path))
    for name in (*MNIST_NAMES["published"], *MNIST_NAMES["kaggle"]):
        assert f"'{name}'" in str(err.value)


def test_fashion_mnist_grouping(tmp_path):
    from harness.plugins.datasets.mnist import FASHION_CLASSES, FASHION_COARSE, FASHION_COARSE_NAMES

    groups = {name: FASHION_COARSE_NAMES[FASHION_COARSE[k]] for k, name in enumerate(FASHION_CLASSES)}
    assert groups == {"T-shirt/top": "tops", "Trouser": "bottoms", "Pullover": "tops", "Dress": "tops",
                      "Coat": "tops", "Sandal": "footwear", "Shirt": "tops", "Sneaker": "footwear",
                      "Bag": "bags", "Ankle boot": "footwear"}
    x = np.zeros((3, 28, 28), np.uint8)
    for stem, arr in (("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", np.array([8, 1, 9], np.uint8)),
                      ("t10k-images-idx3-ubyte", x[:1]), ("t10k-labels-idx1-ubyte", np.array([3], np.uint8))):
        _write_idx(tmp_path / "FashionMNIST" / "raw" / stem, arr, gz=True)
    ds = create("dataset", "fashion_mnist", root=str(tmp_path))
    assert list(ds.annotations["coarse_label"]) == [3, 1, 2, 0]


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_files(tmp_path):
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    ds = create("dataset", "fashion_mnist")
    assert len(ds) == 70000 and len(ds.split("train")) == 60000 and len(ds.split("test")) == 10000
    assert np.array_equal(np.bincount(ds.annotations["label"]), np.full(10, 7000))
    assert np.array_equal(np.bincount(ds.annotations["coarse_label"]), [35000, 7000, 21000, 7000])
    # torchvision's own IDX reader on the decompressed test labels is the reference
    (tmp_path / "labels").write_bytes(gzip.decompress((DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    ref = read_sn3_pascalvincent_tensor(str(tmp_path / "labels")).numpy()
    assert np.array_equal(ds.annotations["label"][60000:], ref)
    assert list(ref[:5]) == [9, 2, 1, 1, 6]  # the published first test labels: ankle boot, pullover, trouser ×2, shirt


# -- COCO / VOC -----------------------------------------------------------------------------------------------
def test_coco(tmp_path):
    root = tmp_path / "coco"
    data = {
        "images": [{"id": 7, "file_name": "000007.jpg", "width": 40, "height": 20},
                   {"id": 3, "file_name": "000003.jpg", "width": 40, "height": 20},
                   {"id": 9, "file_name": "000009.jpg", "width": 40, "height": 20}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "area": 150, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 0, 40, 20], "area": 800, "iscrowd": 1},
            {"id": 4, "image_id": 3, "category_id": 1, "bbox": [2, 4, 8, 6], "area": 48, "iscrowd": 0}],
        "categories": [{"id": 3, "name": "car", "supercategory": "vehicle"},
                       {"id": 1, "name": "person", "supercategory": "person"}]}
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    for im, v in (("000007.jpg", 70), ("000003.jpg", 30), ("000009.jpg", 90)):
        _img(root / "val2017" / im, v, size=(40, 20))
    ds = create("dataset", "coco", root=str(root), train_set="", image_size=16)
    # images by id: 3, 7, 9 (the test set keeps 9, without boxes: COCO scores every val image);
    # categories by id: person 0, car 1
    assert _values(ds) == [30, 70, 90]
    assert list(ds.split("test")) == [0, 1, 2] and "train" not in ds.splits
    sx, sy = 16 / 40, 16 / 20
    assert np.allclose(ds.annotations["boxes"][0], [[2 * sx, 4 * sy, 10 * sx, 10 * sy, 0]])
    assert np.allclose(ds.annotations["boxes"][1], [[10 * sx, 5 * sy, 30 * sx, 15 * sy, 1], [0, 0, 5 * sx, 5 * sy, 0]])
    assert len(ds.annotations["boxes"][2]) == 0
    assert list(ds.annotations["label"]) == [0, 1, -1]  # largest box: person; car; none
    assert ds.info.class_names == ["person", "car"] and ds.info.coarse_names == ["person", "vehicle"]
    assert list(ds.annotations["coarse_label"]) == [0, 1, -1]
    # detection targets at the image's own size: the crowd region comes along, flagged ignore
    targets = ds.image_list_targets([1, 2])
    assert np.allclose(targets[0]["boxes"], [[10, 5, 30, 15, 1], [0, 0, 5, 5, 0], [0, 0, 40, 20, 0]])
    assert list(targets[0]["ignore"]) == [False, False, True] and list(targets[0]["area"]) == [150, 25, 800]
    assert len(targets[1]["boxes"]) == 0 and len(targets[1]["ignore"]) == 0
    # as a training set, images without a (non-crowd) box are dropped (torchvision's / Detectron2's filter)
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    shutil.copytree(root / "val2017", root / "train2017")
    both = create("dataset", "coco", root=str(root), image_size=16)
    assert list(both.split("train")) == [0, 1] and list(both.split("test")) == [2, 3, 4]
    keep = create("dataset", "coco", root=str(root), image_size=16, skip_empty=False)
    assert len(keep.split("train")) == 3 and keep.annotations["label"][2] == -1
    with pytest.raises(ConfigError, match="both empty"):
        create("dataset", "coco", root=str(root), train_set="", test_set="")


def _voc_xml(objects, w=50, h=40) -> str:
    objs = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                   f"<xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>" for n, d, a, b, c, e in objects)
    return f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>"


def test_voc2007(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2007"
    anns = {"000005": [("chair", 0, 1, 1, 10, 20), ("person", 1, 5, 5, 45, 35)],
            "000007": [("car", 0, 11, 21, 50, 40)],
            "000009": [("dog", 1, 2, 3, 4, 5)]}
    (root / "Annotations").mkdir(parents=True)
    for i, objs in anns.items():
        (root / "Annotations" / f"{i}.xml").write_text(_voc_xml(objs))
        _img(root / "JPEGImages" / f"{i}.jpg", int(i[-1]) * 20, size=(50, 40))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000005\n000009\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("000007\n")
    ds = create("dataset", "voc2007", root=str(tmp_path / "VOCdevkit"), image_size=[20, 25])  # VOCdevkit works
    assert list(ds.split("train")) == [0, 1] and list(ds.split("test")) == [2]
    assert _values(ds) == [100, 180, 140]
    sx, sy = 25 / 50, 20 / 40
    chair, car, dog, person = 8, 6, 11, 14
    assert np.allclose(ds.annotations["boxes"][0], [[0, 0, 10 * sx, 20 * sy, chair]])  # difficult person dropped
    assert len(ds.annotations["boxes"][1]) == 0  # only a difficult dog
    assert np.allclose(ds.annotations["boxes"][2], [[10 * sx, 20 * sy, 50 * sx, 40 * sy, car]])
    assert list(ds.annotations["label"]) == [chair, dog, car]  # the all-difficult image keeps its dog label
    assert list(ds.annotations["coarse_label"]) == [3, 1, 2]  # indoor, animal, vehicle
    # detection targets keep the difficult objects, flagged ignore (VOC's evaluation ignores them)
    targets = ds.image_list_targets([0, 1, 2])
    assert np.allclose(targets[0]["boxes"], [[0, 0, 10, 20, chair], [4, 4, 45, 35, person]])
    assert [list(t["ignore"]) for t in targets] == [[False, True], [True], [False]]
    hard = create("dataset", "voc2007", root=str(root), image_size=[20, 25], use_difficult=True)
    assert np.allclose(hard.annotations["boxes"][0][:, 4], [chair, person])
    assert list(hard.annotations["label"]) == [person, dog, car]
    assert not any(t["ignore"].any() for t in hard.image_list_targets([0, 1, 2]))


def test_a_preloaded_dataset_checked_before_a_run_caches_in_the_runs_cache_dir(tmp_path, monkeypatch):
    """The requirements check reads the dataset before the first cell: its decoded images go to the
    cache_dir given, not to the default cache (HARNESS_CACHE points elsewhere here)."""
    from harness.cli import main
    import harness.run

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "default_cache"))
    harness.run._DATASETS.clear()
    root = _cub_tree(tmp_path)
    argv = ["run", "method=euclidean_ce", "task=retrieval", "task.ks=[1]", "train.epochs=1", "dataset=cub200",
            f"dataset.root={root}", "dataset.image_size=8", "dataset.preload=true", "backbone=conv4_32",
            f"results_dir={tmp_path / 'res'}", f"cache_dir={tmp_path / 'given_cache'}"]
    main(argv)
    assert list((tmp_path / "given_cache" / "datasets").glob("cub200-*"))
    assert not (tmp_path / "default_cache" / "datasets").exists()
