"""In-tree methods. This module is the entry point: it lists specs and imports no model code."""

from harness import PluginSpec, hookimpl

_M = "harness.plugins.methods"


@hookimpl
def harness_methods() -> list[PluginSpec]:
    return [
        PluginSpec("euclidean_ce", f"{_M}.euclidean_ce:EuclideanCE",
                   "Softmax cross-entropy on Euclidean features (the baseline)"),
        PluginSpec("hcl", f"{_M}.hcl:HCL",
                   "Hyperbolic contrastive learning: MoCo on object crops + scene-object loss on the ball "
                   "(Ge et al., CVPR 2023)"),
        PluginSpec("hcl_euclidean_only", f"{_M}.hcl:HCLEuclideanOnly",
                   "HCL's Euclidean control: the MoCo loss on the same object crops, no hyperbolic loss (λ = 0)"),
        PluginSpec("mocov2", f"{_M}.moco:MoCoV2",
                   "MoCo v2: momentum contrast with a queue on two views (Chen et al. 2020), label-free"),
        PluginSpec("poincare_mlr", f"{_M}.poincare_mlr:PoincareMLR",
                   "Exp map to the Poincaré ball + hyperbolic MLR (Khrulkov et al., CVPR 2020)"),
        PluginSpec("random_init", f"{_M}.random_init:RandomInit",
                   "reference row: the untrained backbone's features (no training)"),
        PluginSpec("simclr", f"{_M}.simclr:SimCLR",
                   "SimCLR: NT-Xent between two views with in-batch negatives, LARS (Chen et al., ICML 2020)"),
    ]


@hookimpl
def harness_config_searchpath() -> list[str]:
    # Config groups of every in-tree method, backbone, dataset and grid.
    return ["pkg://harness.plugins.conf"]
