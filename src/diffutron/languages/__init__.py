"""Language packs: everything Diffutron knows about one language, selected by one config key.

    language: et          # in a run config or a recipe (default: tr)
    diffutron quickstart --language et

A pack (:class:`LanguagePack`, one small module per language: ``tr.py``, ``et.py``) is data plus
the casing rules: the default corpus that the source ``embedded`` stands for, a held-out corpus for
the quickstart's ELBO, the quickstart's prompts and chat prompts, the instruction wording of the
built-in instruction sets, the evaluation tasks and the connectives of the XCOPA prompt. Code that
used to spell Turkish out reads it from the pack instead; Turkish is a pack like any other.

:func:`localize` applies a pack to the data sections of a config: the source ``embedded`` becomes the
pack's corpus and a built-in instruction set (``builtin: continuation``) the pack's version of it.
It changes nothing for Turkish, so Turkish configs, caches and saved runs are what they were.

How to add a language: ``docs/languages.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..text.normalize import casefold, lower, upper

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "LanguagePack", "get_language", "localize", "register"]

DEFAULT_LANGUAGE = "tr"


@dataclass(frozen=True)
class LanguagePack:
    code: str  # ISO 639-1; also picks the casing rules (text.normalize.DOTTED_I_LANGUAGES)
    name: str
    corpus: str  # the data source spec that `embedded` stands for
    corpus_note: str  # provenance and licence (quickstart summary); install line: data.corpus
    prompts: tuple[str, ...]  # quickstart continuations
    chat_prompts: tuple[str, ...]  # quickstart --full: one user message each
    instructions: Mapping[str, str]  # built-in instruction set -> the instruction its rows carry
    sentence_starts: str  # upper-case letters beyond A-Z that may start a sentence
    tasks: tuple[str, ...]  # evaluation tasks in this language (names in evaluation.tasks)
    connectives: Mapping[str, str]  # XCOPA: question ("cause" / "effect") -> the word between
    heldout: str | None = None  # a corpus of whole held-out documents (quickstart's held-out ELBO)
    builtin_names: Mapping[str, str] = field(default_factory=dict)  # generic builtin -> registered name

    def lower(self, s: str) -> str:
        return lower(s, self.code)

    def upper(self, s: str) -> str:
        return upper(s, self.code)

    def casefold(self, s: str) -> str:
        return casefold(s, self.code)

    def builtin(self, name: str) -> str:
        """The registered name of this language's version of built-in instruction set ``name``."""
        return self.builtin_names.get(name, name)


LANGUAGES: dict[str, LanguagePack] = {}


def register(pack: LanguagePack) -> LanguagePack:
    if pack.code in LANGUAGES:
        raise ValueError(f"language {pack.code!r} is registered twice")
    LANGUAGES[pack.code] = pack
    return pack


def get_language(code: str) -> LanguagePack:
    if code not in LANGUAGES:
        raise ValueError(f"unknown language {code!r}; language packs: {', '.join(sorted(LANGUAGES))}")
    return LANGUAGES[code]


def localize(language: str, data: Any = None, sft: Any = None) -> None:
    """Point a config's ``data`` (DataConfig) and ``sft`` (SftConfig) sections at ``language``'s pack,
    in place: ``embedded`` -> the pack's corpus, ``builtin: X`` -> the pack's X. Idempotent; explicit
    sources (files, hub ids, ``embedded:<name>``) are left as written."""
    pack = get_language(language)
    if data is not None:
        data.sources = [pack.corpus if src == "embedded" else src for src in data.sources]
    if sft is not None:
        sft.sources = [_localize_sft_source(pack, src) for src in sft.sources]


def _localize_sft_source(pack: LanguagePack, src: Any) -> Any:
    if isinstance(src, str) and src.startswith("builtin:"):
        return "builtin:" + pack.builtin(src[len("builtin:") :])
    if getattr(src, "builtin", None) is not None:
        src.builtin = pack.builtin(src.builtin)
    return src


def _load() -> None:
    from . import et, tr  # noqa: F401  (each registers its pack)


_load()
