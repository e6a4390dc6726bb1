"""The ``diffutron`` command: parses arguments and calls recipes; no logic of its own.

Each command group lives in its own module with an ``add_parsers(subparsers)`` function:
``train.py`` (quickstart, train), ``generate.py`` (generate). Add a module and list it in COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from .lazy import LazyParser

COMMANDS = ["train", "recipe", "generate", "evaluate", "serve"]  # modules under diffutron.cli, in help order


def add_device_flags(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype`` of every command that loads a model for inference; resolved and
    checked by ``models.checkpoint.resolve_device_dtype``."""
    p.add_argument(
        "--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda, cuda:1 ..."
    )
    p.add_argument(
        "--dtype",
        default="auto",
        help="weights: auto (bf16 on CUDA and on CPUs with AMX/AVX512-BF16, else fp32), fp32, bf16 or fp16",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = LazyParser(prog="diffutron", description="Masked diffusion language models for Turkish.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as exc:  # OSError: missing files, disk full, permissions
        if args.verbose:
            raise
        print(f"diffutron: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
