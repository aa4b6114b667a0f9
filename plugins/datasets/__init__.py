"""In-tree datasets. This module is the entry point: it lists specs and imports no data code."""

from harness import PluginSpec, hookimpl

_D = "harness.plugins.datasets"


@hookimpl
def harness_datasets() -> list[PluginSpec]:
    return [
        PluginSpec("synthetic_hierarchy", f"{_D}.synthetic_hierarchy:SyntheticHierarchy",
                   "Generated coarse → fine image hierarchy (embedded default, no download)"),
    ]
