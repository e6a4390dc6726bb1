"""Exact chain-rule likelihoods on scored windows: a masked diffusion model unmasked in order, and an
autoregressive model — the two numbers that put an MDLM next to a left-to-right LM.

    ids, scored, attention, counts = text_windows(tokenizer, texts, 128, context=1)
    mdlm = inorder_nll(model, ids, scored, attention, mask_id=mask_id)      # left-to-right unmasking
    ar = causal_nll(ar_model, ids, scored, attention)                       # any AutoModelForCausalLM
    mdlm.perplexity, mdlm.stderr_nll, bits_per_unit(mdlm.total_nats, counts["characters"])

**In-order likelihood of a masked diffusion model.** The model gives a distribution over every
masked position given the visible ones. Reveal the scored positions of a window one at a time in a
fixed order — left to right by default, so every position to the right of the one predicted is
still masked — and multiply the model's probability of each true token given what is revealed so
far. Each factor is normalised over the vocabulary (the mask token's logit at -inf, as in training),
so the product is the exact likelihood of a proper left-to-right model built from the MDLM, not a
bound; non-scored positions (``<bos>``, context, ``<eos>``) stay visible throughout, as in the ELBO.
It costs one forward pass per scored token (batched), where the ELBO costs ``t_samples`` per window.

**Relation to the ELBO.** For a schedule with alpha(1) = 0 (linear, cosine) the continuous-time
NELBO of a window equals this NLL averaged over all orders drawn uniformly at random: integrating
w(t) against the binomial number k of masked tokens gives weight 1/k to each k-subset, which is the
chance that a random order predicts that position from that revealed set. A test checks this
identity. So the ELBO is the *any-order* average; on text, left to right is usually the easiest
order and scores lower, but for one window it can score higher: it is a different estimate, not a
bound on the ELBO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..models.heads import MaskedLMParts, suppressed_logits
from .perplexity import bits_per_unit


@dataclass
class SequenceNll:
    """Per-window negative log-likelihoods (nats) and scored-token counts."""

    nll: torch.Tensor  # [N] float64
    tokens: torch.Tensor  # [N] float64

    @property
    def total_nats(self) -> float:
        return float(self.nll.sum())

    @property
    def nll_per_token(self) -> float:
        return self.total_nats / max(1.0, float(self.tokens.sum()))

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.nll_per_token, 700.0))

    @property
    def stderr_nll(self) -> float:
        """Standard error of ``nll_per_token`` over windows (the ratio estimator, delta method)."""
        n = self.nll.numel()
        if n < 2:
            return float("nan")
        resid = self.nll - self.nll_per_token * self.tokens
        return float(resid.std(unbiased=True) * math.sqrt(n) / self.tokens.sum())

    def bits_per(self, units: int) -> float:
        """Bits per byte or character of the scored text (``units`` of it)."""
        return bits_per_unit(self.total_nats, units)

    def subset(self, index: torch.Tensor | slice) -> SequenceNll:
        return SequenceNll(self.nll[index], self.tokens[index])

    def to_dict(self) -> dict:
        return {
            "nll_per_token": self.nll_per_token,
            "perplexity": self.perplexity,
            "stderr_nll": self.stderr_nll,
            "tokens": int(self.tokens.sum()),
            "windows": int(self.nll.numel()),
        }


def left_to_right(scored: torch.Tensor) -> torch.Tensor:
    """[N, L] reveal steps: the k-th scored position of a window (from the left) is revealed at step
    k; positions that are not scored get -1."""
    steps = scored.long().cumsum(dim=1) - 1
    return torch.where(scored, steps, torch.full_like(steps, -1))


@torch.no_grad()
def inorder_nll(
    model: torch.nn.Module,
    ids: torch.Tensor,
    scored: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    mask_id: int,
    order: torch.Tensor | None = None,
    batch_size: int = 128,
    progress: bool = False,
) -> SequenceNll:
    """Exact NLL of the ``scored`` tokens of each window [N, L] under a masked LM that reveals them
    one at a time in ``order`` ([N, L] reveal step of each scored position, 0 first; default: left to
    right). At step k the positions revealed at steps >= k are masked and the one of step k is
    predicted. ``batch_size`` counts (window, step) rows per forward pass."""
    parts = model if isinstance(model, MaskedLMParts) else MaskedLMParts(model)
    was_training = parts.training
    parts.eval()
    device = next(parts.parameters()).device
    scored = scored.bool()
    order = left_to_right(scored) if order is None else order.long()
    counts = scored.sum(dim=1)
    length = ids.shape[1]
    ranks = torch.where(scored, order, length).sort(dim=1).values
    expected = torch.arange(length).expand_as(ranks)
    if not torch.equal(
        torch.where(expected < counts[:, None], ranks, length),
        torch.where(expected < counts[:, None], expected, length),
    ):
        raise ValueError("order must number each window's scored positions 0, 1, ... once each")
    # one row per (window, step), consecutive per window
    win = torch.repeat_interleave(torch.arange(ids.shape[0]), counts)
    step = torch.cat([torch.arange(int(c)) for c in counts]) if len(win) else win
    nll = torch.zeros(ids.shape[0], dtype=torch.float64)
    bar = tqdm(total=len(win), desc="in-order NLL", unit="tok", disable=not progress)
    for start in range(0, len(win), batch_size):
        w, k = win[start : start + batch_size], step[start : start + batch_size]
        rows, rank = ids[w], order[w]
        hidden_now = scored[w] & (rank >= k[:, None])  # revealed at this step or later: masked
        target_pos = (rank == k[:, None]).long().argmax(dim=1)
        noisy = torch.where(hidden_now, torch.full_like(rows, mask_id), rows).to(device)
        am = attention_mask[w].to(device) if attention_mask is not None else None
        hidden = parts.encode(noisy, am)
        picked = hidden[torch.arange(len(w), device=device), target_pos.to(device)]
        logp = suppressed_logits(parts.head(picked), mask_id).log_softmax(dim=-1)
        target = rows[torch.arange(len(w)), target_pos].to(device)
        row_nll = -logp.gather(1, target[:, None]).squeeze(1)
        nll.index_add_(0, w, row_nll.double().cpu())
        bar.update(len(w))
    bar.close()
    if was_training:
        parts.train()
    return SequenceNll(nll=nll, tokens=counts.double())


@torch.no_grad()
def causal_nll(
    model: torch.nn.Module,
    ids: torch.Tensor,
    scored: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> SequenceNll:
    """Exact NLL of the ``scored`` tokens of each window under an autoregressive model (a
    ``transformers`` causal LM): each scored token given everything to its left. The first position
    of a window has nothing to its left and cannot be scored (``text_windows(..., context=1)``)."""
    scored = scored.bool()
    if scored[:, 0].any():
        raise ValueError("a window's first token has no left context: build windows with context >= 1")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll = torch.zeros(ids.shape[0], dtype=torch.float64)
    bar = tqdm(total=ids.shape[0], desc="causal NLL", unit="window", disable=not progress)
    for start in range(0, ids.shape[0], batch_size):
        x = ids[start : start + batch_size].to(device)
        am = attention_mask[start : start + batch_size].to(device) if attention_mask is not None else None
        logits = model(input_ids=x, attention_mask=am).logits[:, :-1].float()
        tok = -logits.log_softmax(dim=-1).gather(2, x[:, 1:, None]).squeeze(2)  # [B, L-1]
        keep = scored[start : start + batch_size, 1:].to(device)
        nll[start : start + len(x)] = (tok * keep).sum(dim=1).double().cpu()
        bar.update(len(x))
    bar.close()
    if was_training:
        model.train()
    return SequenceNll(nll=nll, tokens=scored.sum(dim=1).double())
