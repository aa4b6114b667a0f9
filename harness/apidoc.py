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
    "harness": ["hookimpl"],
    "harness.hookspecs": ["harness_methods", "harness_backbones", "harness_datasets", "harness_tasks",
                          "harness_config_searchpath", "harness_augmentations", "harness_weight_sources",
                          "harness_commands"],
    "harness.specs": ["PluginSpec"],
    "harness.method": ["Method", "TrainInfo", "Batch", "TrainState", "build_method", "check_geometry"],
    "harness.task": ["Task", "Protocol", "EvalContext", "Embedded", "MetricValue"],
    "harness.finetune": ["Finetune", "FinetuneContext"],
    "harness.data": ["ImageDataset", "DatasetInfo", "check_contents", "conform_images", "cached_tensors",
                     "cache_root"],
    "harness.geometry.spaces": ["EuclideanGeometry", "PoincareGeometry", "LorentzGeometry"],
    "harness.geometry": ["ToPoincare", "expmap0", "project"],
    "harness.config": ["TrainConfig", "BackboneConfig", "HarnessConfig", "check_dataset_config", "run_validate"],
    "harness.schedules": ["constant", "cosine", "step", "with_warmup"],
    "harness.augment": ["random_crop", "hflip", "random_resized_crop", "crop_resize", "color_jitter",
                        "random_grayscale", "gaussian_blur", "resolve_policy", "check_policy"],
    "harness.progress": ["Progress", "format_seconds"],
    "harness.errors": ["ConfigError", "Incompatible", "DatasetNotFoundError", "DatasetFormatError",
                       "UnknownPluginError", "PluginLoadError"],
}
OUT = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _doc(obj: object) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _summary(doc: str) -> str:
    """A docstring's first paragraph on one line (a member's summary)."""
    return " ".join(doc.split("\n\n")[0].split())


class _Written:
    """An annotation shown as written (the modules use ``from __future__ import annotations``, so the
    annotations are strings, which inspect would quote)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _signature(obj: object) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(…)"

    def written(annotation: object) -> object:
        return _Written(annotation) if isinstance(annotation, str) else annotation

    sig = sig.replace(parameters=[p.replace(annotation=written(p.annotation)) for p in sig.parameters.values()],
                      return_annotation=written(sig.return_annotation))
    return str(sig)


def _class_facts(cls: type) -> str:
    """The class attributes a plugin sets or reads (``VERSION``, ``supervised``, ``requires``, ``METRICS``,
    ``CONVENTION`` …) with their values here."""
    facts = [f"`{attr} = {value!r}`" for attr, value in cls.__dict__.items()
             if not attr.startswith("_") and attr.isidentifier() and not callable(value)
             and not isinstance(value, (property, classmethod, staticmethod)) and not inspect.isclass(value)]
    return "Class attributes: " + ", ".join(facts) if facts else ""


def _class(name: str, cls: type) -> list[str]:
    out = [f"### class `{name}{_signature(cls)}`", "", _doc(cls), ""]
    if dataclasses.is_dataclass(cls):
        out += ["Fields: " + ", ".join(f"`{f.name}: {f.type}`" for f in dataclasses.fields(cls)), ""]
    elif facts := _class_facts(cls):
        out += [facts, ""]
    members = []
    for attr, value in cls.__dict__.items():
        kind = "property " if isinstance(value, property) else "classmethod " if isinstance(value, classmethod) \
            else "staticmethod " if isinstance(value, staticmethod) else ""
        if attr.startswith("_") or not (inspect.isfunction(value) or kind):
            continue
        fn = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        doc = _doc(fn)
        if doc:
            sig = "" if isinstance(value, property) else _signature(fn)
            members.append(f"- {kind}`{attr}{sig}`: {_summary(doc)}")
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
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.apidoc",
                                     description=f"write the plugin author's API reference to {OUT}")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale; write nothing")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    text = render()
    if args.check:
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
