"""In-tree methods. This module is the entry point: it lists specs and imports no model code."""

from harness import PluginSpec, hookimpl

_M = "harness.plugins.methods"


@hookimpl
def harness_methods() -> list[PluginSpec]:
    return [
        PluginSpec("euclidean_ce", f"{_M}.euclidean_ce:EuclideanCE",
                   "Softmax cross-entropy on Euclidean features (the baseline)"),
        PluginSpec("hack", f"{_M}.hack:Hack",
                   "Images assigned 1-to-1 to uniformly packed Poincaré particles; radius = prototypicality "
                   "(HACK, arXiv 2307.01421; unsupervised)"),
        PluginSpec("hack_per_class", f"{_M}.hack:HackPerClass",
                   "HACK as released: particles packed and assigned per class (reads labels)"),
        PluginSpec("poincare_mlr", f"{_M}.poincare_mlr:PoincareMLR",
                   "Exp map to the Poincaré ball + hyperbolic MLR (Khrulkov et al., CVPR 2020)"),
        PluginSpec("random_init", f"{_M}.random_init:RandomInit",
                   "reference row: the untrained backbone's features (no training)"),
        PluginSpec("uhml", f"{_M}.uhml:Uhml",
                   "Poincaré embeddings, log-ratio loss on similarity degrees from average-link pseudo "
                   "hierarchies (Yan et al., CVPR 2021; unsupervised)"),
        PluginSpec("uhml_euclidean", f"{_M}.uhml:UhmlEuclidean",
                   "UHML's Euclidean control: the same method on L2-normalised Euclidean embeddings"),
    ]


@hookimpl
def harness_config_searchpath() -> list[str]:
    # Config groups of every in-tree method, backbone, dataset and grid.
    return ["pkg://harness.plugins.conf"]
