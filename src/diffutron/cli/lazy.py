"""Flags a command adds only when that command is used.

``generate``'s decoding flags are read off ``GenerationConfig``, and importing it imports torch; built
eagerly, they would make ``diffutron --version`` or ``diffutron recipe list`` wait for torch. A command
module calls ``defer(parser, add_flags)``; the flags appear when that command is parsed or its help is
shown, and never otherwise.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


class LazyParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.deferred: list[Callable[[], None]] = []

    def _add_deferred(self) -> None:
        while self.deferred:
            self.deferred.pop(0)()

    def parse_known_args(self, args=None, namespace=None):
        self._add_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_deferred()
        return super().format_help()


def defer(parser: argparse.ArgumentParser, add_flags: Callable[[], None]) -> None:
    """Run ``add_flags()`` when ``parser`` is first used (at once for a plain ArgumentParser)."""
    if isinstance(parser, LazyParser):
        parser.deferred.append(add_flags)
    else:
        add_flags()
