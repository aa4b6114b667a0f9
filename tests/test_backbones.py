"""Backbones for small inputs: the CIFAR stem swap, ResNet-12 (+ DropBlock), the Conv-4 readouts, feature maps."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
timm = pytest.importorskip("timm")

from harness.backbones import InputSizeError, build_backbone, check_input_size, has_imagenet_stem, use_small_input_stem  # noqa: E402
from harness.errors import ConfigError  # noqa: E402
from harness.feature_maps import feature_maps  # noqa: E402
from harness.plugins.backbones import conv4 as _conv4  # noqa: E402,F401  (registers conv4*)
from harness.plugins.backbones.resnet12 import DropBlock, block_mask, drop_block_gamma  # noqa: E402


def _build(name, size=32, in_chans=3, **cfg):
    cfg = {"name": name, "pretrained": None, "kwargs": {}, **cfg}
    return build_backbone(cfg, in_chans=in_chans, img_size=(size, size) if isinstance(size, int) else size)


def _randomise_bn(model, seed=0):
    """Non-trivial BatchNorm statistics, so eval-mode references test the BN wiring too."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


# -- the CIFAR stem --------------------------------------------------------------------------------
def test_auto_stem_swaps_a_resnet_on_small_inputs():
    model, dim = _build("resnet18", 32)
    assert model.small_input_stem is True and dim == 512
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.padding == (1, 1)
    assert model.conv1.out_channels == 64 and isinstance(model.maxpool, nn.Identity)
    # He et al. 2016 CIFAR layout: 32 px stays 32 px through stage 1, then halves: layer4 is 32/8 = 4 px.
    with torch.no_grad():
        assert model.eval().forward_features(torch.zeros(1, 3, 32, 32)).shape == (1, 512, 4, 4)
    imagenet, _ = _build("resnet18", 32, small_input_stem=False)
    assert imagenet.small_input_stem is False and imagenet.conv1.kernel_size == (7, 7)
    with torch.no_grad():  # the ImageNet stem: 32 / 32 = 1 px at layer4, the near-chance rows of the review
        assert imagenet.eval().forward_features(torch.zeros(1, 3, 32, 32)).shape == (1, 512, 1, 1)


@pytest.mark.parametrize("size,swapped", [(28, True), (64, True), (65, False), (96, False)])
def test_auto_stem_threshold_is_the_smaller_side(size, swapped):
    model, _ = build_backbone({"name": "resnet18", "pretrained": None, "kwargs": {}}, in_chans=1,
                              img_size=(size, 200))
    assert model.small_input_stem is swapped
    assert model.conv1.in_channels == 1


def test_auto_stem_leaves_other_families_alone():
    for name in ("conv4_32", "resnet12_small", "mobilenetv2_100"):
        model, _ = _build(name, 32)
        assert model.small_input_stem is False and not has_imagenet_stem(model)


def test_deep_stem_keeps_its_three_convs_with_stride_one():
    ref = timm.create_model("resnet18d", num_classes=0)
    model, _ = _build("resnet18d", 32)
    assert model.small_input_stem is True
    convs = [m for m in model.conv1 if isinstance(m, nn.Conv2d)]
    ref_convs = [m for m in ref.conv1 if isinstance(m, nn.Conv2d)]
    assert [c.weight.shape for c in convs] == [c.weight.shape for c in ref_convs]
    assert [c.stride for c in convs] == [(1, 1)] * 3 and ref_convs[0].stride == (2, 2)
    with torch.no_grad():
        assert model.eval().forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (4, 4)


def test_true_stem_errors_say_what_to_do():
    with pytest.raises(ConfigError, match="no ImageNet ResNet stem.*small_input_stem=auto or false"):
        _build("conv4_32", 32, small_input_stem=True)
    with pytest.raises(ConfigError, match="auto, true or false"):
        _build("resnet18", 32, small_input_stem="yes")
    model = timm.create_model("resnet18", num_classes=0)
    with pytest.raises(ConfigError, match="pretrained=null"):
        use_small_input_stem(model, True, img_size=(32, 32), pretrained="imagenet_offline")


def test_pretrained_checkpoints_and_the_stem(tmp_path):
    """auto keeps the stem a checkpoint was trained with; true loads a checkpoint of a CIFAR-stem model."""
    small = {"layers": [1, 1, 1, 1]}  # a one-block-per-stage ResNet: the same stem, smaller files
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    imagenet = _randomise_bn(timm.create_model("resnet18", num_classes=0, **small))
    torch.save(imagenet.state_dict(), tmp_path / "imagenet_stem.pt")
    model, _ = _build("resnet18", 32, kwargs=small, pretrained=str(tmp_path / "imagenet_stem.pt"))
    assert model.small_input_stem is False
    with torch.no_grad():
        assert torch.equal(model.eval()(x), imagenet(x))

    cifar, _ = _build("resnet18", 32, kwargs=small)
    _randomise_bn(cifar, seed=1)
    torch.save(cifar.state_dict(), tmp_path / "cifar_stem.pt")
    model, _ = _build("resnet18", 32, kwargs=small, pretrained=str(tmp_path / "cifar_stem.pt"),
                      small_input_stem=True)
    assert model.small_input_stem is True
    with torch.no_grad():
        assert torch.equal(model.eval()(x), cifar(x))
    with pytest.raises(ConfigError, match="(?s)shape mismatch.*small_input_stem=true"):  # auto + CIFAR checkpoint
        _build("resnet18", 32, kwargs=small, pretrained=str(tmp_path / "cifar_stem.pt"))


# -- ResNet-12 -----------------------------------------------------------------------------------
def _resnet12_params(widths, in_chans=3):
    """Hand count: per block three 3×3 convs (no bias), a 1×1 shortcut conv, four BatchNorms (γ, β)."""
    total, c_in = 0, in_chans
    for w in widths:
        total += 9 * c_in * w + 2 * 9 * w * w + c_in * w + 4 * 2 * w
        c_in = w
    return total


def test_resnet12_parameter_counts():
    big = timm.create_model("resnet12", num_classes=0)
    n = sum(p.numel() for p in big.parameters())
    assert n == _resnet12_params((64, 160, 320, 640)) == 12_424_320  # MetaOptNet's ResNet-12: 12.4 M
    small = timm.create_model("resnet12_small", num_classes=0)
    assert sum(p.numel() for p in small.parameters()) == _resnet12_params((32, 64, 128, 256)) == 2_001_600


def _reference_resnet12(sd, x, n_blocks=4):
    """ResNet-12 written from the papers' description on the model's own weights (eval-mode BatchNorm)."""
    def bn(y, p):
        return F.batch_norm(y, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            False, 0.0, 1e-5)

    for i in range(n_blocks):
        p = f"stages.{i}."
        out = F.leaky_relu(bn(F.conv2d(x, sd[p + "conv1.weight"], padding=1), p + "bn1"), 0.1)
        out = F.leaky_relu(bn(F.conv2d(out, sd[p + "conv2.weight"], padding=1), p + "bn2"), 0.1)
        out = bn(F.conv2d(out, sd[p + "conv3.weight"], padding=1), p + "bn3")
        short = bn(F.conv2d(x, sd[p + "shortcut.0.weight"]), p + "shortcut.1")
        x = F.max_pool2d(F.leaky_relu(out + short, 0.1), 2)
    return x.mean((2, 3))


def test_resnet12_matches_the_written_out_network():
    model = _randomise_bn(timm.create_model("resnet12_small", num_classes=0))
    x = torch.randn(2, 3, 36, 36, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x), _reference_resnet12(model.state_dict(), x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("size,maps", [(84, [42, 21, 10, 5]), (32, [16, 8, 4, 2])])
def test_resnet12_map_sizes(size, maps):
    model, dim = _build("resnet12", size)
    assert dim == 640
    with torch.no_grad():
        out = model.forward_intermediates(torch.zeros(1, 3, size, size), intermediates_only=True)
    assert [t.shape[-1] for t in out] == maps and [t.shape[1] for t in out] == [64, 160, 320, 640]


def _released_lenet(sd: dict, x: torch.Tensor, widths: int, last_relu: bool) -> torch.Tensor:
    """The released forward, re-typed: hyptorch examples/mnist.py Net up to fc1's ReLU; HACK's
    model.py feature_Net up to fc3 (its unnormalised output)."""
    x = F.max_pool2d(F.relu(F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"])), 2, 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, sd["conv2.weight"], sd["conv2.bias"])), 2, 2)
    x = x.reshape(-1, 4 * 4 * 50)
    for i in range(widths):
        x = F.linear(x, sd[f"fcs.{i}.weight"], sd[f"fcs.{i}.bias"])
        x = F.relu(x) if i < widths - 1 or last_relu else x
    return x


@pytest.mark.parametrize("name, widths, last_relu, params, dim", [
    ("lenet", 1, True, 520 + 25_050 + 400_500, 500),  # conv 1→20, conv 20→50, linear 800→500
    ("lenet_hack", 3, False, 520 + 25_050 + 80_100 + 10_100 + 6_464, 64),  # linear 800→100→100→64
])
def test_lenets_match_the_released_nets(name, widths, last_relu, params, dim):
    model, d = _build(name, 28, in_chans=1)
    assert d == dim and sum(p.numel() for p in model.parameters()) == params
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), _released_lenet(model.state_dict(), x, widths, last_relu), atol=1e-6)
    wide, _ = _build(name, (32, 48), in_chans=1)  # the first linear layer reads 50 x 5 x 9 there
    assert wide.fcs[0].in_features == 50 * 5 * 9
    with pytest.raises(ValueError, match="built for 28×28 images"):
        model(torch.zeros(1, 1, 32, 32))


def test_in_tree_backbones_reject_too_small_inputs():
    model = timm.create_model("resnet12_small")
    with pytest.raises(ValueError, match="at least 16×16"):
        model(torch.zeros(1, 3, 12, 12))


@pytest.mark.parametrize("name, channels, size, fits", [
    ("vit_tiny_patch16_224", 3, (8, 8), False),   # a 16-px patch on an 8-px image
    ("vit_tiny_patch16_224", 3, (16, 32), True),
    ("conv4", 1, (8, 8), False),                  # four halvings need 16 px
    ("conv4", 1, (16, 16), True),
    ("resnet12_small", 3, (12, 12), False),
    ("resnet18", 3, (4, 4), True),                # timm pads its stem: 4 px still pools to 1×1
])
def test_the_input_size_check_agrees_with_building_the_model(name, channels, size, fits):
    """The meta-device check (shapes only, before any work) says what building the real model and
    running two images through it says."""
    cfg = {"name": name, "pretrained": None, "img_size": None, "kwargs": {}}
    if fits:
        check_input_size(cfg, in_chans=channels, img_size=size)
        assert build_backbone(cfg, in_chans=channels, img_size=size)[1] > 0
        return
    for check in (check_input_size, build_backbone):
        with pytest.raises(InputSizeError, match=rf"'{name}' cannot take {channels}-channel {size[0]}×{size[1]} "
                                              r"images: .*backbone.img_size=\[H, W\]"):
            check(cfg, in_chans=channels, img_size=size)


# -- DropBlock -------------------------------------------------------------------------------------
def test_block_mask_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    b, h, w = 3, 9, 7
    seeds = (torch.rand(2, 3, h - b + 1, w - b + 1, generator=g) < 0.1).float()
    expected = torch.zeros(2, 3, h, w)
    for n, c, i, j in seeds.nonzero().tolist():
        expected[n, c, i:i + b, j:j + b] = 1.0
    assert torch.equal(block_mask(seeds, b), expected)


def test_drop_block_gamma_hand_values():
    assert drop_block_gamma(0.1, 5, 10, 10) == pytest.approx(0.1 / 25 * 100 / 36)  # MetaOptNet block 3 at 84 px
    assert drop_block_gamma(0.1, 5, 5, 5) == pytest.approx(0.1)  # block = map: drop the whole map with p


def test_drop_block_drop_rate_and_rescaling():
    """Interior cells are covered by b² seed positions: P(kept) = (1 − γ)^{b²} (Ghiasi et al., eq. 1)."""
    torch.manual_seed(0)
    p, b, size = 0.1, 3, 40
    layer = DropBlock(p, b).train()
    x = torch.ones(64, 8, size, size)
    y = layer(x)
    gamma = drop_block_gamma(p, b, size, size)
    kept = (y[..., b - 1:size - b + 1, b - 1:size - b + 1] > 0).float().mean().item()
    assert kept == pytest.approx((1 - gamma) ** (b * b), abs=0.005)
    assert y.sum().item() == pytest.approx(x.numel(), rel=1e-5)  # count(M) / count_ones(M) keeps the total
    assert torch.equal(layer.eval()(x), x)


def test_drop_block_schedule_and_edge_cases():
    layer = DropBlock(0.2, 5, ramp_steps=4).train()
    probs = []
    for _ in range(6):
        layer(torch.ones(1, 1, 8, 8))
        probs.append(layer.current_drop_prob())
    assert probs == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])  # linear ramp to p, then p
    torch.manual_seed(0)
    tiny = DropBlock(0.5, 5).train()  # block clipped to the 2×2 map: each map is dropped whole (γ = p) or kept
    y = tiny(torch.ones(64, 4, 2, 2)).flatten(2)
    assert torch.equal(y.amin(-1), y.amax(-1))
    assert 0.3 < (y[..., 0] == 0).float().mean().item() < 0.7
    draws = torch.stack([DropBlock(0.9, 5).train()(torch.ones(1, 1, 2, 2)) for _ in range(20)])
    assert torch.isfinite(draws).all() and (draws.flatten(1).amax(1) == 0).any()  # all dropped: zeros, not NaN
    with pytest.raises(ValueError, match="drop_prob"):
        DropBlock(1.0)


def test_resnet12_drop_rate_places_dropout_and_dropblock():
    model = timm.create_model("resnet12_small", drop_rate=0.1, drop_block_size=5, drop_block_ramp=100)
    drops = [type(s.drop).__name__ for s in model.stages]
    assert drops == ["Dropout", "Dropout", "DropBlock", "DropBlock"]
    assert all(type(s.drop).__name__ == "Identity" for s in timm.create_model("resnet12_small").stages)


# -- Conv-4 readouts -------------------------------------------------------------------------------
@pytest.mark.parametrize("size,dim", [(84, 1600), (32, 256), (28, 64)])
def test_conv4_flatten_size_per_input(size, dim):
    assert _build("conv4", size)[1] == dim  # 64·⌊s/16⌋², Snell et al.: 1600 at 84 px


@pytest.mark.parametrize("size", [84, 32, 20])
def test_conv4_1600_is_1600_d_at_any_size(size):
    assert _build("conv4_1600", size)[1] == 1600


def test_conv4_1600_is_hyptorch_maxpool_at_84px():
    """hyptorch's ConvNet(z_dim=1600): encoder, then MaxPool2d(5) on the 5×5 map, flattened."""
    model = _randomise_bn(timm.create_model("conv4_1600", num_classes=0))
    x = torch.randn(2, 3, 84, 84, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), F.max_pool2d(model.stages(x), 5).flatten(1))


# -- feature maps --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,stem,channels,strides", [
    ("resnet18", "auto", [64, 64, 128, 256, 512], [1, 1, 2, 4, 8]),
    ("resnet18", False, [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
    ("resnet18d", "auto", [64, 64, 128, 256, 512], [1, 1, 2, 4, 8]),
    ("conv4", "auto", [64] * 4, [2, 4, 8, 16]),
    ("conv4_1600", "auto", [64, 64, 64, 1600], [2, 4, 8, 16]),
    ("resnet12", "auto", [64, 160, 320, 640], [2, 4, 8, 16]),
])
def test_feature_maps_shapes_strides_and_gradients(name, stem, channels, strides):
    size = 64
    model, _ = _build(name, size, small_input_stem=stem)
    fm = feature_maps(model)
    assert fm.backbone is model and fm.channels == channels and fm.strides == strides
    maps = fm(torch.randn(2, 3, size, size))
    assert [tuple(t.shape) for t in maps.values()] == [(2, c, size // s, size // s) for c, s in zip(channels, strides)]
    sum(t.square().mean() for t in maps.values()).backward()
    first = next(p for p in model.parameters())  # the stem / first conv: every map depends on it
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_feature_maps_indices_and_shared_weights():
    model, _ = _build("resnet18", 32)
    fm = feature_maps(model, indices=3)
    assert list(fm(torch.zeros(1, 3, 32, 32))) == ["layer2", "layer3", "layer4"] and fm.strides == [2, 4, 8]
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        before = fm(x)["layer4"]
        model.conv1.weight.neg_()  # a change to the backbone shows in the maps: no copy
        assert not torch.allclose(fm(x)["layer4"], before)
    assert feature_maps(model, indices=[-1]).names == ["layer4"]
    with pytest.raises(ConfigError, match="do not pick"):
        feature_maps(model, indices=9)


def test_feature_maps_error_names_the_method_to_implement():
    with pytest.raises(ConfigError, match="forward_intermediates.*feature_info"):
        feature_maps(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
