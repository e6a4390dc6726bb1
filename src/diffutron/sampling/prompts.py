"""Text in and out of the canvas: prompts, texts with holes, the chat template, half-unmasked views.

    ids = encode_prompt(tokenizer, "Türkiye'nin başkenti")                  # <bos> + tokens
    ids, holes = encode_with_holes(tokenizer, "Ankara <mask> şehridir.", mask_id, span=2)
    prompt = chat_prompt(tokenizer, [{"role": "user", "content": "Merhaba!"}])   # ends "[Answer]\\n"
    render_partial(tokenizer, ids, mask_id)                                  # "Ankara ░░ şehridir."
    view_runs(tokenizer, ids, mask_id)                                       # ["Ankara", 2, " şehridir."]

Holes: ``<mask>`` or ``[...]`` is a span of ``span`` mask tokens; ``<mask:5>`` or ``[...5]`` sets the
length of that hole. The whitespace before a hole moves into it (``"nin <mask> şehri"`` encodes as
``"nin" [M]... " şehri"``) because a byte-level BPE attaches a space to the word after it: the model
has seen `` başkenti`` as one token, rarely a lone space followed by ``başkenti``.

The chat template lives in ``diffutron.text.chat`` (Diffutron's BERT-style ``[Question]``/``[Answer]``
markers); a tokenizer that carries its own ``chat_template`` wins.
"""

from __future__ import annotations

import re

from ..text.bos import with_bos
from ..text.chat import ANSWER_END, format_chat

HOLE = re.compile(r"<mask(?::(\d+))?>|\[(?:\.\.\.|…)(\d*)\]")
CHAT_STOP = (ANSWER_END,)  # "[/Answer]" ends an answer under the Diffutron chat template


def _tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def encode_prompt(tokenizer, prompt: str | list[int]) -> list[int]:
    """Token ids of a prompt (text or ids), with the tokenizer's <bos> in front when it has one."""
    ids = _tokens(tokenizer, prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
    return with_bos(tokenizer, ids)


def encode_with_holes(
    tokenizer, text: str, mask_id: int, span: int = 2
) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids of ``text`` (with <bos>) where each hole is a run of masks; and the holes as (start, end)."""
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    ids: list[int] = []
    holes: list[tuple[int, int]] = []
    pos = 0
    for m in HOLE.finditer(text):
        ids += _tokens(tokenizer, text[pos : m.start()].rstrip())
        n = int(m.group(1) or m.group(2) or span)
        holes.append((len(ids), len(ids) + n))
        ids += [mask_id] * n
        pos = m.end()
    ids += _tokens(tokenizer, text[pos:])
    if not holes:
        raise ValueError(
            f"no hole in {text!r}: write <mask>, <mask:N>, [...] or [...N] where text is missing"
        )
    full = with_bos(tokenizer, ids)
    shift = len(full) - len(ids)
    return full, [(a + shift, b + shift) for a, b in holes]


def chat_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """The generation prompt for ``messages``: the tokenizer's own template if it has one, else
    Diffutron's (``diffutron.text.chat.format_chat``); both end with ``[Answer]\n``."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return format_chat(messages, add_generation_prompt=True)


REPLACEMENT = "\ufffd"  # what a byte-level tokenizer decodes an incomplete UTF-8 character to
MAX_CHAR_PIECES = 3  # a character is at most 4 bytes: at most 3 byte tokens of it can stand incomplete


def _readable(tokenizer, run: list[int], after_mask: bool, before_mask: bool) -> tuple[int, str, int]:
    """(tokens held back in front, text, tokens held back at the end) of a run of committed ids. A
    byte-level BPE can split one character (ş, ğ, İ, an emoji) over tokens; while a neighbouring piece
    is still masked, the committed one decodes to U+FFFD. Such edge pieces are held back (shown as
    masks) until their character is whole; a run's edge is trimmed only next to a mask."""
    lo, hi = 0, len(run)
    text = tokenizer.decode(run, skip_special_tokens=True)
    while before_mask and hi > lo and len(run) - hi < MAX_CHAR_PIECES and text.endswith(REPLACEMENT):
        hi -= 1
        text = tokenizer.decode(run[lo:hi], skip_special_tokens=True)
    while after_mask and hi > lo and lo < MAX_CHAR_PIECES and text.startswith(REPLACEMENT):
        lo += 1
        text = tokenizer.decode(run[lo:hi], skip_special_tokens=True)
    return lo, text, len(run) - hi


def view_runs(tokenizer, ids: list[int], mask_id: int) -> list[str | int]:
    """A half-unmasked canvas as runs: a string for decoded text, an int for that many positions still
    pending (masks, and committed pieces of a character that is not whole yet: never U+FFFD)."""
    runs: list[list[int] | int] = []
    for i in ids:
        if i == mask_id:
            runs.append(runs.pop() + 1 if runs and isinstance(runs[-1], int) else 1)
        elif runs and isinstance(runs[-1], list):
            runs[-1].append(i)
        else:
            runs.append([i])
    out: list[str | int] = []

    def pending(n: int) -> None:
        if n:
            out.append(out.pop() + n if out and isinstance(out[-1], int) else n)

    for j, run in enumerate(runs):
        if isinstance(run, int):
            pending(run)
            continue
        lo, text, held = _readable(tokenizer, run, after_mask=j > 0, before_mask=j + 1 < len(runs))
        pending(lo)
        if text:
            out.append(text)
        pending(held)
    return out


def render_partial(tokenizer, ids: list[int], mask_id: int, symbol: str = "░") -> str:
    """Decode ids with every mask shown as ``symbol`` (for live views of a canvas being unmasked); a
    committed piece of a character that is not whole yet is shown as ``symbol`` too (``view_runs``)."""
    return "".join(r * symbol if isinstance(r, int) else r for r in view_runs(tokenizer, ids, mask_id))
