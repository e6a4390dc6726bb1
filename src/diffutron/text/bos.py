"""The ``<bos>`` convention: one rule for training and use.

Every text a model sees starts with the tokenizer's start token (``<bos>``) where a document or a
prompt starts, and a document ends with ``<eos>`` — the tokenizer's own template
(``tokenizer(text)`` gives ``<bos> ... <eos>``). Packing puts ``<bos>`` before each document
(a block cut in the middle of a document starts without one, as a window in the middle of a text
does); SFT rows, sampling prompts, multiple-choice scoring and perplexity windows put it before the
text. A pre-trained checkpoint thus never meets, in use, a token it did not see in training.

    ids = with_bos(tokenizer, tokenizer(text, add_special_tokens=False)["input_ids"])

``with_bos`` adds the token once: a chat template that already renders ``<bos>`` does not get two.
"""

from __future__ import annotations

from typing import Any


def with_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    """``ids`` with the tokenizer's ``<bos>`` in front, exactly once (unchanged when it has none)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = [int(i) for i in ids]
    return [bos, *ids] if bos is not None and (not ids or ids[0] != bos) else ids
