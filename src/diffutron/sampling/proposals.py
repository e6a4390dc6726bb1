"""Proposals: from the logits at still-masked positions to one token per position, with probabilities.

    logits = apply_repetition_penalty_ids(logits, canvas_ids[rows], 1.2)   # [N, V], ids in each row
    logits, scaled = prepare(logits, forbidden, temperature=0.1, top_k=0, top_p=1.0)
    tokens = draw(scaled[rows_that_matter], 0.1, generator)

The order is the references' (LLaDA, Diffutron's generator, ``transformers``):
  1. float64 logits; forbidden ids (the mask token, suppressed ids) get -inf — never proposed;
  2. repetition penalty on every id already in the row's canvas (prompt and committed answer);
  3. top-k / top-p on logits / T (T = 1 when greedy);
  4. the proposal: argmax (T = 0) or Gumbel-max in float64, argmax(logits / T + g), g = -log(E),
     E ~ Exp(1) (LLaDA's exp(logits) / E^T: the same argmax);
  5. the commit rules score the softmax of the *unfiltered* logits at T = 1 (steps 1-2 only): LLaDA and
     Fast-dLLM compute confidence without the temperature and without top-k / top-p, which only shape
     the draw. Scoring the renormalised kept set would give a position whose top token has p = 0.85
     confidence 1.0 under top_p = 0.8, and every position confidence 1.0 under top_k = 1.
Only the N still-masked positions of the current block reach this module, and the engine draws
(step 4) only at those that can be committed this step (see engine.py): float64 noise over a 256k
vocabulary for every masked position would be a large share of a step.
"""

from __future__ import annotations

import torch


def tokens_present(canvas: torch.Tensor, valid: torch.Tensor, mask_id: int, vocab_size: int) -> torch.Tensor:
    """[B, V] bool: which ids occur in each row's canvas (real positions only; the mask never counts)."""
    ids = torch.where(
        valid.bool(), canvas, torch.full_like(canvas, mask_id)
    )  # padding -> mask, dropped below
    present = torch.zeros(canvas.shape[0], vocab_size, dtype=torch.bool, device=canvas.device)
    present.scatter_(1, ids, True)
    present[:, mask_id] = False
    return present


def _penalise(logits: torch.Tensor, penalty: float) -> torch.Tensor:
    return torch.where(logits > 0, logits / penalty, logits * penalty)


def apply_repetition_penalty(logits: torch.Tensor, present: torch.Tensor, penalty: float) -> torch.Tensor:
    """Diffutron's rule: for every id already in the canvas, a positive logit is divided by the penalty
    and a negative one multiplied by it (both make the id less likely when penalty > 1)."""
    if penalty == 1.0:
        return logits
    return torch.where(present, _penalise(logits, penalty), logits)


def apply_repetition_penalty_ids(
    logits: torch.Tensor, ids: torch.Tensor, penalty: float, *, inplace: bool = False
) -> torch.Tensor:
    """The same rule given the ids of each row's canvas ([N, W], repeats allowed; pad with an id that
    is forbidden later, such as the mask): touches N x W logits instead of N x V (``inplace``: writes
    into ``logits``, sparing an [N, V] copy when the caller owns them)."""
    if penalty == 1.0:
        return logits
    penalised = _penalise(logits.gather(1, ids), penalty)
    return logits.scatter_(1, ids, penalised) if inplace else logits.scatter(1, ids, penalised)


def top_k_top_p_keep(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor | None:
    """[N, V] bool of the ids top-k / top-p keep (``None`` when both are off); the best id is always kept."""
    keep = None
    if top_k > 0 and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]
        keep = scaled >= kth
    if top_p < 1.0:
        s = scaled if keep is None else scaled.masked_fill(~keep, float("-inf"))
        sorted_logits, order = s.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the tokens strictly before it already reach top_p (so the first always stays)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
        keep = ~drop if keep is None else keep & ~drop
    return keep


def prepare(
    logits: torch.Tensor, forbidden: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1 and 3: float64, forbidden ids at -inf. Returns the unfiltered logits at T = 1 (what the
    commit rules score) and the logits at T with the top-k / top-p cuts at -inf (what is sampled from).
    The best id survives both, so the greedy proposal is the argmax of either."""
    logits = logits.double().masked_fill(forbidden, float("-inf"))
    scaled = logits / temperature if temperature > 0 else logits
    keep = top_k_top_p_keep(scaled, top_k, top_p)
    if keep is not None:
        scaled = scaled.masked_fill(~keep, float("-inf"))
    return logits, scaled


def draw(scaled: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Step 4: argmax at T = 0, else Gumbel-max in float64, argmax(logits / T - log E), E ~ Exp(1) —
    an exact sample from softmax(logits / T) (LLaDA writes it exp(logits) / E^T: the same argmax)."""
    if temperature == 0:
        return scaled.argmax(-1)
    e = torch.empty(scaled.shape, dtype=torch.float64, device=scaled.device).exponential_(generator=generator)
    return (scaled - e.log()).argmax(-1)


def propose(
    logits: torch.Tensor,
    forbidden: torch.Tensor,
    *,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1, 3 and 4 for every row: the proposed ids [N] and the unfiltered float64 logits [N, V].
    (The engine calls ``prepare`` on every candidate but ``draw`` only where a draw can matter.)"""
    logits, scaled = prepare(logits, forbidden, temperature, top_k, top_p)
    return draw(scaled, temperature, generator), logits
