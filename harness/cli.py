"""``harness list | run | sweep | leaderboard | report | check-plugin`` and plugin commands (``delta``).

``list`` imports no model code (specs are lazy). ``run`` and ``sweep`` take
Hydra overrides (``method=poincare_mlr seed=1``); everything else is argparse.
Plugins add subcommands through the ``harness_commands`` hook.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

USAGE = """usage: harness <command> [args]

commands:
  list [KIND] [PATTERN]        plugins (methods, backbones, datasets, tasks, augmentations, weights,
                               commands) and grids; PATTERN is fnmatch; `harness list backbones 'resnet*'`
                               also lists timm's models
  run [OVERRIDES...]           one cell, e.g. harness run method=poincare_mlr task=few_shot seed=1
  sweep [OVERRIDES...] [--yes] a grid (grid=default | grid=quick | method=a,b seed=0,1,2 ...)
  leaderboard RESULTS_DIR      render leaderboards (--out DIR, default RESULTS_DIR/leaderboards;
                               --check; --readme README.md)
  report RESULTS_DIR --out DIR one markdown page with the tables and plots of a sweep
  check-plugin DIST            the registry's smoke tests on every plugin of a distribution
{plugin_commands}
exit status: 0 all cells ok or skipped, 1 a cell failed, 2 bad input, 3 a cell left to another process still
             running it (run again later), 130 interrupted
options: --strict-plugins (or HARNESS_STRICT_PLUGINS=1) makes a plugin that fails to load an error
"""


def _kind(word: str) -> str:
    from harness.specs import ALL_KINDS

    singular = {"weights": "weights", "commands": "command"}.get(word) or (word[:-1] if word.endswith("s") else word)
    if singular not in ALL_KINDS:
        from harness.errors import UnknownPluginError

        raise UnknownPluginError("plugin kind", word, [*(k if k == "weights" else f"{k}s" for k in ALL_KINDS), "grids"])
    return singular


def cmd_list(argv: list[str]) -> int:
    from tabulate import tabulate

    from harness.config_files import config_files_of
    from harness.registry import get_registry
    from harness.specs import ALL_KINDS, KINDS

    parser = argparse.ArgumentParser(prog="harness list")
    parser.add_argument("kind", nargs="?", help="methods | backbones | datasets | tasks | augmentations | "
                                                "weights | commands | grids")
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern on names")
    args = parser.parse_args(argv)
    registry = get_registry()
    grids_only = args.kind in ("grid", "grids")
    kinds = [] if grids_only else [_kind(args.kind)] if args.kind else list(ALL_KINDS)
    for kind in kinds:
        rows = [[s.name, s.dist, s.summary] for s in registry.list(kind, args.pattern)]
        title = kind if kind == "weights" else kind + "s"
        print(f"{title}:")
        if rows:
            print(tabulate(rows, headers=["name", "distribution", "summary"], tablefmt="simple"))
        elif kind != "backbone":
            print(f"  (none matches {args.pattern!r}; `harness list {title}` shows them all)")
        if kind in KINDS and (variants := config_files_of(kind, args.pattern)):
            print(f"  + config variants ({kind}=NAME, a config file over a plugin's defaults): "
                  + " ".join(name for name, _ in variants))
        if kind == "backbone" and args.pattern != "*":
            import timm

            names = [n for n in timm.list_models(args.pattern) if n not in registry.specs("backbone")]
            print(f"timm models matching {args.pattern!r} ({len(names)}): " + " ".join(names))
        elif kind == "backbone":
            print("  + every timm model by its timm name (harness list backbones 'PATTERN' lists them)")
        print()
    if grids_only or not args.kind:
        rows = [[name, summary] for name, summary in config_files_of("grid", args.pattern)]
        print("grids (harness sweep grid=NAME):")
        print(tabulate(rows, headers=["name", "summary"], tablefmt="simple") if rows
              else f"  (none matches {args.pattern!r}; `harness list grids` shows them all)")
        print()
    return 0


def cmd_leaderboard(argv: list[str]) -> int:
    from harness import leaderboard

    parser = argparse.ArgumentParser(prog="harness leaderboard")
    parser.add_argument("results_dir", help="a folder of result files (e.g. runs, or results for the "
                                            "committed reference results)")
    parser.add_argument("--out", help="output folder (default: RESULTS_DIR/leaderboards)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the markdown in --out differs from what the results give")
    parser.add_argument("--readme", help="also keep the leaderboard section of this README current")
    args = parser.parse_args(argv)
    out = args.out or str(Path(args.results_dir) / "leaderboards")
    leaderboard.check_results_dir(args.results_dir)
    if args.readme:
        leaderboard.check_readme_markers(args.readme)
    if not args.check:
        from harness.run import check_writable

        check_writable(out, "the output folder", "--out PATH")
    if args.check:
        stale = leaderboard.check(args.results_dir, out)
        if args.readme and not leaderboard.update_readme(args.readme, args.results_dir, write=False):
            stale.append(args.readme)
        if stale:
            print(f"stale leaderboards in {out}: {', '.join(stale)}; regenerate with "
                  f"`harness leaderboard {args.results_dir} --out {out}"
                  f"{' --readme ' + args.readme if args.readme else ''}`", file=sys.stderr)
            return 1
        print(f"leaderboards in {out} are up to date with {args.results_dir}")
        return 0
    written = leaderboard.write_all(args.results_dir, out)
    if not written:
        raise HarnessError(f"results folder '{args.results_dir}' holds no readable result file (the warnings above "
                           "name each one left out); nothing to render")
    for path in written:
        print(f"wrote {path}")
    if args.readme:
        current = leaderboard.update_readme(args.readme, args.results_dir)
        print(f"{args.readme}: leaderboard section {'unchanged' if current else 'updated'}")
    return 0


HYDRA_USAGE = """usage: harness {command} [KEY=VALUE ...]{yes}

{what}

KEY=VALUE are Hydra overrides:
  method=NAME backbone=NAME dataset=NAME task=NAME   a plugin of each kind (harness list KIND)
  method.KEY=VALUE train.KEY=VALUE ...               a field of its config (e.g. method.dim=8, train.epochs=4)
  seed=N results_dir=DIR cache_dir=DIR device=auto|cpu|cuda|cuda:N
  plots=true save_embeddings=true                    PNGs / the embeddings (.npz) beside each result
{sweep}{cfg}
Every name and value is checked before any work (did-you-mean on a typo). Exit status: 0 all cells ok or
skipped, 1 a cell failed, 2 bad input, 3 a cell left to another process still running it, 130 interrupted."""


def hydra_usage(command: str) -> str:
    if command == "sweep":
        return HYDRA_USAGE.format(
            command="sweep", yes=" [--yes]",
            what="Runs a grid of cells (method × backbone × dataset × task × seed): resumable, cached, one result "
                 "JSON per cell.",
            sweep="  grid=default|quick|unsupervised|controls|...       a named grid (plugins/conf/grid/*.yaml)\n"
                  "  method=a,b seed=0,1,2                              comma lists are the grid's axes\n"
                  "  launcher=gpu_pool|slurm|ray                        where cells run (see the README)\n"
                  "  --yes                                              allow a grid above 10,000 cells\n", cfg="")
    return HYDRA_USAGE.format(command="run", yes="", what="Runs one cell: trains (or loads from the cache) "
                              "and evaluates, and writes its result JSON.", sweep="",
                              cfg="  --cfg                                              print the cell's config (every key) and "
                                  "stop\n")


def _unreadable_override(argv: list[str], exc: Exception) -> str:
    """Which override Hydra's grammar rejects, and its reason on one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    def reason(e: Exception) -> str:
        return " ".join(str(e).split("\nSee https")[0].split())

    parser = OverridesParser.create()
    for arg in argv:
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as e:
            key, _, value = arg.partition("=")
            hint = ""
            if value and not value.startswith(("'", '"')):
                # Hydra's grammar has no ~, non-ASCII letters or most punctuation in a bare value: quote it
                hint = (f"; quote the value for Hydra, inside the shell's quotes: \"{key}='{value}'\" "
                        "(a path with ~, spaces, non-ASCII letters or punctuation)")
            return f"cannot read the override {arg!r}: {reason(e)}{hint}"
    return f"cannot read the overrides: {reason(exc)}"


def cmd_hydra(argv: list[str], *, multirun: bool) -> int:
    from hydra.errors import OverrideParseException

    from harness.sweep import launch

    command = "sweep" if multirun else "run"
    if any(a in ("-h", "--help", "help") for a in argv):
        print(hydra_usage(command))
        return 0
    if "--cfg" in argv and multirun:
        raise HarnessError("--cfg prints one cell's config: use `harness run KEY=VALUE ... --cfg`")
    yes = "--yes" in argv
    argv = [a for a in argv if a != "--yes"]
    try:
        if "--cfg" in argv:
            return _print_cell_config([a for a in argv if a not in ("--cfg", "job")])
        with _terminate_as_interrupt():
            failed = launch(argv, multirun=multirun, yes=yes)
    except OverrideParseException as exc:
        raise HarnessError(f"{_unreadable_override(argv, exc)}. Each override is KEY=VALUE (e.g. "
                           f"method=poincare_mlr seed=1); see `harness {command} --help`") from None
    except OSError as exc:  # the sweep's own files (Hydra's multirun.yaml, the leaderboards): a full disk
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        raise HarnessError(f"cannot write {exc.filename or 'the sweep files'}: {exc.strerror}; free space there or "
                           "choose another folder with results_dir=PATH (finished cells are kept)") from None
    except KeyboardInterrupt:
        _second_interrupt_exits_now()
        slurm = any(a in ("launcher=slurm", "hydra/launcher=slurm") for a in argv)
        running = ("The SLURM jobs already submitted keep running (squeue shows them; scancel stops them); "
                   "their cells write their results as usual." if slurm else
                   "A cell that was running wrote no result and released its claim.")
        print(f"harness {command}: interrupted. Finished cells are kept. {running} Run the same command again "
              "to go on (finished cells are skipped, trained models come from the cache)", file=sys.stderr)
        return 130
    from harness.sweep import claimed_cells

    if failed:
        print(f"harness {command}: {failed} cell(s) failed (their reasons are above, and in the result "
              "files of the cells whose config passed its checks)", file=sys.stderr)
        return 1
    if claimed := claimed_cells(multirun):
        print(f"harness {command}: {claimed} cell(s) are being run by another process (claimed), so this grid is "
              "not finished yet; run the same command again once it is done to check (finished cells are "
              "skipped)", file=sys.stderr)
        return 3
    return 0


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a SLURM time limit or pre-emption) ends the command as Ctrl-C does: the running
    cell's ``finally`` blocks release its claim and remove temporary files, instead of the process dying
    with a claim that other workers must wait out."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _second_interrupt_exits_now() -> None:
    """After the first Ctrl-C has been handled (the running cell released its claim), a second one ends
    the process at once with status 130, instead of raising inside the interpreter's exit handlers
    (Python's "Exception ignored in atexit callback" traceback)."""
    import os
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))


def _print_cell_config(argv: list[str]) -> int:
    """``harness run [KEY=VALUE ...] --cfg``: the cell's composed, checked config with every key, as YAML;
    nothing runs (Hydra's ``--cfg job``; ``job`` is accepted)."""
    from omegaconf import OmegaConf

    from harness.sweep import compose

    print(OmegaConf.to_yaml(OmegaConf.create(compose(argv))), end="")
    return 0


def cmd_check_plugin(argv: list[str]) -> int:
    from harness.plugin_check import main

    return main(argv)


def cmd_report(argv: list[str]) -> int:
    from harness.report import main

    return main(argv)


COMMANDS = {
    "list": cmd_list,
    "leaderboard": cmd_leaderboard,
    "run": lambda a: cmd_hydra(a, multirun=False),
    "sweep": lambda a: cmd_hydra(a, multirun=True),
    "report": cmd_report,
    "check-plugin": cmd_check_plugin,
}


def _plugin_commands() -> dict:
    from harness.registry import get_registry

    return get_registry().specs("command")


def _show_plugin_warnings() -> None:
    """A warning of the harness (a plugin that failed to load, an exclude rule that drops nothing, a
    leaderboard that leaves a file out) is said as one line, ``harness: warning: …``, not with the line of
    the harness's code that raised it, as Python shows a warning; other libraries' warnings are left as
    they are. Only the text changes (``warnings.formatwarning``): filters and recorders see every warning."""
    import warnings
    from pathlib import Path

    import harness.plugins
    from harness.registry import PluginWarning

    formatted = warnings.formatwarning
    if getattr(formatted, "_harness", False):
        return
    import hydra_plugins.hyperbolic_harness as launchers

    ours = tuple(str(Path(m.__file__).resolve().parent) for m in (sys.modules["harness"], harness.plugins, launchers))

    def format_warning(message: Any, category: type, filename: str, *args: Any, **kwargs: Any) -> str:
        if issubclass(category, PluginWarning) or (
                issubclass(category, UserWarning) and str(Path(filename).resolve()).startswith(ours)):
            return f"harness: warning: {message}\n"
        return formatted(message, category, filename, *args, **kwargs)

    format_warning._harness = True  # type: ignore[attr-defined]
    warnings.formatwarning = format_warning


def main(argv: list[str] | None = None) -> int:
    import os

    _show_plugin_warnings()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--strict-plugins" in argv:
        argv.remove("--strict-plugins")
        os.environ["HARNESS_STRICT_PLUGINS"] = "1"
    if not argv or argv[0] in ("-h", "--help", "help"):
        try:
            extra = "\n".join(f"  {name:<28} {spec.summary}" for name, spec in _plugin_commands().items())
        except HarnessError as exc:  # a plugin conflict, or a broken plugin in strict mode
            print(USAGE.format(plugin_commands="  (the plugins' commands cannot be listed: see the error below)"))
            print(f"harness: {exc}", file=sys.stderr)
            return 2
        print(USAGE.format(plugin_commands=extra))
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command in COMMANDS:
            return COMMANDS[command](rest)
        plugins = _plugin_commands()
        if command in plugins:
            return int(plugins[command].load()(rest) or 0)
        from harness.errors import UnknownPluginError

        print(f"harness: {UnknownPluginError('command', command, [*COMMANDS, *plugins])}", file=sys.stderr)
        return 2
    except HarnessError as exc:
        print(f"harness {command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # run and sweep say how to go on themselves; the other commands have nothing to resume
        print(f"harness {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`harness list | head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's exit flush has nowhere to go
        return 141  # 128 + SIGPIPE, the status of a tool the signal stopped


if __name__ == "__main__":
    sys.exit(main())
