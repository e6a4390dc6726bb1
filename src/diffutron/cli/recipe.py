"""``diffutron recipe list``, ``recipe show`` and ``recipe check``: the shipped recipes and configs."""

from __future__ import annotations

import argparse
import sys


def _list(args: argparse.Namespace) -> int:
    from ..shipped import COMMANDS, available

    items = available()
    width = max(len(s.name) for s in items)
    for s in items:
        print(f"{s.kind:6s}  {s.name:{width}s}  {s.description}")
    print(
        f"\nRun a recipe with `{COMMANDS['recipe']} NAME`, a config with `{COMMANDS['config']} NAME`; "
        "`diffutron recipe show NAME > my.yaml` writes one out to edit."
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    from ..shipped import read_text

    sys.stdout.write(read_text(args.name))
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..config import load_recipe
    from ..shipped import resolve

    recipe = load_recipe(resolve(args.recipe, "recipe"))  # before the heavy imports: fails at once
    from ..training.recipe_check import check_recipe, format_check

    report = check_recipe(recipe)
    print(format_check(report))
    return 0 if report.ok else 1


def add_parsers(sub) -> None:
    p = sub.add_parser("recipe", help="the shipped recipes and configs: list, show, check")
    rsub = p.add_subparsers(dest="recipe_command", required=True)
    c = rsub.add_parser("list", help="every shipped recipe and config, one line each")
    c.set_defaults(func=_list)
    c = rsub.add_parser("show", help="print a shipped recipe or config (YAML) to copy and edit")
    c.add_argument("name", help="a shipped name (see `diffutron recipe list`) or a YAML file")
    c.set_defaults(func=_show)
    c = rsub.add_parser(
        "check", help="validate a recipe offline: build each stage's model, print trainable shares"
    )
    c.add_argument("recipe", help="a shipped recipe name (e.g. diffutron-0.3b) or a recipe YAML file")
    c.set_defaults(func=_check)
