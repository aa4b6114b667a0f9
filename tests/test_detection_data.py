"""Images at their own size and their targets (boxes, areas, masks) for detection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import Incompatible
from harness.plugins.datasets.scenes import Scenes, mask_boxes
from harness.registry import create


def _img(path, value, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path, format="JPEG", quality=100)


def _rle(mask):
    from faster_coco_eval.core import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode("ascii")}


@pytest.fixture()
def coco_root(tmp_path):
    root = tmp_path / "coco"
    blob = np.zeros((20, 40), bool)
    blob[5:15, 10:30] = True
    data = {
        "images": [{"id": 7, "file_name": "000007.jpg", "width": 40, "height": 20},
                   {"id": 3, "file_name": "000003.jpg", "width": 30, "height": 50}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "area": 200.0, "iscrowd": 0,
             "segmentation": _rle(blob)},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 12.5, "iscrowd": 0,
             "segmentation": [[0, 0, 5, 0, 0, 5]]},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 0, 40, 20], "area": 800, "iscrowd": 1,
             "segmentation": [[0, 0, 40, 0, 40, 20, 0, 20]]},
            {"id": 4, "image_id": 3, "category_id": 1, "bbox": [2, 4, 8, 6], "area": 48.0, "iscrowd": 0,
             "segmentation": [[2, 4, 10, 4, 10, 10, 2, 10]]}],
        "categories": [{"id": 3, "name": "car", "supercategory": "vehicle"},
                       {"id": 1, "name": "person", "supercategory": "person"}]}
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    _img(root / "val2017" / "000007.jpg", 70, (40, 20))
    _img(root / "val2017" / "000003.jpg", 30, (30, 50))
    return root, data


def test_coco_images_at_their_own_size_with_boxes_in_their_pixels(coco_root):
    root, data = coco_root
    ds = create("dataset", "coco", root=str(root), train_set="", image_size=16)
    # the fixed-size path is unchanged: 16² images, boxes scaled to them
    assert tuple(ds.load_images([0, 1]).shape) == (2, 3, 16, 16)
    assert np.allclose(ds.annotations["boxes"][0], [[2 * 16 / 30, 4 * 16 / 50, 10 * 16 / 30, 10 * 16 / 50, 0]])
    # own size: image id 3 (30 wide, 50 high) first, then id 7 (40 × 20); the crowd region flagged
    # ignore; classes by id
    images = ds.load_image_list([0, 1])
    assert [tuple(x.shape) for x in images] == [(3, 50, 30), (3, 20, 40)]
    assert images[0].dtype == torch.uint8 and abs(int(images[1].float().mean()) - 70) <= 2
    t = ds.image_list_targets([0, 1])
    assert t[0]["boxes"].tolist() == [[2, 4, 10, 10, 0]] and t[0]["ignore"].tolist() == [False]
    assert t[1]["boxes"].tolist() == [[10, 5, 30, 15, 1], [0, 0, 5, 5, 0], [0, 0, 40, 20, 0]]
    assert t[1]["ignore"].tolist() == [False, False, True]
    assert t[1]["area"].tolist() == [200.0, 12.5, 800.0]  # COCO's own area field, not the box's
    assert ds.instance_masks


def test_coco_masks_from_rle_and_polygons(coco_root):
    root, data = coco_root
    ds = create("dataset", "coco", root=str(root), train_set="", image_size=16)
    t = ds.image_list_targets([0, 1], masks=True)
    assert t[0]["masks"].shape == (1, 50, 30) and t[1]["masks"].shape == (3, 20, 40)
    assert t[1]["masks"][2].all()  # the crowd region's polygon covers its whole image
    expected_blob = np.zeros((20, 40), bool)
    expected_blob[5:15, 10:30] = True
    assert np.array_equal(t[1]["masks"][0].numpy(), expected_blob)  # the RLE, decoded
    pycoco_mask = pytest.importorskip("pycocotools.mask")
    for image_masks, h, w, segms in ((t[0]["masks"], 50, 30, [data["annotations"][3]["segmentation"]]),
                                     (t[1]["masks"][1:], 20, 40, [data["annotations"][1]["segmentation"]])):
        for m, segm in zip(image_masks, segms):  # polygons rasterised as pycocotools' annToMask does
            ref = pycoco_mask.decode(pycoco_mask.merge(pycoco_mask.frPyObjects(segm, h, w)))
            assert np.array_equal(m.numpy(), ref.astype(bool))


def test_voc_images_at_their_own_size(tmp_path):
    root = tmp_path / "VOC2007"
    xml = ("<annotation><size><width>50</width><height>40</height><depth>3</depth></size>"
           "<object><name>car</name><difficult>0</difficult><bndbox><xmin>11</xmin><ymin>21</ymin>"
           "<xmax>50</xmax><ymax>40</ymax></bndbox></object></annotation>")
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "000007.xml").write_text(xml)
    _img(root / "JPEGImages" / "000007.jpg", 100, (50, 40))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000007\n")
    ds = create("dataset", "voc2007", root=str(root), test_set="", image_size=16)
    assert tuple(ds.load_images([0]).shape) == (1, 3, 16, 16)
    assert tuple(ds.load_image_list([0])[0].shape) == (3, 40, 50)
    t = ds.image_list_targets([0])[0]
    assert t["boxes"].tolist() == [[10, 20, 50, 40, 6]]  # pixel edges: xmin − 1, ymin − 1, xmax, ymax; car = 6
    assert t["area"].tolist() == [40 * 20]
    with pytest.raises(Incompatible, match="no instance masks"):
        ds.image_list_targets([0], masks=True)


def test_scenes_masks_are_exact():
    ds = Scenes(Scenes.Config(n_images=30, image_size=64))
    idx = np.arange(30)
    assert all(torch.equal(a, b) for a, b in zip(ds.load_image_list(idx), ds.load_images(idx)))
    for i, t in zip(idx, ds.image_list_targets(idx, masks=True)):
        m = t["masks"]
        assert m.shape == (len(ds.annotations["boxes"][i]), 64, 64)
        assert np.array_equal(mask_boxes(m).numpy(), ds.annotations["boxes"][i][:, :4])  # tight box = the box
        assert m.sum(0).max() <= 1  # sprites never overlap
        assert t["area"].tolist() == m.flatten(1).sum(1).tolist()

