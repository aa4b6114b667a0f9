"""In-tree methods. This module is the entry point: it lists specs and imports no model code."""

from harness import PluginSpec, hookimpl

_M = "harness.plugins.methods"


@hookimpl
def harness_methods() -> list[PluginSpec]:
    return [
        PluginSpec("euclidean_ce", f"{_M}.euclidean_ce:EuclideanCE",
                   "Softmax cross-entropy on Euclidean features (the baseline)"),
        PluginSpec("fixed_radius_protonet", f"{_M}.protonet:FixedRadiusProtoNet",
                   "Episodic ProtoNet on a sphere of radius r, the Euclidean control of hyperbolic_protonet "
                   "(Moreira et al., WACV 2024)"),
        PluginSpec("hack", f"{_M}.hack:Hack",
                   "Images assigned 1-to-1 to uniformly packed Poincaré particles; radius = prototypicality "
                   "(HACK, arXiv 2307.01421; unsupervised)"),
        PluginSpec("hack_per_class", f"{_M}.hack:HackPerClass",
                   "HACK as released: particles packed and assigned per class (reads labels)"),
        PluginSpec("hcl", f"{_M}.hcl:HCL",
                   "Hyperbolic contrastive learning: MoCo on object crops + scene-object loss on the ball "
                   "(Ge et al., CVPR 2023)"),
        PluginSpec("hcl_euclidean_only", f"{_M}.hcl:HCLEuclideanOnly",
                   "HCL's Euclidean control: the MoCo loss on the same object crops, no hyperbolic loss (λ = 0)"),
        PluginSpec("hcm", f"{_M}.hcm:HCM",
                   "Poincaré MLR on coarse labels + hierarchical cosine margins (Xu et al., NeurIPS 2023)"),
        PluginSpec("hcm_euclidean", f"{_M}.hcm:HCMEuclidean",
                   "Euclidean HCM: the same margins with a linear classifier (the control the summary of Xu et al. proposes)"),
        PluginSpec("hyp_vit", f"{_M}.hyp_vit:HypViT",
                   "Hyp-ViT: Poincaré embeddings, pairwise cross-entropy, m per class (Ermolov et al., CVPR 2022)"),
        PluginSpec("hyp_vit_sphere", f"{_M}.hyp_vit:HypViTSphere",
                   "Hyp-ViT's Euclidean control: the same loss on the unit sphere (cosine distance)"),
        PluginSpec("hyperbolic_protonet", f"{_M}.protonet:HyperbolicProtoNet",
                   "Episodic ProtoNet in the Poincaré ball, Einstein-midpoint prototypes (Khrulkov et al., CVPR 2020)"),
        PluginSpec("mocov2", f"{_M}.moco:MoCoV2",
                   "MoCo v2: momentum contrast with a queue on two views (Chen et al. 2020), label-free"),
        PluginSpec("poincare_mlr", f"{_M}.poincare_mlr:PoincareMLR",
                   "Exp map to the Poincaré ball + hyperbolic MLR (Khrulkov et al., CVPR 2020)"),
        PluginSpec("protonet", f"{_M}.protonet:ProtoNet",
                   "Episodic prototypical network, squared Euclidean distance (Snell et al., NeurIPS 2017)"),
        PluginSpec("random_init", f"{_M}.random_init:RandomInit",
                   "reference row: the untrained backbone's features (no training)"),
        PluginSpec("simclr", f"{_M}.simclr:SimCLR",
                   "SimCLR: NT-Xent between two views with in-batch negatives, LARS (Chen et al., ICML 2020)"),
        PluginSpec("supcon", f"{_M}.supcon:SupCon",
                   "Supervised contrastive loss L_out on two views (Khosla et al., NeurIPS 2020)"),
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
