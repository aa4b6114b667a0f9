"""In-tree augmentation policies (entry point: specs only, the policies live in :mod:`.policies`)."""

from harness import PluginSpec, hookimpl

_P = "harness.plugins.augmentations.policies"


@hookimpl
def harness_augmentations() -> list[PluginSpec]:
    return [
        PluginSpec("none", f"{_P}:none", "no augmentation"),
        PluginSpec("crop", f"{_P}:crop", "pad-4 reflect random crop (CIFAR)"),
        PluginSpec("crop_flip", f"{_P}:crop_flip", "pad-4 random crop + horizontal flip"),
        PluginSpec("flip", f"{_P}:flip", "horizontal flip"),
        PluginSpec("mocov2", f"{_P}:mocov2", "MoCo v2 strong view: resized crop 0.2-1, jitter, gray, blur, flip"),
        PluginSpec("hyp_vit", f"{_P}:hyp_vit", "Hyp-ViT's view: resized crop 0.2-1 + flip"),
        PluginSpec("supcon", f"{_P}:supcon", "SupCon's view: resized crop 0.2-1, flip, jitter 0.4 (p 0.8), gray"),
        PluginSpec("mocov2_nocrop", f"{_P}:mocov2_nocrop",
                   "MoCo v2's jitter, gray, blur, flip without the resized crop (HCL's box-crop views)"),
        PluginSpec("resized_crop_flip", f"{_P}:resized_crop_flip",
                   "metric-learning view: resized crop 0.16-1 + flip (Deep_Metric / UnHyperML rand-crop)"),
        PluginSpec("colour", f"{_P}:colour",
                   "SimCLR's colour distortion alone (jitter 0.8 p 0.8, gray p 0.2): every pixel keeps its place"),
        PluginSpec("simclr", f"{_P}:simclr", "SimCLR strong view: resized crop 0.08-1, jitter 0.8, gray, blur, flip"),
        PluginSpec("simclr_cifar", f"{_P}:simclr_cifar",
                   "SimCLR's CIFAR-10 view: resized crop 0.08-1, jitter 0.4 (strength 0.5), gray, flip, no blur"),
    ]
