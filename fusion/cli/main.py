"""The command line: `python -m fusion COMMAND ...`. Thin: it calls what the pages call. Each
command group is a module of its own (pages, data, models, work, users, benchmarks) that adds its
commands to the parser; their imports are lazy, so a command loads only what it needs.

Errors caused by input (a bad file, a missing weight package, an unknown project) print one
line `error: ...` on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import sys

from fusion.cli import benchmarks, data, models, pages, users, work


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fusion", description="FusionLab: image + text classification")
    parser.add_argument("--home", help="workspace folder (default: $FUSION_HOME or ./data)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (pages, data, models, work, users, benchmarks):
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from fusion.core.errors import FusionError
    from fusion.core.settings import load_settings

    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(home=args.home, device=args.device)
        if getattr(args, "project", "") is None:
            args.project = settings.demo_project
        return args.run(args, settings) or 0
    except FusionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

