"""Lazy plugin specifications: what ``harness list`` shows without importing model code."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

#: The plugin kinds that are Hydra config groups, in the order ``harness list`` prints them.
KINDS: tuple[str, ...] = ("method", "backbone", "dataset", "task")
#: Every plugin kind: the config groups plus augmentation policies, weight sources and CLI commands.
ALL_KINDS: tuple[str, ...] = (*KINDS, "augmentation", "weights", "command")


@dataclass(frozen=True)
class PluginSpec:
    """One plugin, described without importing it.

    ``target`` is a ``"module:attr"`` string naming the plugin class; it is
    imported only when the plugin is used. The class carries its config schema
    as a nested ``Config`` dataclass (see :meth:`schema`). ``dist`` is filled in by
    the registry with the distribution that registered the spec.
    """

    name: str
    target: str
    summary: str
    kind: str = ""
    dist: str = field(default="", compare=False)

    def load(self) -> Any:
        """Import and return the object named by ``target``."""
        module_name, _, attr = self.target.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
        return obj
