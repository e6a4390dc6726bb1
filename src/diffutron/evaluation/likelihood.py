"""Likelihood of a continuation under a masked diffusion model: the stratified Monte-Carlo ELBO.

    scorer = ContinuationScorer(model, tokenizer, mask_id=loaded.mask_id, config=LikelihoodConfig(samples=32))
    out = scorer.score([("Türkiye'nin başkenti", " Ankara"), ("Türkiye'nin başkenti", " İzmir")])
    out.loglikelihoods, out.stderr, out.forward_passes

log p(answer | context) has no closed form for a masked diffusion model; we estimate its ELBO
(``mdlm.md``, LLaDA's estimator). For an answer of L tokens:

    ELBO = E_{m ~ U{1..L}} E_{S ~ U(subsets of size m)} [ -(L/m) * sum_{i in S} CE_i(x with S masked) ]

1. Tokenise so the answer tokens are exactly the ones scored (:func:`encode_pair`): context and
   answer are cut from *one* tokenisation of context + answer, special tokens are added around the
   whole sequence afterwards, so no ``<eos>``/``[SEP]`` slips into (or out of) the answer.
2. Plan the rows (:func:`plan_rows`). Sample j masks exactly m_j answer tokens, with
   m_j = 1 + floor((k + j*L/n) mod L) for one offset k ~ U[0, L) per request (stratified: every
   m_j is marginally uniform on 1..L, so the estimate stays unbiased, and the n samples cover the
   range of m evenly). Positions are a uniform subset. The context is never masked. Samples that
   drew the same mask (every sample with m = L does) share one row, weighted for all of them.
   When 2^L - 1 <= n (answers of one to five tokens at 32 samples: "A", "Evet", "spor") we
   enumerate every subset instead and get the ELBO *exactly*, within the budget of n rows
   (sampling with shared rows may use fewer, but is noisy).
3. Batch rows of all requests together (samples x choices x items), sorted by length, ``batch_size``
   rows per forward pass; the output head runs only on the masked answer positions
   (:func:`diffutron.diffusion.weighted_masked_nll`, the same code as training).
4. Each row contributes coef * sum(CE) with coef = (L/m)/n (sampled) or 1/(m*C(L,m)) (enumerated);
   the estimate is minus the sum over a request's rows.

Deterministic under ``seed``: each request's masks come from its own generator, seeded by the seed,
the context's token ids and the answer's *length* — common random numbers: choices of one item with
the same number of tokens are scored with the same masks, so their difference carries less Monte-Carlo
noise (``common_masks=False``: seeded by the answer's ids too, independent masks per choice). Scores do
not depend on batching, order or ``--limit``.

:func:`reference_loglikelihood` is the slow reference (one forward pass per sample per request, full
output head): the same masks and numbers, kept for tests and the throughput benchmark.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..diffusion.block import block_inputs, block_size_of
from ..diffusion.loss import weighted_masked_nll
from ..models.heads import MaskedLMParts, context_limit


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one request: ``prefix + context + answer + suffix`` is what the model sees."""

    context: tuple[int, ...]
    answer: tuple[int, ...]
    prefix: tuple[int, ...] = ()  # special tokens the tokenizer puts before a text (<bos>, [CLS])
    suffix: tuple[int, ...] = ()  # ... and after it (<eos>, [SEP])

    @property
    def ids(self) -> list[int]:
        return [*self.prefix, *self.context, *self.answer, *self.suffix]

    @property
    def answer_start(self) -> int:
        return len(self.prefix) + len(self.context)


def special_affixes(tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The special tokens ``tokenizer(text)`` puts before and after a text, found by a probe:
    ``(<bos>,), (<eos>,)`` for ours, ``([CLS],), ([SEP],)`` for BERT, ``(<bos>,), ()`` for Gemma."""
    probe = "a"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return tuple(full[:i]), tuple(full[i + len(plain) :])
    bos = getattr(tokenizer, "bos_token_id", None)  # unusual template: fall back to <bos> only
    return ((bos,) if bos is not None else ()), ()


def encode_pair(
    tokenizer,
    context: str,
    continuation: str,
    affixes: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
) -> EncodedPair:
    """Split one tokenisation of ``context + continuation`` into context and answer ids.

    The context keeps its own tokens: a trailing ``"\n"`` (its own token under our pre-tokenizer)
    stays in the context, so ``"...mı?\n" + " Evet"`` scores ``[" Evet"]``, not ``["\n", " Evet"]``
    (under the ELBO an extra answer token does not cost every choice the same, and a one-token answer
    would lose its exact score). Only what BPE merges across the border joins the answer: for
    ``"Cevap: " + "A"`` the space merges into ``" A"``, a token that straddles the border, and counts
    as answer, so ``"Cevap: " + "A"`` is scored like ``"Cevap:" + " A"``. The answer ids are always a
    suffix of the joint tokenisation and never include special tokens.
    """
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
    common = 0
    while common < min(len(ctx), len(whole)) and ctx[common] == whole[common]:
        common += 1
    prefix, suffix = affixes if affixes is not None else special_affixes(tokenizer)
    return EncodedPair(tuple(whole[:common]), tuple(whole[common:]), tuple(prefix), tuple(suffix))


@dataclass
class LikelihoodConfig:
    samples: int = 32  # Monte-Carlo samples per request (LLaDA: 128; dllm's BERT evaluator: 32)
    batch_size: int = 32  # rows (one masked copy of one request) per forward pass
    seed: int = 0
    enumerate_small: bool = True  # exact ELBO when 2^L - 1 <= samples (at most `samples` rows)
    common_masks: bool = True  # choices of equal token length share their masks (common random numbers)
    max_length: int | None = None  # default: the model's context (models.heads.context_limit)
    sparse_head: bool = True  # False: full output head on every position (the naive path)


@dataclass
class LikelihoodResult:
    loglikelihoods: list[float]  # ELBO estimate of log p(answer | context), per request
    stderr: list[float]  # Monte-Carlo standard error per request (0 where enumerated exactly)
    answer_tokens: list[int]
    exact: list[bool]  # True where the ELBO was enumerated exactly
    forward_passes: int = 0
    rows: int = 0
    truncated: int = 0  # requests whose context was cut from the left to fit the model


@dataclass(frozen=True)
class Row:
    request: int
    positions: tuple[int, ...]  # answer-relative indices masked in this row
    coef: float  # weight of this row's summed CE in the request's estimate
    count: int = 1  # samples that drew this same mask (merged: one forward pass for all of them)


def _request_rng(seed: int, pair: EncodedPair, common: bool = True) -> random.Random:
    # str seeds are hashed with SHA-512 by `random`: stable across processes (unlike hash()).
    answer = len(pair.answer) if common else pair.answer  # common: one mask plan per answer length
    return random.Random(f"{seed}|{pair.prefix}|{pair.context}|{answer}")


def plan_rows(
    pair: EncodedPair,
    request: int,
    samples: int,
    seed: int,
    enumerate_small: bool,
    dedupe: bool = True,
    common_masks: bool = True,
) -> list[Row]:
    """The masked copies of one request and their weights (steps 2 and 4 of the module docstring).
    Samples that drew the same mask (always the case for m = L) share one row when ``dedupe``.
    ``common_masks``: the masks depend on the context and the answer's length, not its ids."""
    n_ans = len(pair.answer)
    if n_ans == 0:
        return []
    if enumerate_small and (1 << n_ans) - 1 <= samples:
        rows = []
        for m in range(1, n_ans + 1):
            coef = 1.0 / (m * math.comb(n_ans, m))  # (1/L) * (L/m) * 1/C(L, m)
            rows += [Row(request, s, coef) for s in itertools.combinations(range(n_ans), m)]
        return rows
    rng = _request_rng(seed, pair, common_masks)
    offset = rng.random() * n_ans
    drawn: dict[tuple[int, ...], int] = {}
    rows = []
    for j in range(samples):
        m = 1 + int((offset + j * n_ans / samples) % n_ans)
        positions = tuple(sorted(rng.sample(range(n_ans), m)))
        if dedupe and positions in drawn:
            row = rows[drawn[positions]]
            rows[drawn[positions]] = Row(request, positions, row.coef + (n_ans / m) / samples, row.count + 1)
            continue
        drawn[positions] = len(rows)
        rows.append(Row(request, positions, (n_ans / m) / samples))
    return rows


class ContinuationScorer:
    """Scores (context, continuation) requests with the stratified MC ELBO; see the module docstring."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer=None,
        *,
        mask_id: int,
        pad_id: int | None = None,
        config: LikelihoodConfig | None = None,
    ):
        """``tokenizer`` may be None when only :meth:`score_encoded` is used (token ids given)."""
        self.model = model
        self.tokenizer = tokenizer
        self.mask_id = int(mask_id)
        self.config = config or LikelihoodConfig()
        self.parts = MaskedLMParts(model)
        self.affixes = special_affixes(tokenizer) if tokenizer is not None else ((), ())
        limit = context_limit(model)
        self.max_length = self.config.max_length or limit or 512
        if pad_id is None and tokenizer is not None:
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad_id or 0)  # padding is never attended to; any id works
        self.forward_passes = 0  # running total over all calls
        # block diffusion (the mode saved with the checkpoint): the answer is cut into the model's
        # blocks from its start, the context is the clean condition; the same estimator then gives
        # the block model's own bound, the sum over blocks (exact when enumerated)
        self.block_size = block_size_of(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, requests: Sequence[tuple[str, str]]) -> list[EncodedPair]:
        return [encode_pair(self.tokenizer, c, a, self.affixes) for c, a in requests]

    def _fit(self, pair: EncodedPair) -> tuple[EncodedPair, bool]:
        """Cut the context from the left so the sequence fits the model; the answer is never cut."""
        excess = len(pair.prefix) + len(pair.context) + len(pair.answer) + len(pair.suffix) - self.max_length
        if excess <= 0:
            return pair, False
        if excess > len(pair.context):
            raise ValueError(
                f"an answer of {len(pair.answer)} tokens does not fit the model's {self.max_length} "
                "positions even without its context"
            )
        return EncodedPair(pair.context[excess:], pair.answer, pair.prefix, pair.suffix), True

    @torch.no_grad()
    def score(self, requests: Sequence[tuple[str, str]]) -> LikelihoodResult:
        return self.score_encoded(self.encode(requests))

    @torch.no_grad()
    def score_encoded(self, pairs: Sequence[EncodedPair]) -> LikelihoodResult:
        cfg = self.config
        fitted = [self._fit(p) for p in pairs]
        pairs = [p for p, _ in fitted]
        rows = [
            r
            for i, p in enumerate(pairs)
            for r in plan_rows(
                p, i, cfg.samples, cfg.seed, cfg.enumerate_small, common_masks=cfg.common_masks
            )
        ]
        row_sums, passes = self._row_sums(pairs, rows)  # coef * sum CE, per row
        exact = [
            not p.answer or (cfg.enumerate_small and (1 << len(p.answer)) - 1 <= cfg.samples) for p in pairs
        ]
        total = [0.0] * len(pairs)
        per_sample: list[list[float]] = [[] for _ in pairs]
        for row, value in zip(rows, row_sums, strict=True):
            total[row.request] -= value
            if not exact[row.request]:
                # each of the row's samples estimated -(L/m) sum CE = -value * n / count
                per_sample[row.request] += [-value * cfg.samples / row.count] * row.count
        # The plain standard error of the mean over samples; stratifying m makes it conservative.
        stderr = [
            float(torch.tensor(v, dtype=torch.float64).std() / math.sqrt(len(v))) if len(v) > 1 else 0.0
            for v in per_sample
        ]
        return LikelihoodResult(
            loglikelihoods=total,
            stderr=stderr,
            answer_tokens=[len(p.answer) for p in pairs],
            exact=exact,
            forward_passes=passes,
            rows=len(rows),
            truncated=sum(t for _, t in fitted),
        )

    def _row_sums(self, pairs: Sequence[EncodedPair], rows: Sequence[Row]) -> tuple[list[float], int]:
        """Run every row through the model, ``batch_size`` rows per pass, longest first."""
        was_training = self.model.training
        self.model.eval()  # no dropout while scoring; the caller's mode is restored below
        seqs = [torch.tensor(p.ids, dtype=torch.long) for p in pairs]  # built once per request
        order = sorted(range(len(rows)), key=lambda i: -len(seqs[rows[i].request]))
        out = [0.0] * len(rows)
        passes = 0
        for start in range(0, len(order), self.config.batch_size):
            chunk = order[start : start + self.config.batch_size]
            ids, masked, attention, coefs = self._batch([rows[i] for i in chunk], pairs, seqs)
            answers = self._answers([rows[i] for i in chunk], pairs, ids.shape[1])
            noisy = torch.where(masked, torch.full_like(ids, self.mask_id), ids)
            nll = weighted_masked_nll(
                self.parts,
                ids,
                noisy,
                masked,
                attention,
                coefs,
                suppress_id=self.mask_id,
                sparse_head=self.config.sparse_head,
                block_size=self.block_size,
                maskable=answers,
            )  # [B, T]: coef * CE at masked positions
            passes += 1
            for i, value in zip(chunk, nll.sum(dim=1).double().cpu().tolist(), strict=True):
                out[i] = value
        self.forward_passes += passes
        self.model.train(was_training)
        return out, passes

    def _batch(self, rows: Sequence[Row], pairs: Sequence[EncodedPair], seqs: Sequence[torch.Tensor]):
        """Padded [B, T] ids, mask of the positions to mask, attention mask, and the row weights."""
        width = max(len(seqs[r.request]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        masked = torch.zeros((len(rows), width), dtype=torch.bool)
        for b, row in enumerate(rows):
            pair, seq = pairs[row.request], seqs[row.request]
            ids[b, : len(seq)] = seq
            attention[b, : len(seq)] = 1
            masked[b, [pair.answer_start + p for p in row.positions]] = True
        coefs = torch.tensor([r.coef for r in rows], dtype=torch.float32)
        device = self.device
        return ids.to(device), masked.to(device), attention.to(device), coefs.to(device)

    def _answers(self, rows: Sequence[Row], pairs: Sequence[EncodedPair], width: int) -> torch.Tensor:
        """[B, T] the answer positions of each row (block mode cuts its blocks from the first)."""
        out = torch.zeros((len(rows), width), dtype=torch.bool)
        for b, row in enumerate(rows):
            pair = pairs[row.request]
            out[b, pair.answer_start : pair.answer_start + len(pair.answer)] = True
        return out.to(self.device)

    @torch.no_grad()
    def greedy(self, requests: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each answer is the argmax at every answer position when the whole answer is masked
        (one row per request): lm-eval's ``is_greedy`` for a model that predicts all positions at once."""
        pairs = [self._fit(p)[0] for p in self.encode(requests)]
        result = [True] * len(pairs)
        todo = [i for i, p in enumerate(pairs) if p.answer]
        was_training = self.model.training
        self.model.eval()
        for start in range(0, len(todo), self.config.batch_size):
            chunk = todo[start : start + self.config.batch_size]
            rows = [Row(i, tuple(range(len(pairs[i].answer))), 1.0) for i in chunk]
            seqs = {i: torch.tensor(pairs[i].ids, dtype=torch.long) for i in chunk}
            ids, masked, attention, _ = self._batch(rows, pairs, seqs)
            noisy = torch.where(masked, torch.full_like(ids, self.mask_id), ids)
            if self.block_size is None:
                hidden = self.parts.encode(noisy, attention)
            else:  # each block all masked, given the clean earlier ones: the x_t half of the pass
                inputs, mask, positions = block_inputs(
                    self.parts, noisy, ids, masked, attention, self.block_size
                )
                hidden = self.parts.encode(inputs, mask, positions)[:, : ids.shape[1]]
            logits = self.parts.head(hidden[masked]).float()
            logits[:, self.mask_id] = float("-inf")
            hit = (logits.argmax(-1) == ids[masked]).cpu()
            self.forward_passes += 1
            counts = masked.sum(dim=1).cpu().tolist()
            offsets = [0, *itertools.accumulate(counts)]
            for b, i in enumerate(chunk):
                result[i] = bool(hit[offsets[b] : offsets[b + 1]].all())
        self.model.train(was_training)
        return result


@torch.no_grad()
def reference_loglikelihood(
    model: torch.nn.Module,
    tokenizer,
    requests: Sequence[tuple[str, str]],
    *,
    mask_id: int,
    samples: int = 32,
    seed: int = 0,
) -> tuple[list[float], int]:
    """The naive estimator: one forward pass per sample per request, logits on every position,
    no enumeration. Same masks as :class:`ContinuationScorer` with ``enumerate_small=False``.
    Returns (log-likelihood estimates, forward passes)."""
    model.eval()
    device = next(model.parameters()).device
    affixes = special_affixes(tokenizer)
    estimates, passes = [], 0
    for i, (context, continuation) in enumerate(requests):
        pair = encode_pair(tokenizer, context, continuation, affixes)
        ids = torch.tensor([pair.ids], device=device)
        total = 0.0
        for row in plan_rows(pair, i, samples, seed, enumerate_small=False, dedupe=False):
            positions = [pair.answer_start + p for p in row.positions]
            noisy = ids.clone()
            noisy[0, positions] = mask_id
            logits = model(input_ids=noisy).logits[0].float()  # [T, V]: the full head
            logits[:, mask_id] = float("-inf")
            ce = torch.nn.functional.cross_entropy(logits[positions], ids[0, positions], reduction="sum")
            total -= row.coef * float(ce)
            passes += 1
        estimates.append(total)
    return estimates, passes
