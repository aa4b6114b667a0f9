"""Entry point of the example plugin: specs and config search path, nothing heavy imported."""

from harness import PluginSpec, hookimpl


@hookimpl
def harness_methods() -> list[PluginSpec]:
    return [PluginSpec("cosine_ce", "harness_example.cosine_ce:CosineCE",
                       "Normalised softmax (NormFace): cosine logits with a temperature")]


@hookimpl
def harness_tasks() -> list[PluginSpec]:
    return [PluginSpec("nearest_centroid", "harness_example.nearest_centroid:NearestCentroid",
                       "Held-out accuracy of the nearest class prototype from the training split")]


@hookimpl
def harness_config_searchpath() -> list[str]:
    return ["pkg://harness_example.conf"]
