"""In-tree augmentation policies (the views a method can ask for with ``batch.view(name)``).

``none``, ``crop`` (the CIFAR pad-4 random crop), ``crop_flip`` and ``flip`` are
the light policies of supervised training. ``mocov2`` is MoCo v2's augmentation
(Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning",
their ``main_moco.py --aug-plus``): RandomResizedCrop(scale 0.2–1),
ColorJitter(0.4, 0.4, 0.4, 0.1) with p = 0.8, RandomGrayscale p = 0.2,
GaussianBlur σ ∈ [0.1, 2] with p = 0.5, horizontal flip. ``mocov2_nocrop`` is the same
without the resized crop: the view HCL (Ge et al., CVPR 2023; their loader's
``transform``) makes of an object or scene box crop already resized to the
input size. ``simclr`` is SimCLR's
(Chen et al. ICML 2020, Appendix A): RandomResizedCrop(scale 0.08–1), colour
distortion of strength 1 (ColorJitter(0.8, 0.8, 0.8, 0.2), p = 0.8, grayscale
p = 0.2), GaussianBlur p = 0.5 (σ ∈ [0.1, 2], kernel 10% of the side), flip; ``simclr_cifar`` is its
CIFAR-10 recipe (the released README's CIFAR-10 command, ``--color_jitter_strength=0.5 --use_blur=False``):
the same crop and flip, colour distortion of strength 0.5 (ColorJitter(0.4, 0.4, 0.4, 0.1)), no blur. ``hyp_vit`` and
``supcon`` are the views of those methods' released code (see each policy).
``colour`` is SimCLR's colour distortion without its crop, flip and blur (the views of the
label-free rows on the embedded data). ``resized_crop_flip`` is the training view of the
deep-metric-learning benchmarks as released with Deep_Metric / UnHyperML (``DataSet/CUB200.py``
``rand-crop``: RandomResizedCrop(scale 0.16–1, ``--ratio 0.16``) + horizontal flip).
"""

from __future__ import annotations

import torch

from harness import augment as A


def none(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    return x


def crop(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    return A.random_crop(x, gen, pad=4)


def crop_flip(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    return A.hflip(A.random_crop(x, gen, pad=4), gen)


def flip(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    return A.hflip(x, gen)


def resized_crop_flip(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    return A.hflip(A.random_resized_crop(x, gen, scale=(0.16, 1.0)), gen)


def mocov2(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    x = A.random_resized_crop(x, gen, scale=(0.2, 1.0))
    x = A.color_jitter(x, gen, 0.4, 0.4, 0.4, 0.1, p=0.8)
    x = A.random_grayscale(x, gen, p=0.2)
    x = A.gaussian_blur(x, gen, sigma=(0.1, 2.0), p=0.5)
    return A.hflip(x, gen)


def mocov2_nocrop(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    x = A.color_jitter(x, gen, 0.4, 0.4, 0.4, 0.1, p=0.8)
    x = A.random_grayscale(x, gen, p=0.2)
    x = A.gaussian_blur(x, gen, sigma=(0.1, 2.0), p=0.5)
    return A.hflip(x, gen)


def simclr(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    x = A.random_resized_crop(x, gen, scale=(0.08, 1.0))
    x = A.color_jitter(x, gen, 0.8, 0.8, 0.8, 0.2, p=0.8)
    x = A.random_grayscale(x, gen, p=0.2)
    x = A.gaussian_blur(x, gen, sigma=(0.1, 2.0), p=0.5)
    return A.hflip(x, gen)


def simclr_cifar(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    x = A.random_resized_crop(x, gen, scale=(0.08, 1.0))
    x = A.color_jitter(x, gen, 0.4, 0.4, 0.4, 0.1, p=0.8)
    x = A.random_grayscale(x, gen, p=0.2)
    return A.hflip(x, gen)


def hyp_vit(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Hyp-ViT (Ermolov et al., CVPR 2022; released github.com/htdt/hyp_metric ``train.py`` ``train_tr``):
    RandomResizedCrop(scale 0.2–1) and a horizontal flip (theirs resamples bicubic, ours ROI-align)."""
    return A.hflip(A.random_resized_crop(x, gen, scale=(0.2, 1.0)), gen)


def supcon(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """SupCon (Khosla et al., NeurIPS 2020; released github.com/HobbitLong/SupContrast ``main_supcon.py``):
    RandomResizedCrop(scale 0.2–1), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale p = 0.2."""
    x = A.hflip(A.random_resized_crop(x, gen, scale=(0.2, 1.0)), gen)
    x = A.color_jitter(x, gen, 0.4, 0.4, 0.4, 0.1, p=0.8)
    return A.random_grayscale(x, gen, p=0.2)


def colour(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """SimCLR's colour distortion alone (ColorJitter(0.8, 0.8, 0.8, 0.2) with p = 0.8, grayscale
    p = 0.2): no crop, flip or blur, so every pixel keeps its place. For data whose classes are
    outlines and textures under random colours (the embedded ``synthetic_hierarchy``): there SimCLR's and
    MoCo v2's full views leave the contrastive loss near log(2N − 1) and the methods at chance,
    while the colour views alone train them (see the README's label-free rows)."""
    x = A.color_jitter(x, gen, 0.8, 0.8, 0.8, 0.2, p=0.8)
    return A.random_grayscale(x, gen, p=0.2)
