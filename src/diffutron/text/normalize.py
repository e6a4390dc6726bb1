"""Text normalisation and Turkish-aware casing.

What it is: the small set of string functions every other part of Diffutron passes text through
before it reaches a tokenizer, so that the same sentence always becomes the same token ids.

How to use it::

    from diffutron.text import normalize, turkish_lower, turkish_upper, turkish_casefold

    normalize("Merhaba\\r\\ndünya\\ufeff")   # -> "Merhaba\\ndünya"
    turkish_lower("İSTANBUL")               # -> "istanbul"  (str.lower() gives "i̇stanbul")
    turkish_upper("iğdır")                  # -> "İĞDIR"     (str.upper() gives "IĞDIR")
    turkish_casefold("IĞDIR") == turkish_casefold("ığdır")   # -> True

Other languages: :func:`lower`, :func:`upper` and :func:`casefold` take a language code and apply
the dotted / dotless i rules for Turkish and Azerbaijani (``DOTTED_I_LANGUAGES``) and plain Unicode
rules (NFC) for every other language; a language pack (:mod:`diffutron.languages`) calls them.

What it does not know: the language of the text. The Turkish casing rules (I↔ı, İ↔i) are applied
to every character, so English "I" becomes "ı" under :func:`turkish_lower`; do not use these
functions on mixed-language text where that matters. :func:`normalize` removes zero-width joiners
(U+200D) too, which breaks emoji ZWJ sequences and some non-Latin scripts; Turkish never needs them.
No other cleaning (whitespace collapsing, quote unification, lower-casing) is done on purpose:
the model should see the text as written.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "DOTTED_I_LANGUAGES",
    "casefold",
    "lower",
    "normalize",
    "turkish_casefold",
    "turkish_lower",
    "turkish_upper",
    "upper",
]

# ISO 639-1 codes of the languages whose alphabets pair I with ı and İ with i (Unicode's
# SpecialCasing.txt lists exactly these two for the Latin script).
DOTTED_I_LANGUAGES = frozenset({"tr", "az"})

# ZWSP, ZWNJ, ZWJ and the BOM / ZWNBSP: invisible, so two visually identical Turkish strings would
# otherwise tokenise differently. Removed before NFC so they cannot block a base letter from
# composing with a following combining mark.
_ZERO_WIDTH_CHARS = "\u200b\u200c\u200d\ufeff"

# Only the four letters whose Turkish case mapping differs from Unicode's default mapping.
_TR_LOWER = str.maketrans({"I": "ı", "İ": "i"})
_TR_UPPER = str.maketrans({"i": "İ", "ı": "I"})


def normalize(text: str) -> str:
    """Return ``text`` in Unicode NFC with ``\\n`` line ends and without BOM / zero-width characters.

    Everything else (case, punctuation, spacing) is kept as it is. Idempotent.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # str.translate looks every character up in a dict (~0.15 s per MB of Turkish); the four
    # characters are rare, so find them first with the C-speed `in` and replace only those found.
    for ch in _ZERO_WIDTH_CHARS:
        if ch in text:
            text = text.replace(ch, "")
    return unicodedata.normalize("NFC", text)


def turkish_lower(s: str) -> str:
    """Lower-case ``s`` with Turkish rules: ``I`` → ``ı``, ``İ`` → ``i``; the result is NFC.

    Decomposed input is handled: ``"I\\u0307"`` (I + combining dot above) is first composed to
    ``"İ"`` so it becomes ``"i"``, not ``"ı"`` followed by a stray dot.
    """
    # NFC first: it composes "I" + U+0307 into "İ", which the table below then maps correctly.
    return unicodedata.normalize("NFC", s).translate(_TR_LOWER).lower()


def turkish_upper(s: str) -> str:
    """Upper-case ``s`` with Turkish rules: ``i`` → ``İ``, ``ı`` → ``I``; the result is NFC.

    Decomposed input is handled: ``"i\\u0302"`` (i + combining circumflex, as in NFD "millî") is
    first composed to ``"î"`` so it becomes ``"Î"``, not a dotted ``"İ"`` with a circumflex.
    """
    return unicodedata.normalize("NFC", s).translate(_TR_UPPER).upper()


def turkish_casefold(s: str) -> str:
    """Return a key for case-insensitive comparison of Turkish text (NFC).

    Applies the Turkish I/İ mappings, then Python's full case folding (so "ß" and "ss" compare
    equal, as in :meth:`str.casefold`), then NFC so composed and decomposed input give equal keys.
    Meant for comparing, not for display: use :func:`turkish_lower` for that.
    """
    folded = unicodedata.normalize("NFC", s).translate(_TR_LOWER).casefold()
    return unicodedata.normalize("NFC", folded)


def lower(s: str, language: str) -> str:
    """Lower-case ``s`` with the rules of ``language`` (Turkish I/İ for ``tr`` and ``az``); NFC."""
    if language in DOTTED_I_LANGUAGES:
        return turkish_lower(s)
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", s).lower())


def upper(s: str, language: str) -> str:
    """Upper-case ``s`` with the rules of ``language`` (Turkish i/ı for ``tr`` and ``az``); NFC."""
    if language in DOTTED_I_LANGUAGES:
        return turkish_upper(s)
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", s).upper())


def casefold(s: str, language: str) -> str:
    """A key for case-insensitive comparison in ``language`` (see :func:`turkish_casefold`); NFC."""
    if language in DOTTED_I_LANGUAGES:
        return turkish_casefold(s)
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", s).casefold())
