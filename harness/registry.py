"""The plugin registry: a pluggy host over the entry-point group ``harness``.

Entry points are loaded one at a time: a distribution that fails to import is
a warning naming it (and everything else keeps working) unless strict mode is
on (``--strict-plugins`` or ``HARNESS_STRICT_PLUGINS=1``), where it is an
error. Two distributions claiming one plugin name is always an error.
"""

from __future__ import annotations

import fnmatch
import os
import re
import warnings
from importlib.metadata import entry_points
from typing import Any

import pluggy

from harness import hookspecs
from harness.errors import ConfigError, MissingConfigValue, PluginConflictError, PluginLoadError, UnknownPluginError
from harness.specs import ALL_KINDS, PluginSpec

ENTRY_POINT_GROUP = "harness"
STRICT_ENV = "HARNESS_STRICT_PLUGINS"
#: The distribution of the harness and its in-tree plugins (pyproject.toml's ``name``).
OWN_DISTRIBUTION = "hyperbolic-harness"
_HOOK_OF_KIND = {
    "method": "harness_methods",
    "backbone": "harness_backbones",
    "dataset": "harness_datasets",
    "task": "harness_tasks",
    "augmentation": "harness_augmentations",
    "weights": "harness_weight_sources",
    "command": "harness_commands",
}
#: What a plugin class of each kind must look like: (base class path, constructor arguments).
_CONTRACT = {
    "method": ("harness.method:Method", ("cfg", "backbone", "info")),
    "dataset": ("harness.data:ImageDataset", ("cfg",)),
    "task": ("harness.task:Task", ("cfg",)),
}


class PluginWarning(UserWarning):
    """A plugin distribution was skipped because it failed to load."""


def _strict_default() -> bool:
    return os.environ.get(STRICT_ENV, "").lower() in {"1", "true", "yes", "on"}


class Registry:
    """Every plugin spec, by kind and name, and the distributions they came from."""

    def __init__(self, *, strict: bool | None = None, load_entry_points: bool = True) -> None:
        self.strict = _strict_default() if strict is None else strict
        self.pm = pluggy.PluginManager("harness")
        self.pm.add_hookspecs(hookspecs)
        self._dist_of: dict[int, str] = {}
        self._specs: dict[str, dict[str, PluginSpec]] | None = None
        self.load_errors: list[str] = []
        if load_entry_points:
            self._load_entry_points()

    # -- registration ---------------------------------------------------------
    def _load_entry_points(self) -> None:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "?"
            if self.pm.get_plugin(ep.name) is not None:
                continue  # the same distribution seen twice on sys.path
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name, dist=dist)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - SystemExit at import too: a broken plugin is a warning
                self._fail(f"plugin '{ep.name}' from distribution '{dist}' failed to load: "
                           f"{type(exc).__name__}: {exc}", exc)
                continue
            if unmarked := self._unmarked_hooks(plugin):
                warnings.warn(f"plugin '{ep.name}' from distribution '{dist}' defines {', '.join(unmarked)} without "
                              "@hookimpl (from harness import hookimpl): pluggy ignores them, so they register "
                              "nothing", PluginWarning, stacklevel=2)
        for group in sorted({g for g in entry_points().groups if g != ENTRY_POINT_GROUP
                             and g.replace("-", "_").startswith(ENTRY_POINT_GROUP)}):
            names = ", ".join(f"{ep.name} ({ep.dist.name if ep.dist else '?'})" for ep in entry_points(group=group))
            warnings.warn(f"entry point(s) {names} are in the group '{group}'; the harness reads plugins from the "
                          f"group '{ENTRY_POINT_GROUP}' only ([project.entry-points.{ENTRY_POINT_GROUP}] in "
                          "pyproject.toml)", PluginWarning, stacklevel=2)

    def _unmarked_hooks(self, plugin: Any) -> list[str]:
        """Names of the hook functions ``plugin`` defines without ``@hookimpl`` (pluggy skips them)."""
        marked = {impl.function.__name__ for caller in self.pm.get_hookcallers(plugin) or []
                  for impl in caller.get_hookimpls() if impl.plugin is plugin}
        return [name for name in _hook_names() if callable(getattr(plugin, name, None)) and name not in marked]

    def _fail(self, message: str, exc: BaseException | None = None) -> None:
        if self.strict:
            raise PluginLoadError(message) from exc
        self.load_errors.append(message)
        warnings.warn(message + f" (skipped; set {STRICT_ENV}=1 to make this an error)",
                      PluginWarning, stacklevel=3)

    def register(self, plugin: Any, *, name: str | None = None, dist: str = "<local>") -> None:
        """Register a plugin object or module (what entry points do for installed packages)."""
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(plugin)
            hint = ""
            if (m := re.search(r"unknown hook '(\w+)'", str(exc))):
                import difflib

                hooks = _hook_names()
                close = difflib.get_close_matches(m.group(1), hooks, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (the hooks: {', '.join(hooks)})"
            raise PluginLoadError(f"distribution '{dist}': {exc}{hint}") from exc
        self._dist_of[id(plugin)] = dist
        self._specs = None

    # -- lookup ---------------------------------------------------------------
    def _collect(self) -> dict[str, dict[str, PluginSpec]]:
        from harness.config import check_name

        found: dict[str, dict[str, PluginSpec]] = {kind: {} for kind in ALL_KINDS}
        for kind, hook_name in _HOOK_OF_KIND.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                dist = self._dist_of.get(id(impl.plugin), "<local>")
                try:
                    specs = impl.function() or []
                except Exception as exc:  # noqa: BLE001 - a broken hook is a broken plugin
                    self._fail(f"distribution '{dist}': its {hook_name}() raised {type(exc).__name__}: {exc}", exc)
                    continue
                if not isinstance(specs, (list, tuple)) or not all(isinstance(s, PluginSpec) for s in specs):
                    got = type(specs).__name__ if not isinstance(specs, (list, tuple)) else \
                        f"a {type(specs).__name__} holding {sorted({type(s).__name__ for s in specs})}"
                    self._fail(f"distribution '{dist}': its {hook_name}() must return a list of "
                               f"harness.specs.PluginSpec, got {got}")
                    continue
                for spec in specs:
                    try:
                        check_name(kind, spec.name)
                    except ConfigError as exc:
                        self._fail(f"distribution '{dist}' registers a {kind} with a bad name: {exc}", exc)
                        continue
                    spec = PluginSpec(spec.name, spec.target, spec.summary, kind, dist)
                    prev = found[kind].get(spec.name)
                    if prev is not None and prev.dist != dist:
                        raise PluginConflictError(
                            f"{kind} '{spec.name}' is registered by both distribution "
                            f"'{prev.dist}' ({prev.target}) and '{dist}' ({spec.target}); "
                            "uninstall one of them or rename the plugin")
                    if prev is not None and prev.target != spec.target:
                        raise PluginConflictError(
                            f"distribution '{dist}' registers {kind} '{spec.name}' twice ({prev.target} and "
                            f"{spec.target}); rename one of them")
                    found[kind][spec.name] = spec
        return found

    def specs(self, kind: str) -> dict[str, PluginSpec]:
        """All specs of one kind, by name."""
        if kind not in ALL_KINDS:
            raise UnknownPluginError("plugin kind", kind, ALL_KINDS)
        if self._specs is None:
            self._specs = self._collect()
        return dict(sorted(self._specs[kind].items()))

    def get(self, kind: str, name: str) -> PluginSpec:
        """The spec of ``name``; an unknown name raises with did-you-mean."""
        specs = self.specs(kind)
        if name in specs:
            return specs[name]
        raise UnknownPluginError(kind, name, specs)

    def load(self, kind: str, name: str) -> Any:
        """Import and return the plugin class (or module) behind ``name``, checked against its kind's
        contract (base class and constructor), so a wrong plugin fails here with the expected signature."""
        spec = self.get(kind, name)
        try:
            obj = spec.load()
        except Exception as exc:  # noqa: BLE001 - an import error of the plugin's own code, named
            raise PluginLoadError(f"{kind} '{name}' ({spec.target}, distribution '{spec.dist or '?'}') failed to "
                                  f"import: {type(exc).__name__}: {exc}") from exc
        if kind in _CONTRACT:
            check_contract(kind, spec, obj)
        return obj

    def list(self, kind: str, pattern: str = "*") -> list[PluginSpec]:
        """Specs of one kind whose names match an fnmatch ``pattern``."""
        return [s for n, s in self.specs(kind).items() if fnmatch.fnmatchcase(n, pattern)]

    def config_searchpath(self) -> list[str]:
        """Hydra search-path entries contributed by every plugin. A ``pkg://`` entry whose package
        cannot be imported is left out and warned about once (:func:`config_root`)."""
        paths: list[str] = []
        for result in self.pm.hook.harness_config_searchpath():
            paths.extend(p for p in result or [] if p not in paths)
        usable = []
        for entry in paths:
            try:
                config_root(entry)
                usable.append(entry)
            except PluginLoadError as exc:
                if entry not in _WARNED_PATHS:
                    _WARNED_PATHS.add(entry)
                    warnings.warn(str(exc), PluginWarning, stacklevel=2)
        return usable

    def dist_versions(self) -> dict[str, str]:
        """Installed version of every distribution that registered plugins; the harness's own is
        ``harness.__version__`` (an editable install's metadata keeps the version it was installed at)."""
        from importlib.metadata import PackageNotFoundError, version

        from harness import __version__

        out = {}
        for dist in sorted(set(self._dist_of.values())):
            try:
                out[dist] = __version__ if dist == OWN_DISTRIBUTION else version(dist)
            except PackageNotFoundError:
                out[dist] = "unknown"
        return out


_WARNED_PATHS: set[str] = set()


def _hook_names() -> list[str]:
    """The hooks a plugin may implement (:mod:`harness.hookspecs`), sorted."""
    return sorted(name for name in dir(hookspecs) if name.startswith("harness_"))


def config_root(entry: str) -> Any:
    """The folder a config search-path entry names: ``pkg://a.conf`` (a package's folder) or
    ``file://path`` / a path. A ``pkg://`` entry whose package cannot be imported is a
    :class:`PluginLoadError` that says how a config folder ships."""
    import importlib.resources
    import importlib.util
    from pathlib import Path

    if not entry.startswith("pkg://"):
        return Path(entry.removeprefix("file://"))
    package = entry[len("pkg://"):]
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # its parent package is not there either
        found = False
    if not found:
        raise PluginLoadError(
            f"the plugin config path {entry} cannot be imported (no installed package '{package}'): its config "
            "variants and grids are not available. A config folder ships as a package: give it an __init__.py, "
            "list it in the distribution's packages and its YAML files in its package data (as "
            "examples/third_party_plugin/pyproject.toml does), then reinstall")
    return importlib.resources.files(package)


def check_contract(kind: str, spec: PluginSpec, cls: Any) -> None:
    """A plugin class must subclass its kind's base class and take its constructor arguments."""
    import inspect

    base_path, args = _CONTRACT[kind]
    base = PluginSpec("", base_path, "").load()
    where = f"{kind} '{spec.name}' ({spec.target}, distribution '{spec.dist or '?'}')"
    expected = f"{base.__module__}.{base.__qualname__}, constructed as {base.__qualname__}({', '.join(args)})"
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginLoadError(f"{where} is {cls!r}, not a subclass of {expected}")
    try:
        inspect.signature(cls).bind(*args)
    except TypeError as exc:
        raise PluginLoadError(f"{where}: its constructor {cls.__qualname__}{inspect.signature(cls)} cannot be "
                              f"called with ({', '.join(args)}) ({exc}); expected {expected}") from exc
    if not hasattr(cls, "Config"):
        raise PluginLoadError(f"{where} has no nested Config dataclass (its config schema)")
    import dataclasses

    if not dataclasses.is_dataclass(cls.Config):
        raise PluginLoadError(f"{where}: its Config is not a dataclass; decorate it with @dataclass")
    name = next((f for f in dataclasses.fields(cls.Config) if f.name == "name"), None)
    if name is None or name.default != spec.name:
        # the composed config's name selects the class: another default would run another plugin
        got = "has no name field" if name is None else f"has name defaulting to {name.default!r}"
        if "Config" not in vars(cls):  # inherited: the class declares no config of its own
            owner = next(base for base in cls.__mro__ if "Config" in vars(base))
            got += f" (it is {owner.__qualname__}.Config, inherited: {cls.__qualname__} declares none)"
        raise PluginLoadError(f"{where}: its Config {got}; it needs the field "
                              f"name: str = {spec.name!r}, the name it is registered under")
    if kind == "task":
        _check_metric_declarations(where, cls)


def _check_metric_declarations(where: str, cls: Any) -> None:
    """A task's ``BOUNDS`` are well formed and each names a metric of ``METRICS`` or a family of them (the
    part of a name before its first ``/``): a misspelt key would leave its metric unchecked, silently."""
    import difflib

    from harness.bounds import check_bounds

    metrics = getattr(cls, "METRICS", {}) or {}
    families = {m.split("/", 1)[0] for m in metrics}
    for name, bounds in (getattr(cls, "BOUNDS", {}) or {}).items():
        try:
            check_bounds(bounds)
        except ValueError as exc:
            raise PluginLoadError(f"{where}: BOUNDS[{name!r}]: {exc}") from None
        if metrics and name not in metrics and name not in families:
            close = difflib.get_close_matches(name, [*metrics, *families], n=1, cutoff=0.6)
            raise PluginLoadError(f"{where}: BOUNDS names {name!r}, which is no metric of its METRICS"
                                  + (f" (did you mean {close[0]!r}?)" if close else f" ({', '.join(metrics)})"))


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (entry points are read once)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests, embedding applications)."""
    global _REGISTRY
    _REGISTRY = registry


def make_config(cls: Any, values: Any = None, **overrides: Any) -> Any:
    """Build ``cls.Config`` from a mapping (a Hydra node, a dict) plus overrides.

    An unknown key is a :class:`~harness.errors.ConfigError` listing the valid keys.
    """
    import dataclasses

    from harness.errors import ConfigError

    schema = cls.Config
    if values is not None and not isinstance(values, dict):
        from omegaconf import OmegaConf

        values = OmegaConf.to_container(values, resolve=True) if OmegaConf.is_config(values) else dict(values)
    merged = {**(values or {}), **overrides}
    fields = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(merged) - fields)
    where = merged.get("name") or cls.__name__
    if unknown:
        raise ConfigError(f"{where} has no config key(s) {unknown}; valid keys: {sorted(fields)}")
    missing = sorted(k for k, v in merged.items() if isinstance(v, str) and v == "???")
    missing += sorted(f.name for f in dataclasses.fields(schema) if f.name not in merged
                      and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        kind = next((k for k, (base, _) in _CONTRACT.items()
                     if isinstance(cls, type) and issubclass(cls, PluginSpec("", base, "").load())), "KIND")
        verb = "has" if len(missing) == 1 else "have"
        raise MissingConfigValue(f"{where}: {', '.join(missing)} {verb} no default and no value; give one on the "
                                 f"command line ({kind}.{missing[0]}=VALUE) or a default in the plugin's Config")
    _check_types(schema, merged, where)
    try:
        return schema(**merged)
    except TypeError as exc:
        raise ConfigError(f"bad config for {where}: {exc}") from exc


def _check_types(schema: type, values: dict[str, Any], where: str) -> None:
    """Values against the schema's annotations (int, float, str, bool, list, dict, Optional); an int
    passes for a float. Annotations the check does not understand are left alone."""
    import typing

    try:
        hints = typing.get_type_hints(schema)
    except Exception:  # noqa: BLE001 - an annotation we cannot resolve: nothing to check against
        return
    for key, value in values.items():
        hint = hints.get(key)
        if hint is None or _matches(hint, value):
            continue
        raise ConfigError(f"{where}.{key}: expected {_type_name(hint)}, got {value!r}")


def _matches(hint: Any, value: Any) -> bool:
    import types
    import typing

    origin = typing.get_origin(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(h, value) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return len(args) != 1 or all(_matches(args[0], v) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def create(kind: str, name_or_cfg: Any, **overrides: Any) -> Any:
    """Instantiate a dataset or task plugin by name (``create("dataset", "glyphs", n_per_class=5)``)
    or from a config node that has a ``name`` key."""
    if isinstance(name_or_cfg, str):
        name, values = name_or_cfg, {"name": name_or_cfg}
    else:
        values = name_or_cfg
        name = values["name"]
    cls = get_registry().load(kind, name)
    return cls(make_config(cls, values, **overrides))
