"""Hydra sweeper ``harness``: the basic grid sweeper with ``exclude`` rules.

A grid is the cross product of its axes; some pairs make no sense or waste a
training run (re-ID on data without cameras, every other task on the re-ID
data). ``hydra.sweeper.exclude`` drops them before any job starts, like a CI
matrix's ``exclude``: each rule maps axis names to a value or a list of
values, a value starting with ``!`` matches every other value, and a cell is
dropped when it matches every key of one rule::

    hydra:
      sweeper:
        exclude:
          - {dataset: reid_synthetic, task: "!reid"}   # the re-ID data serves the re-ID task only
          - {dataset: synthetic_hierarchy, task: reid}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra._internal.core_plugins import basic_sweeper
from hydra._internal.core_plugins.basic_sweeper import BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper


@dataclass
class HarnessSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.hyperbolic_harness.sweeper.HarnessSweeper"
    exclude: list[Any] = field(default_factory=list)


ConfigStore.instance().store(group="hydra/sweeper", name="harness", node=HarnessSweeperConf,
                             provider="hyperbolic-harness")


class HarnessSweeper(Sweeper):
    """Hydra's ``BasicSweeper`` (held, not subclassed: Hydra's plugin scan re-executes plugin modules, so a
    subclass would see a second copy of its base) with the exclude rules applied to its job list."""

    def __init__(self, max_batch_size: Optional[int], params: Optional[dict[str, str]] = None,
                 exclude: Optional[list[Any]] = None) -> None:
        from harness.sweep import check_exclude_rules, drop_excluded

        rules = check_exclude_rules(exclude)
        BasicSweeper = basic_sweeper.BasicSweeper  # looked up now: the scan may have re-executed its module
        self.basic = BasicSweeper(max_batch_size=max_batch_size, params=params)

        def split_arguments(overrides: Any, batch_size: Optional[int]) -> list[list[list[str]]]:
            jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
            jobs = drop_excluded(jobs, rules)
            return [jobs] if batch_size is None else list(BasicSweeper.split_overrides_to_chunks(jobs, batch_size))

        self.basic.split_arguments = split_arguments  # type: ignore[method-assign]

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.basic.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.basic.sweep(arguments)
