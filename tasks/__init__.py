"""In-tree evaluation tasks. This module is the entry point: it lists specs and imports nothing heavy."""

from harness import PluginSpec, hookimpl

_T = "harness.tasks"


@hookimpl
def harness_tasks() -> list[PluginSpec]:
    return [
        PluginSpec("delta", f"{_T}.delta:Delta",
                   "Gromov δ-hyperbolicity (δ, δ_rel = 2δ/diam) of embeddings and raw features"),
        PluginSpec("few_shot", f"{_T}.few_shot:FewShot",
                   "N-way K-shot episodes on novel classes, prototypes in the method's geometry"),
        PluginSpec("fine_from_coarse", f"{_T}.fine_from_coarse:FineFromCoarse",
                   "train on coarse labels, fine-class 5-way and all-way few-shot episodes (HCM)"),
        PluginSpec("reid", f"{_T}.reid:Reid",
                   "query/gallery re-identification: CMC, mAP (torchreid Market-1501), mINP"),
        PluginSpec("retrieval", f"{_T}.retrieval:Retrieval",
                   "class-disjoint retrieval: Recall@K, R-precision, MAP@R, NMI"),
        PluginSpec("ood", f"{_T}.ood:OOD",
                   "OOD detection (near: novel classes, far: other datasets): AUROC, AUPR, FPR@95"),
        PluginSpec("detection", f"{_T}.detection:Detection",
                   "detection transfer: Faster/Mask R-CNN + FPN fine-tuned on the backbone, COCO AP"),
        PluginSpec("hierarchy", f"{_T}.hierarchy:Hierarchy",
                   "label-tree fidelity: CPCC, top-1 with mistake severity, radius-angle Spearman"),
        PluginSpec("typicality", f"{_T}.typicality:Typicality",
                   "do typical images lie nearer the origin: Spearman of dist0 with annotated atypicality"),
        PluginSpec("instance_selection", f"{_T}.instance_selection:InstanceSelection",
                   "HACK's sample complexity: classifiers trained from scratch on the most typical / atypical "
                   "fraction of each class (by dist0) against a random one"),
    ]


@hookimpl
def harness_config_searchpath() -> list[str]:
    return ["pkg://harness.tasks.conf"]


@hookimpl
def harness_commands() -> list[PluginSpec]:
    return [PluginSpec("delta", f"{_T}.delta_cli:cli_main",
                       "Gromov δ-hyperbolicity of a feature or distance matrix (.npy/.pt)")]
