"""The plugins' config files (YAML variants, grids, published numbers) on the config search path.

Light on purpose: ``harness list`` reads them without importing Hydra (see ``benchmarks/bench_list.py``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from typing import Any

from harness.registry import config_root, get_registry


def group_folders(searchpath: list[str], group: str) -> Iterator[Any]:
    """The folder ``<group>/`` under each entry of the plugins' search path (``pkg://`` or a path) that
    can be resolved, in search-path order (it need not exist)."""
    for entry in searchpath:
        yield config_root(entry) / group  # config_searchpath() left out the entries it cannot resolve


def yaml_file(searchpath: list[str], group: str, name: str) -> Any:
    """The config file ``<group>/<name>.yaml`` on the plugins' search path, or None."""
    return next((path for folder in group_folders(searchpath, group)
                 if (path := folder / f"{name}.yaml").is_file()), None)


def config_names(searchpath: list[str], group: str) -> set[str]:
    """The names of the config files ``<group>/<name>.yaml`` on the plugins' search path."""
    return {p.name[:-5] for folder in group_folders(searchpath, group) if folder.is_dir()
            for p in folder.iterdir() if p.name.endswith(".yaml")}


def config_files_of(group: str, pattern: str = "*", width: int = 110) -> list[tuple[str, str]]:
    """(name, summary) of every config file ``<group>/<name>.yaml`` on the plugins' search path whose name
    matches the fnmatch ``pattern``, sorted by name; the summary is the first sentence of the file's
    opening comment (after ``# @package``), at most ``width`` characters (what ``harness list grids``
    shows)."""
    searchpath = get_registry().config_searchpath()
    out = []
    for name in sorted(config_names(searchpath, group)):
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        words = []
        for line in yaml_file(searchpath, group, name).read_text().splitlines():
            if not line.startswith("#"):
                break
            if not line.startswith("# @package"):
                words.append(line.lstrip("#").strip())
        sentence = re.split(r"(?<=\.)\s", " ".join(words), maxsplit=1)[0].rstrip(".")
        out.append((name, sentence if len(sentence) <= width else sentence[:width - 1].rstrip() + "…"))
    return out
