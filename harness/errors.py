"""Errors a user can act on: each message says what was wrong and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """Base class of every error the harness raises on purpose."""


class UnknownPluginError(HarnessError, KeyError):
    """An unknown plugin name, with the closest matches and every choice."""

    def __init__(self, kind: str, name: str, choices: Iterable[str], hint: str = "",
                 preferred: Iterable[str] = ()) -> None:
        """``preferred``: the choices did-you-mean looks among first (the plugins before their config
        variants); the rest only when none of them is close."""
        self.kind, self.name, self.choices = kind, name, sorted(set(choices))
        close = difflib.get_close_matches(name, sorted(set(preferred)), n=3, cutoff=0.6) or \
            difflib.get_close_matches(name, self.choices, n=3, cutoff=0.6)
        msg = f"unknown {kind} '{name}'"
        if close:
            msg += "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        shown = self.choices if len(self.choices) <= 40 else self.choices[:40] + ["…"]
        msg += f"\nchoices: {', '.join(shown)}"
        if hint:
            msg += f"\n{hint}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class PluginConflictError(HarnessError):
    """Two distributions claim the same plugin name."""


class PluginLoadError(HarnessError):
    """A plugin distribution failed to import (raised only in strict mode)."""


class ConfigError(HarnessError, ValueError):
    """A config value a plugin cannot accept."""


class MissingConfigValue(ConfigError):
    """A plugin config field without a default was given no value (``make_config``)."""


class Incompatible(HarnessError):
    """This cell cannot run (e.g. the dataset lacks an annotation the task needs).

    The cell is recorded as ``skipped`` with this message as the reason, never as failed.
    """


class DatasetNotFoundError(HarnessError, FileNotFoundError):
    """A real dataset's files are missing; the message lists what is expected where."""


class DatasetFormatError(HarnessError, ValueError):
    """A real dataset's file is there but cannot be read as the published format (truncated, another
    format, an entry that refers to nothing); the message names the file and what is wrong in it."""
