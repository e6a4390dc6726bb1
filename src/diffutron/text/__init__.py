"""Text handling: normalisation, Turkish casing, the byte-level BPE tokenizer and the chat template.

``normalize``, ``turkish_lower``, ``turkish_upper`` and ``turkish_casefold`` are cheap to import.
The tokenizer names (``SPECIAL_TOKENS``, ``train_tokenizer``, ``ensure_special_tokens``) are
loaded on first access, because they import ``transformers`` (seconds), and the data readers
that only need :func:`normalize` should not pay for that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diffutron.text.chat import DEFAULT_CHAT_TEMPLATE, extract_answer, format_chat, install_chat_template
from diffutron.text.normalize import normalize, turkish_casefold, turkish_lower, turkish_upper

if TYPE_CHECKING:
    from diffutron.text.tokenizer import SPECIAL_TOKENS, ensure_special_tokens, train_tokenizer

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "ensure_special_tokens",
    "extract_answer",
    "format_chat",
    "install_chat_template",
    "normalize",
    "train_tokenizer",
    "turkish_casefold",
    "turkish_lower",
    "turkish_upper",
]

_LAZY = {"SPECIAL_TOKENS", "ensure_special_tokens", "train_tokenizer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from diffutron.text import tokenizer

        return getattr(tokenizer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
