"""Every hook of the harness.

A plugin is a module (or object) with functions marked ``@harness.hookimpl``
whose names are the hooks below. Third-party packages expose it through the
entry-point group ``harness``::

    [project.entry-points.harness]
    my_plugin = "my_package.harness_plugin"

The built-in plugins (``harness.plugins.methods``, ``harness.plugins.backbones``,
``harness.plugins.datasets``, ``harness.tasks``) are registered the same way.
Spec hooks must stay cheap: they return :class:`~harness.specs.PluginSpec`
objects naming ``"module:attr"`` targets, and import no model code.
"""

from __future__ import annotations

import pluggy

from harness.specs import PluginSpec

hookspec = pluggy.HookspecMarker("harness")
hookimpl = pluggy.HookimplMarker("harness")


@hookspec
def harness_methods() -> list[PluginSpec]:
    """Return the methods this plugin provides.

    Called once by the registry when it is first asked for methods (``harness
    list``, ``harness run``, the API). Each spec's target is a subclass of
    :class:`harness.method.Method`. Every implementation's list is collected;
    a name claimed twice is an error naming both distributions.
    """


@hookspec
def harness_backbones() -> list[PluginSpec]:
    """Return the backbone families this plugin provides.

    Called once by the registry. Each spec's target is a module or callable
    that, when imported, registers its models in timm's own registry
    (``timm.models.register_model``); the backbone is then built with
    ``timm.create_model(name)``. Any model timm already knows needs no spec.
    """


@hookspec
def harness_datasets() -> list[PluginSpec]:
    """Return the datasets this plugin provides.

    Called once by the registry. Each spec's target is a subclass of
    :class:`harness.data.ImageDataset`, built from its config group values.
    """


@hookspec
def harness_tasks() -> list[PluginSpec]:
    """Return the evaluation tasks this plugin provides.

    Called once by the registry. Each spec's target is a subclass of
    :class:`harness.task.Task`.
    """


@hookspec
def harness_config_searchpath() -> list[str]:
    """Return Hydra search-path entries holding this plugin's config groups.

    Called by ``harness run`` / ``harness sweep`` before composing the config.
    Entries use Hydra's provider syntax, e.g. ``"pkg://my_package.conf"``; the
    folder holds ``method/<name>.yaml``, ``task/<name>.yaml``, ``grid/<name>.yaml``
    and so on. A plugin whose options need no config file returns nothing: the
    registry adds a ``{name: …}`` node for every spec without one.
    """


@hookspec
def harness_augmentations() -> list[PluginSpec]:
    """Return the augmentation policies (views) this plugin provides.

    Called once by the registry. Each spec's target is a callable
    ``policy(images, generator) -> images`` on float ``(B, C, H, W)`` batches in
    [0, 1] on the training device (one random draw per image), used by
    ``batch.view(name)`` and ``train.augment=name``; see :mod:`harness.augment`.
    """


@hookspec
def harness_weight_sources() -> list[PluginSpec]:
    """Return the named offline weight sources this plugin provides (``backbone.pretrained=NAME``).

    Called by :func:`harness.backbones.build_backbone` when a backbone has
    ``pretrained`` set. Each spec's target is a callable ``load(model, timm_name,
    source) -> None`` that fills the timm ``model`` in place (and may set
    ``model.pretrained_cfg["mean"/"std"]``), raising
    :class:`~harness.errors.ConfigError` when it has no weights for ``timm_name``.
    It may carry a ``check(timm_name, source) -> str | None`` attribute that says, without
    reading any weights, why it cannot fill that model: the sweep asks it before any cell runs.
    The source named ``checkpoint`` is the one called for a file path.
    """


@hookspec
def harness_commands() -> list[PluginSpec]:
    """Return extra ``harness <command>`` subcommands this plugin provides.

    Called by the CLI when the command is not a built-in one. Each spec's
    target is a callable ``main(argv: list[str]) -> int`` (the exit status); its
    summary is the line ``harness --help`` prints.
    """
