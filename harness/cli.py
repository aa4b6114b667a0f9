"""``harness list | run | sweep | leaderboard | delta``.

``list`` imports no model code (specs are lazy). ``run`` and ``sweep`` take
Hydra overrides (``method=poincare_mlr seed=1``); everything else is argparse.
"""

from __future__ import annotations

import argparse
import sys

from harness.errors import HarnessError

USAGE = """usage: harness <command> [args]

commands:
  list [KIND] [PATTERN]        plugins (methods, backbones, datasets, tasks); PATTERN is fnmatch,
                               `harness list backbones 'resnet*'` also lists timm's models
  run [OVERRIDES...]           one cell, e.g. harness run method=poincare_mlr task=few_shot seed=1
  sweep [OVERRIDES...]         a grid (grid=default | grid=smoke | method=a,b seed=0,1,2 ...)
  leaderboard RESULTS_DIR      render leaderboards/ from result files (--out DIR, --check, --readme README.md)
  delta FILE                   Gromov δ-hyperbolicity of a feature or distance matrix (.npy/.pt)

options: --strict-plugins (or HARNESS_STRICT_PLUGINS=1) makes a plugin that fails to load an error
"""


def _kind(word: str) -> str:
    from harness.specs import KINDS

    singular = word[:-1] if word.endswith("s") else word
    if singular not in KINDS:
        from harness.errors import UnknownPluginError

        raise UnknownPluginError("plugin kind", word, [f"{k}s" for k in KINDS])
    return singular


def cmd_list(argv: list[str]) -> int:
    from tabulate import tabulate

    from harness.registry import get_registry
    from harness.specs import KINDS

    parser = argparse.ArgumentParser(prog="harness list")
    parser.add_argument("kind", nargs="?", help="methods | backbones | datasets | tasks")
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern on names")
    args = parser.parse_args(argv)
    registry = get_registry()
    kinds = [_kind(args.kind)] if args.kind else list(KINDS)
    for kind in kinds:
        rows = [[s.name, s.dist, s.summary] for s in registry.list(kind, args.pattern)]
        print(f"{kind}s:")
        if rows:
            print(tabulate(rows, headers=["name", "distribution", "summary"], tablefmt="simple"))
        if kind == "backbone" and args.pattern != "*":
            import timm

            names = [n for n in timm.list_models(args.pattern) if n not in registry.specs("backbone")]
            print(f"timm models matching {args.pattern!r} ({len(names)}): " + " ".join(names))
        elif kind == "backbone":
            print("  + every timm model by its timm name (harness list backbones 'PATTERN' lists them)")
        print()
    for message in registry.load_errors:
        print(f"warning: {message}", file=sys.stderr)
    return 0


def cmd_leaderboard(argv: list[str]) -> int:
    from harness import leaderboard

    parser = argparse.ArgumentParser(prog="harness leaderboard")
    parser.add_argument("results_dir", nargs="?", default="results")
    parser.add_argument("--out", default="leaderboards", help="output folder (default: leaderboards)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed markdown differs from what the results give")
    parser.add_argument("--readme", help="also keep the leaderboard section of this README current")
    args = parser.parse_args(argv)
    if args.check:
        stale = leaderboard.check(args.results_dir, args.out)
        if args.readme and not leaderboard.update_readme(args.readme, args.results_dir, write=False):
            stale.append(args.readme)
        if stale:
            print(f"stale leaderboards in {args.out}: {', '.join(stale)}; regenerate with "
                  f"`harness leaderboard {args.results_dir} --out {args.out}`", file=sys.stderr)
            return 1
        print(f"leaderboards in {args.out} are up to date with {args.results_dir}")
        return 0
    for path in leaderboard.write_all(args.results_dir, args.out):
        print(f"wrote {path}")
    if args.readme:
        current = leaderboard.update_readme(args.readme, args.results_dir)
        print(f"{args.readme}: leaderboard section {'unchanged' if current else 'updated'}")
    return 0


def cmd_hydra(argv: list[str], *, multirun: bool) -> int:
    from harness.sweep import launch

    launch(argv, multirun=multirun)
    return 0


def cmd_delta(argv: list[str]) -> int:
    from harness.tasks.delta import cli_main

    return int(cli_main(argv) or 0)


COMMANDS = {
    "list": cmd_list,
    "leaderboard": cmd_leaderboard,
    "run": lambda a: cmd_hydra(a, multirun=False),
    "sweep": lambda a: cmd_hydra(a, multirun=True),
    "delta": cmd_delta,
}


def main(argv: list[str] | None = None) -> int:
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--strict-plugins" in argv:
        argv.remove("--strict-plugins")
        os.environ["HARNESS_STRICT_PLUGINS"] = "1"
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        from harness.errors import UnknownPluginError

        print(f"harness: {UnknownPluginError('command', command, COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](rest)
    except HarnessError as exc:
        print(f"harness {command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
