"""ELBO perplexity of text, comparable across checkpoints and tokenizers (bits per byte / character).

    r = text_perplexity(loaded.model, loaded.tokenizer, texts, mask_id=loaded.mask_id,
                        schedule=loaded.settings.make_schedule(), t_samples=8)
    r.perplexity, r.stderr_nelbo, r.bits_per_byte, r.bits_per_char

1. Each document is tokenised on its own and framed as in training (``<bos> text <eos>``, the
   convention of ``diffutron.text.bos``), then cut into windows of the length the model was trained
   on (``context_length`` from its checkpoint; else its context limit): the first window of a long
   document starts with ``<bos>``, the last ends with ``<eos>``, and a window inside a text has
   neither, as a packed training block cut inside a document. Windows do not see each other.
2. ``diffusion.elbo_perplexity`` scores every window at ``t_samples`` stratified noise levels with the
   training loss code; only the text tokens are maskable (never the special tokens or padding).
3. NELBO per token -> perplexity bound exp(NELBO/token). Per-token numbers depend on the tokenizer;
   the total NELBO divided by the UTF-8 bytes (or characters) of the text does not, so bits per byte
   compare any two models. The standard error is over windows (delta method), scaled the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from ..diffusion.elbo import elbo_perplexity
from ..diffusion.schedules import Schedule
from ..models.heads import MaskedLMParts, context_limit
from ..text.normalize import normalize
from .likelihood import special_affixes

DEFAULT_MAX_LENGTH = 512  # when neither the checkpoint nor the model config says


def bits_per_unit(total_nats: float, units: int) -> float:
    """A text's total negative log-likelihood (nats) in bits per byte or per character: a number
    that, unlike per-token perplexity, compares models with different tokenizers."""
    return total_nats / math.log(2) / max(1, units)


@dataclass
class TextPerplexity:
    nelbo_per_token: float
    perplexity: float
    stderr_nelbo: float  # standard error of nelbo_per_token
    tokens: int
    windows: int
    documents: int
    bytes: int
    characters: int
    t_samples: int

    @property
    def bits_per_token(self) -> float:
        return self.nelbo_per_token / math.log(2)

    @property
    def bits_per_byte(self) -> float:
        return bits_per_unit(self.nelbo_per_token * self.tokens, self.bytes)

    @property
    def bits_per_char(self) -> float:
        return bits_per_unit(self.nelbo_per_token * self.tokens, self.characters)

    @property
    def stderr_bits_per_byte(self) -> float:
        return bits_per_unit(self.stderr_nelbo * self.tokens, self.bytes)

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "bits_per_token": self.bits_per_token,
            "bits_per_byte": self.bits_per_byte,
            "bits_per_char": self.bits_per_char,
            "stderr_bits_per_byte": self.stderr_bits_per_byte,
        }


def text_windows(
    tokenizer, texts: Iterable[str], max_length: int, progress: bool = False, context: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, int]]:
    """(ids [N, T], maskable [N, T], attention [N, T], counts) for the windows of ``texts``: each
    document framed ``<bos> text <eos>`` and cut every ``max_length`` tokens; only text is maskable.

    ``context`` > 0: a window inside a document starts with the last ``context`` tokens of the window
    before it, visible but not maskable, so every window begins with something to condition on (the
    first one with ``<bos>``) and every text token is still scored exactly once. An autoregressive
    model can then score the same tokens as a masked one: it cannot predict a window's first token."""
    prefix, suffix = special_affixes(tokenizer)
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if not 0 <= context < max_length:
        raise ValueError(f"context must be in [0, max_length), got {context}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    windows: list[tuple[list[int], int, int]] = []  # (ids, first text position, end of text)
    counts = {"documents": 0, "bytes": 0, "characters": 0}
    for raw in tqdm(texts, desc="tokenising", unit="doc", disable=not progress):
        doc = normalize(raw).strip()
        if not doc:
            continue
        counts["documents"] += 1
        counts["bytes"] += len(doc.encode("utf-8"))
        counts["characters"] += len(doc)
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        framed, first, end = [*prefix, *ids, *suffix], len(prefix), len(prefix) + len(ids)
        for k, i in enumerate(range(0, len(framed), max_length - context)):
            start = i + context if k else i  # the first `context` tokens were scored by the window before
            if start >= len(framed):
                break
            if min(end, i + max_length) > max(first, start):  # special tokens only: nothing to score
                windows.append((framed[i : i + max_length], max(first, start) - i, min(end - i, max_length)))
    if not windows:
        raise ValueError("no text to score")
    windows.sort(key=lambda w: len(w[0]), reverse=True)  # less padding per batch
    n, t = len(windows), len(windows[0][0])
    ids = torch.full((n, t), pad, dtype=torch.long)
    maskable = torch.zeros((n, t), dtype=torch.bool)
    attention = torch.zeros((n, t), dtype=torch.long)
    for i, (seq, a, b) in enumerate(windows):
        ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        maskable[i, a:b] = True
    return ids, maskable, attention, counts


def text_perplexity(
    model: torch.nn.Module,
    tokenizer,
    texts: Iterable[str],
    *,
    mask_id: int,
    schedule: Schedule,
    t_samples: int = 8,
    max_length: int | None = None,
    context_length: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> TextPerplexity:
    """ELBO perplexity of ``texts``. Windows are ``max_length`` tokens if given, else
    ``context_length`` (the training length a checkpoint records: ``loaded.settings.context_length``),
    else the model's context limit."""
    limit = context_limit(model) or DEFAULT_MAX_LENGTH
    max_length = min(max_length or context_length or limit, limit)
    ids, maskable, attention, counts = text_windows(tokenizer, texts, max_length, progress)
    r = elbo_perplexity(
        MaskedLMParts(model),
        ids,
        schedule=schedule,
        mask_id=mask_id,
        maskable=maskable,
        attention_mask=attention,
        t_samples=t_samples,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    return TextPerplexity(
        nelbo_per_token=r.nelbo_per_token,
        perplexity=r.perplexity,
        stderr_nelbo=r.stderr_nelbo,
        tokens=r.tokens,
        windows=r.sequences,
        t_samples=t_samples,
        **counts,
    )
