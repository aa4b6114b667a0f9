"""The plugin author's API reference, generated from the docstrings: ``python -m harness.apidoc``.

Writes ``docs/api.md`` (``--check`` exits 1 when it is stale; a test runs it). Every
public class and function of the modules a plugin author touches is listed with
its signature and docstring, classes with their public methods and dataclass fields.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from pathlib import Path

#: module -> the names documented (in this order)
MODULES: dict[str, list[str]] = {
    "harness.hookspecs": ["harness_methods", "harness_backbones", "harness_datasets", "harness_tasks",
                          "harness_config_searchpath", "harness_augmentations", "harness_weight_sources",
                          "harness_commands"],
    "harness.specs": ["PluginSpec"],
    "harness.method": ["Method", "TrainInfo", "Batch", "TrainState"],
    "harness.task": ["Task", "Protocol", "EvalContext", "Embedded", "MetricValue"],
    "harness.finetune": ["Finetune", "FinetuneContext"],
    "harness.data": ["ImageDataset", "DatasetInfo", "conform_images", "cached_tensors", "cache_root"],
    "harness.geometry.spaces": ["EuclideanGeometry", "PoincareGeometry"],
    "harness.config": ["TrainConfig", "BackboneConfig", "HarnessConfig"],
    "harness.schedules": ["constant", "cosine", "step", "with_warmup"],
    "harness.augment": ["random_crop", "hflip", "random_resized_crop", "crop_resize", "color_jitter",
                        "random_grayscale", "gaussian_blur", "resolve_policy", "check_policy"],
    "harness.progress": ["Progress", "format_seconds"],
    "harness.errors": ["ConfigError", "Incompatible", "DatasetNotFoundError", "UnknownPluginError"],
}
OUT = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _doc(obj: object) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _signature(obj: object) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(…)"
    return sig.replace("'", "")


def _class(name: str, cls: type) -> list[str]:
    out = [f"### class `{name}{_signature(cls)}`", "", _doc(cls), ""]
    if dataclasses.is_dataclass(cls):
        out += ["Fields: " + ", ".join(f"`{f.name}: {f.type}`" for f in dataclasses.fields(cls)), ""]
    members = []
    for attr, value in cls.__dict__.items():
        if attr.startswith("_") or not (inspect.isfunction(value) or isinstance(value, property)):
            continue
        fn = value.fget if isinstance(value, property) else value
        doc = _doc(fn)
        if doc:
            kind = "property " if isinstance(value, property) else ""
            sig = "" if isinstance(value, property) else _signature(fn)
            members.append(f"- {kind}`{attr}{sig}`: {doc.splitlines()[0]}")
    if members:
        out += members + [""]
    return out


def render() -> str:
    lines = ["# API reference for plugin authors", "",
             "Generated from the docstrings by `python -m harness.apidoc`; do not edit.", ""]
    for module_name, names in MODULES.items():
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", "", _doc(module).split("\n\n")[0], ""]
        for name in names:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                lines += _class(name, obj)
            else:
                lines += [f"### `{name}{_signature(obj)}`", "", _doc(obj), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: regenerate with `python -m harness.apidoc`", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
