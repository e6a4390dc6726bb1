"""Text in and out of the canvas: prompts, texts with holes, the chat template, half-unmasked views.

    ids = encode_prompt(tokenizer, "Türkiye'nin başkenti")                  # <bos> + tokens
    ids, holes = encode_with_holes(tokenizer, "Ankara <mask> şehridir.", mask_id, span=2)
    prompt = chat_prompt(tokenizer, [{"role": "user", "content": "Merhaba!"}])   # ends "[Answer]\\n"
    render_partial(tokenizer, ids, mask_id)                                  # "Ankara ░░ şehridir."

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


def render_partial(tokenizer, ids: list[int], mask_id: int, symbol: str = "░") -> str:
    """Decode ids with every mask shown as ``symbol`` (for live views of a canvas being unmasked)."""
    out, run = [], []
    for i in ids:
        if i == mask_id:
            if run:
                out.append(tokenizer.decode(run, skip_special_tokens=True))
                run = []
            out.append(symbol)
        else:
            run.append(i)
    if run:
        out.append(tokenizer.decode(run, skip_special_tokens=True))
    return "".join(out)
