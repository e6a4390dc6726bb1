"""Commit rules: which still-masked positions of the current block get their proposal this step.

    score = SCORERS["margin"](logits, tokens, generator)         # [N] higher = commit first
    counts = reveal_counts(block_lengths, steps, schedule)         # [..., steps] how many per step
    commit = top_k_per_row(scores, k)                              # [B, L] bool

Scorers see the float64 logits [N, V] of the candidates at T = 1, before top-k / top-p (forbidden
ids at -inf), and the proposals [N] (registered
with ``@scorer``; ``REMASKING`` is derived from this registry):
- ``low_confidence`` (LLaDA, Diffutron): probability of the proposed token;
- ``margin`` (Dream): top-1 minus top-2 probability;
- ``entropy`` (Dream): minus the entropy of the position's distribution;
- ``random`` (MDLM ancestral, LLaDA random): uniform noise, i.e. random positions.
``threshold`` (Fast-dLLM) scores like ``low_confidence`` but commits every position with a score
>= tau, and at least the best one, instead of a scheduled count. The other *adaptive* rules (``ADAPTIVE``:
how many per step comes from the model's confidence, not the schedule; always at least the best one):
- ``factor`` (Fast-dLLM's factor rule): by confidence p_1 >= p_2 >= ..., the n most confident while
  (n + 1)(1 - p_n) < f (``factor``, 1 in the paper): many tokens when all are near-certain, fewer otherwise;
- ``entropy_budget``: lowest entropy first, while the summed entropy (nats) stays <= a budget;
- ``margin_threshold``: every position whose top-1 minus top-2 probability >= tau.
``confidence_temperature`` T divides the logits before any score (not the draws): a fitted calibration
of an over- or under-confident model (``benchmarks/testbed_numbers.py --calibrate`` fits it).

How many per step comes from the noise schedule, the same object training used: a block of n masks
decoded in S steps goes from t_i = 1 - i/S to s_i = 1 - (i+1)/S, so after step i round(n alpha(s_i))
positions are revealed (deterministic), or each masked one is revealed with probability
(alpha(s) - alpha(t)) / (1 - alpha(t)) (stochastic, MDLM). Either way the last step empties the block.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..diffusion.schedules import Schedule

Scorer = Callable[[torch.Tensor, "torch.Tensor | None", "torch.Generator | None"], torch.Tensor]
SCORERS: dict[str, Scorer] = {}


def scorer(name: str, uses_proposal: bool = False, uses_generator: bool = False):
    """Register a commit rule. ``uses_proposal``: the score depends on the drawn token, and scoring the
    greedy token gives an upper bound on it (the engine uses that bound to draw only where needed).
    ``uses_generator``: the score is random (the engine then scores each row with its own generator)."""

    def wrap(fn: Scorer) -> Scorer:
        fn.uses_proposal = uses_proposal
        fn.uses_generator = uses_generator
        SCORERS[name] = fn
        return fn

    return wrap


@scorer("low_confidence", uses_proposal=True)
def _low_confidence(logits: torch.Tensor, tokens: torch.Tensor, generator) -> torch.Tensor:
    # p(token) = exp(logit - logsumexp): no [N, V] softmax is materialised
    return (logits.gather(1, tokens[:, None]).squeeze(1) - logits.logsumexp(-1)).exp()


@scorer("margin")
def _margin(logits: torch.Tensor, tokens: torch.Tensor | None, generator) -> torch.Tensor:
    top2 = (logits.topk(2, dim=-1).values - logits.logsumexp(-1, keepdim=True)).exp()
    return top2[:, 0] - top2[:, 1]


@scorer("entropy")
def _entropy(logits: torch.Tensor, tokens: torch.Tensor | None, generator) -> torch.Tensor:
    return -torch.special.entr(logits.softmax(-1)).sum(-1)  # entr(0) = 0: forbidden ids add nothing


@scorer("random", uses_generator=True)
def _random(logits: torch.Tensor, tokens: torch.Tensor | None, generator) -> torch.Tensor:
    return torch.rand(logits.shape[0], generator=generator, dtype=torch.float64, device=logits.device)


ADAPTIVE = ("threshold", "factor", "entropy_budget", "margin_threshold")
REMASKING = (*SCORERS, *ADAPTIVE)
# the score each adaptive rule ranks by
ADAPTIVE_SCORE = {
    "threshold": "low_confidence",
    "factor": "low_confidence",
    "entropy_budget": "entropy",
    "margin_threshold": "margin",
}


def reveal_counts(n: torch.Tensor | int, steps: int, schedule: Schedule) -> torch.Tensor:
    """Deterministic transfer: tokens to commit at each of ``steps`` steps of a block of ``n`` masks.
    ``n`` may be a tensor of block lengths; the result has one more dimension of size ``steps``."""
    n = torch.as_tensor(n, dtype=torch.long)
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[1:]  # s_i = 1 - (i+1)/S
    revealed = torch.round(n[..., None].double() * schedule.alpha(s)).long()
    revealed = torch.minimum(revealed, n[..., None])
    revealed[..., -1] = n  # the last step empties the block whatever the schedule's rounding
    first = torch.zeros_like(revealed[..., :1])
    return torch.diff(revealed, dim=-1, prepend=first).clamp(min=0)


def stochastic_counts(
    remaining: torch.Tensor, i: torch.Tensor, steps: int, schedule: Schedule, generator
) -> torch.Tensor:
    """Stochastic transfer (MDLM ancestral): Binomial(remaining, reveal probability from t_i to s_i)."""
    t = 1.0 - i.double() / steps
    s = (1.0 - (i + 1).double() / steps).clamp(min=0.0)
    p = schedule.reveal_probability(t, s)
    return torch.binomial(remaining.double(), p, generator=generator).long()


def rank_in_row(scores: torch.Tensor) -> torch.Tensor:
    """[B, L] rank of each score within its row, 0 = best; ties go to the leftmost position."""
    order = scores.sort(dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return rank


def weakest_pick(scores: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """[B] the lowest score among each row's picked positions (+inf for a row with none)."""
    return torch.where(picked, scores, torch.full_like(scores, float("inf"))).min(1).values


def top_k_per_row(scores: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Commit the ``k[b]`` best-scored candidates of each row b (vectorised over rows)."""
    return candidates & (rank_in_row(scores) < k[:, None])


def above_threshold(scores: torch.Tensor, candidates: torch.Tensor, tau: float) -> torch.Tensor:
    """Fast-dLLM: every candidate with score >= tau, and the best candidate of each row in any case."""
    return candidates & ((scores >= tau) | (rank_in_row(scores) == 0))


def _sorted_prefix(scores: torch.Tensor, candidates: torch.Tensor, keep_fn) -> torch.Tensor:
    """Commit, in each row, the best-scored candidates while ``keep_fn(sorted scores)`` [B, L] holds
    (a prefix in score order: the first position that fails ends it), and the best one in any case."""
    s = torch.where(candidates, scores, torch.full_like(scores, float("-inf")))
    ordered, order = s.sort(dim=1, descending=True, stable=True)
    valid = torch.isfinite(ordered)
    keep = (keep_fn(ordered) & valid).long().cummin(1).values.bool()
    keep[:, 0] = valid[:, 0]
    commit = torch.zeros_like(candidates)
    commit.scatter_(1, order, keep)
    return candidates & commit


def factor_rule(scores: torch.Tensor, candidates: torch.Tensor, factor: float) -> torch.Tensor:
    """Fast-dLLM's factor rule on confidences: the n most confident while (n + 1)(1 - p_n) < factor."""
    n = torch.arange(1, scores.shape[1] + 1, device=scores.device, dtype=scores.dtype)
    return _sorted_prefix(scores, candidates, lambda p: (n + 1) * (1 - p) < factor)


def entropy_budget_rule(scores: torch.Tensor, candidates: torch.Tensor, budget: float) -> torch.Tensor:
    """Scores are minus entropies: lowest entropy first, while the running sum of entropies <= budget."""
    return _sorted_prefix(scores, candidates, lambda s: (-s).cumsum(1) <= budget)


def calibrated(score_fn: Scorer, temperature: float) -> Scorer:
    """``score_fn`` on logits / ``temperature`` (1: ``score_fn`` itself), its flags kept."""
    if temperature == 1.0:
        return score_fn

    def scaled(logits, tokens, generator):
        return score_fn(logits / temperature, tokens, generator)

    scaled.uses_proposal = score_fn.uses_proposal
    scaled.uses_generator = score_fn.uses_generator
    return scaled
