"""The sampling engine: text from a masked diffusion model by iterative unmasking.

    cfg = PRESETS["diffutron"]                       # or GenerationConfig(...)
    out = generate(model, tokenizer, ["Türkiye'nin başkenti"], cfg, schedule=schedule)
    out.texts, out.forward_passes
    out = infill(model, tokenizer, ["Ankara Türkiye'nin <mask:2> şehridir."], cfg)
    for event in stream(model, tokenizer, prompts, cfg):   # one event per step that changed the canvas
        print(event.partial_texts(tokenizer))

One loop serves generation, infilling and the server: ``DecodeState``, a batch of rows that runs one
step at a time and that rows may join and leave between steps (``_run`` adds all rows of a call at
once; the server's ``batch.DecodeBatch`` adds and removes them as requests come and go). Its input is
a canvas [B, L] and the positions it may write (``editable``): the answer after the prompt
(generation) or the holes of a text (infilling). Rows are right-padded and padding is excluded by
the attention mask, so a batch of prompts of different lengths gives what each prompt gives alone
(up to the last bits of the logits: docs/sampling.md, "What is deterministic").
Each row has its own settings and its own random generator (row b of a ``generate`` call under seed s
uses ``row_seed(s, b)``; row 0 uses s). Editable positions are cut, in order, into semi-autoregressive
blocks of ``block_size``; each row decodes the lowest block that still has masks,
in ``steps / n_blocks`` steps (a remainder goes to the first blocks, so ``steps`` is the total; fewer
steps than blocks gives each block one, with a warning; ``output.steps`` says what was taken), or, with
``threshold``, as many as the text needs. A step:

  1. candidates: the still-masked positions of each row's current block;
  2. how many each row commits: from the schedule (deterministic or stochastic) or all of them for
     ``threshold``; a row with nothing to commit is not sent through the network — MDLM's "reuse the
     previous prediction when nothing changed", exact because the model has no time input: the
     prediction for an unchanged canvas is the one it already had, so the call is simply not made;
  3. one forward pass over the rows that commit something (and, with guidance, the same rows with
     the prompt masked); the output head runs only at candidate positions (``forward_candidates``:
     the only place the network is called);
  4. proposals: penalty, suppression, top-k/top-p, greedy or Gumbel-max (``proposals.py``), in
     float64 but ``MAX_PROPOSAL_ELEMENTS`` at a time: a long answer in one block over a 256k
     vocabulary would otherwise hold several float64 [N, V] copies (1 GB each at N = 512);
  5. commit the best-scored candidates by the commit rule (``commit.py``); with sampling, tokens are
     drawn only at candidates that can be committed (``_choose``: exact, and it spares float64 noise
     over the vocabulary at every masked position); committed tokens are never re-masked;
  6. stop: a row whose end token is committed with nothing masked before it, or whose filled answer
     contains a stop string, is finished: its remaining masks become end tokens, it takes no more passes.

Steps 1, 2 and 6 are tensor operations over all rows; 4-5 are one call per group of rows with the same
sampling settings (one group unless the server mixes settings). The random draws of steps 2, 4 and 5
(stochastic counts, Gumbel noise, the ``random`` scorer) are made row by row, each from its row's
generator and at the sizes the row uses alone, so a row's draws never depend on its neighbours.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ..diffusion.block import block_size_of, causal_inputs, check_backbone
from ..diffusion.schedules import LinearSchedule, Schedule
from ..models.heads import MaskedLMParts, context_limit
from ..models.kv_cache import MODE_IDS, BlockKVCache, EncoderKVCache
from .commit import (
    ADAPTIVE,
    ADAPTIVE_SCORE,
    SCORERS,
    above_threshold,
    calibrated,
    entropy_budget_rule,
    factor_rule,
    reveal_counts,
    stochastic_counts,
    top_k_per_row,
    weakest_pick,
)
from .config import GenerationConfig
from .prompts import encode_prompt, encode_with_holes, render_partial
from .proposals import apply_repetition_penalty_ids, draw, prepare

MAX_PROPOSAL_ELEMENTS = 1 << 24  # float64 logits per chunk of candidates (128 MB), as in the loss


@dataclass
class GenerationOutput:
    texts: list[str]  # generate: the answers; infill: the whole texts with the holes filled
    token_ids: list[list[int]]  # generate: answer ids up to the end token; infill: the whole text
    forward_passes: int  # network calls (a batched call counts once)
    canvas: torch.Tensor  # final canvas [B, L]
    commit_step: torch.Tensor  # [B, L]: step at which each position was committed (-1: not written)
    prompt_lengths: list[int] = field(default_factory=list)  # infill: tokens before the first hole
    row_passes: list[int] = field(default_factory=list)  # network calls each row took part in
    steps: int = 0  # schedule steps taken (a step with nothing to commit costs no call)
    editable: torch.Tensor | None = None  # [B, L] positions the sampler filled
    fills: list[list[str]] = field(default_factory=list)  # infill: the text of each hole, per row


@dataclass
class StepEvent:
    """The state after a step that changed the canvas; the last event of a run carries ``output``."""

    step: int
    forward_passes: int
    canvas: torch.Tensor  # [B, L] after this step
    committed: torch.Tensor  # [B, L] bool: positions written at this step
    finished: torch.Tensor  # [B] bool: rows that are done
    editable: torch.Tensor  # [B, L] bool
    view_start: list[int]  # first position of each row worth showing (the answer, or the text)
    mask_id: int
    output: GenerationOutput | None = None

    @property
    def done(self) -> bool:
        return self.output is not None

    def partial_texts(self, tokenizer, symbol: str = "░") -> list[str]:
        """Each row's answer (or text) so far, masks shown as ``symbol``."""
        rows = []
        for b, start in enumerate(self.view_start):
            last = int(self.editable[b].nonzero().max()) + 1 if self.editable[b].any() else start
            rows.append(render_partial(tokenizer, self.canvas[b, start:last].tolist(), self.mask_id, symbol))
        return rows


@dataclass
class _Canvas:
    """What a run starts from (built by ``_prepare_generate`` / ``_prepare_infill``)."""

    ids: torch.Tensor  # [B, L]
    attention: torch.Tensor  # [B, L] 1 = real position (right padding)
    editable: torch.Tensor  # [B, L] bool
    prompt_lengths: list[int]
    answer: bool  # generation: the editable region is an answer that may end early
    view_start: list[int]  # first position a view shows: the answer, or the text after <bos>
    holes: list[list[tuple[int, int]]] = field(default_factory=list)


def _right_padded(rows: list[list[int]], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), fill, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):  # setup only, not the hot path
        ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        attention[b, : len(r)] = 1
    return ids, attention


def _check_context(model: torch.nn.Module, width: int, what: str) -> None:
    limit = context_limit(model)  # RoBERTa-type: max_position_embeddings less the padding offset
    if limit is not None and width > limit:
        raise ValueError(f"{what} ({width} tokens) exceed the model's context of {limit}")


def _prepare_generate(model, tokenizer, prompts, n_new: int, mask_id: int, fill: int) -> _Canvas:
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    lengths = [len(p) for p in prompt_ids]
    _check_context(model, max(lengths) + n_new, f"prompt ({max(lengths)} tokens) + {n_new} new tokens")
    ids, attention = _right_padded([p + [mask_id] * n_new for p in prompt_ids], fill)
    rel = torch.arange(ids.shape[1])[None, :] - torch.tensor(lengths)[:, None]
    editable = (rel >= 0) & (rel < n_new)
    return _Canvas(ids, attention, editable, lengths, answer=True, view_start=lengths)


def _prepare_infill(model, tokenizer, texts, span: int, mask_id: int, fill: int) -> _Canvas:
    encoded = [encode_with_holes(tokenizer, t, mask_id, span) for t in texts]
    ids, attention = _right_padded([e[0] for e in encoded], fill)
    _check_context(model, ids.shape[1], "the text with its holes")
    editable = torch.zeros_like(ids, dtype=torch.bool)
    for b, (_, holes) in enumerate(encoded):
        for start, end in holes:
            editable[b, start:end] = True
    bos = tokenizer.bos_token_id
    return _Canvas(
        ids,
        attention,
        editable,
        prompt_lengths=[h[0][0] for _, h in encoded],
        answer=False,
        view_start=[int(bos is not None and e[0][0] == bos) for e in encoded],
        holes=[h for _, h in encoded],
    )


def _block_ids(editable: torch.Tensor, block_size: int | None) -> torch.Tensor:
    """[B, L] block index of each editable position (its rank among the row's editable positions // size)."""
    rank = editable.long().cumsum(1) - 1
    size = block_size if block_size else editable.shape[1]  # 0 / None: one block, pure diffusion
    return torch.where(editable, rank // size, torch.full_like(rank, -1))


def _ended_by_eos(canvas: torch.Tensor, editable: torch.Tensor, mask_id: int, eos_id: int) -> torch.Tensor:
    """[B] rows with an end token in the answer and no mask anywhere before the first one."""
    is_eos = (canvas == eos_id) & editable
    before_first_eos = editable & (is_eos.long().cumsum(1) == 0)
    return is_eos.any(1) & ~((canvas == mask_id) & before_first_eos).any(1)


def _forbidden(
    vocab: int, cfg: GenerationConfig, mask_id: int, extra: list[int | None], device
) -> torch.Tensor:
    forbidden = torch.zeros(vocab, dtype=torch.bool, device=device)
    ids = [i for i in (*cfg.suppress_tokens, mask_id, *extra) if i is not None and 0 <= i < vocab]
    forbidden[ids] = True
    return forbidden


def _chunks(n: int, vocab: int) -> Iterator[torch.Tensor]:
    size = max(1, MAX_PROPOSAL_ELEMENTS // max(vocab, 1))
    for start in range(0, n, size):
        yield torch.arange(start, min(n, start + size))


Generators = torch.Generator | None | Sequence[torch.Generator]


def _pieces(
    idx: torch.Tensor, rows: torch.Tensor, vocab: int, generator: Generators
) -> Iterator[tuple[torch.Tensor, list[tuple[torch.Generator | None, slice]]]]:
    """Candidates ``idx`` a chunk at a time (at most ``MAX_PROPOSAL_ELEMENTS`` float64 logits), each chunk
    with its pieces: (generator, slice of the chunk) for the random draws. With one generator per row
    (a sequence indexed by row), a row's candidates are cut where they are cut when the row runs alone,
    and each piece draws from its row's generator: a row's draws never depend on its neighbours."""
    if not isinstance(generator, Sequence):
        for chunk in _chunks(len(idx), vocab):
            yield idx[chunk.to(idx.device)], [(generator, slice(None))]
        return
    size = max(1, MAX_PROPOSAL_ELEMENTS // max(vocab, 1))
    owners, counts = torch.unique_consecutive(rows[idx], return_counts=True)  # rows ascend in idx
    pieces, at = [], 0
    for owner, count in zip(owners.tolist(), counts.tolist(), strict=True):
        for start in range(0, count, size):
            pieces.append((owner, at + start, at + min(count, start + size)))
        at += count
    chunk: list[tuple[int, int, int]] = []
    for piece in [*pieces, None]:  # pack whole pieces into chunks of at most ``size``
        if chunk and (piece is None or piece[2] - chunk[0][1] > size):
            first = chunk[0][1]
            yield (
                idx[first : chunk[-1][2]],
                [(generator[o], slice(a - first, e - first)) for o, a, e in chunk],
            )
            chunk = []
        if piece is not None:
            chunk.append(piece)


def _score(score_fn, logits, tokens, pieces) -> torch.Tensor:
    if not getattr(score_fn, "uses_generator", False):
        return score_fn(logits, tokens, None)
    if len(pieces) == 1:
        return score_fn(logits, tokens, pieces[0][0])
    return torch.cat(
        [score_fn(logits[sl], None if tokens is None else tokens[sl], gen) for gen, sl in pieces]
    )


def _choose(
    prepared: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    n: int,
    vocab: int,
    rows: torch.Tensor,
    cols: torch.Tensor,
    shape: tuple[int, int],
    pick: Callable[[torch.Tensor], torch.Tensor],
    score_fn,
    cfg: GenerationConfig,
    generator: Generators,
    prepared_scores: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    exact_bar: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 5: commit mask [B, L] and proposals [N] (-1 where nothing was drawn) for ``n`` candidates
    at (rows, cols). ``prepared(idx)`` gives the (unfiltered, filtered) float64 logits of candidates
    ``idx``, called a chunk at a time (``prepared_scores``, if given, the same where only the unfiltered ones
    are used: the greedy pass over every candidate). ``generator``: one for all rows, or one per row (a sequence
    indexed by row: random draws are then made row by row, see ``_pieces``). Exactly the outcome of
    drawing every candidate, with draws made only where needed:
    - a score that ignores the proposal (margin, entropy, random) picks first, then draws the picks;
    - a confidence score (low_confidence, threshold) cannot exceed that of the greedy token, so:
      draw where the rule would commit if every draw were greedy; then also draw any candidate whose
      greedy score reaches the weakest pick so far (drawing more can only raise that bar); pick.
      ``exact_bar`` False (a rule where a higher draw can admit a lower candidate: ``factor``): draw all."""

    device = rows.device

    def grid(values: torch.Tensor) -> torch.Tensor:  # [N] candidate scores -> [B, L], -inf elsewhere
        g = torch.full(shape, float("-inf"), dtype=torch.float64, device=device)
        g[rows, cols] = values
        return g

    def draw_at(where: torch.Tensor, scored: torch.Tensor | None = None) -> None:
        for idx, pieces in _pieces(where.nonzero().flatten(), rows, vocab, generator):
            logits, scaled = prepared(idx)
            drawn = torch.cat([draw(scaled[sl], cfg.temperature, gen) for gen, sl in pieces])
            tokens[idx] = drawn
            if scored is not None:
                scored[idx] = _score(score_fn, logits, drawn, pieces)

    # [N] the greedy proposals and their scores (for a confidence: the best score any draw can get)
    greedy = torch.empty(n, dtype=torch.long, device=device)
    upper = torch.empty(n, dtype=torch.float64, device=device)
    everyone = torch.arange(n, device=device)
    per_row = generator if getattr(score_fn, "uses_generator", False) else None  # else no draw here
    for idx, pieces in _pieces(everyone, rows, vocab, per_row):
        logits, _ = (prepared_scores or prepared)(idx)
        greedy[idx] = logits.argmax(-1)
        upper[idx] = _score(score_fn, logits, greedy[idx] if score_fn.uses_proposal else None, pieces)
    if cfg.temperature == 0:
        return pick(grid(upper)), greedy
    tokens = torch.full_like(greedy, -1)
    if not score_fn.uses_proposal:
        commit = pick(grid(upper))
        draw_at(commit[rows, cols])
        return commit, tokens
    score = torch.full_like(upper, float("-inf"))
    drawn = torch.zeros_like(greedy, dtype=torch.bool)
    todo = pick(grid(upper))[rows, cols] if exact_bar else torch.ones_like(drawn)
    while todo.any():  # at most twice: what stays undrawn after a round is below a bar that only rises
        draw_at(todo, score)
        drawn |= todo
        scores = grid(score)
        bar = weakest_pick(scores, pick(scores))
        todo = ~drawn & (upper >= bar[rows])
    return pick(grid(score)), tokens


def _proposal_logits(
    head: torch.Tensor,
    uncond: torch.Tensor | None,
    seen: torch.Tensor | None,
    forbidden: torch.Tensor,
    cfg: GenerationConfig,
    idx: torch.Tensor,
    *,
    for_draw: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-3 for candidates ``idx``: float64 logits (guidance, penalty, forbidden ids) unfiltered
    at T = 1 for the scores, and at T with top-k / top-p for the draw (``proposals.prepare``);
    ``for_draw=False`` (scores and greedy tokens only) skips the draw's copy: both are then the first."""
    logits = head[idx].double()  # a copy of its own: the penalty may write into it
    if uncond is not None:
        u = uncond[idx].double()
        logits = u + (cfg.guidance_scale + 1.0) * (logits - u)
    if seen is not None:
        logits = apply_repetition_penalty_ids(logits, seen[idx], cfg.repetition_penalty, inplace=True)
    if not for_draw:
        return prepare(logits, forbidden, 0.0)
    return prepare(logits, forbidden, cfg.temperature, cfg.top_k, cfg.top_p)


def _steps_per_block(steps: int, n_blocks: int, threshold: bool) -> torch.Tensor:
    """[n_blocks] steps of each block: ``steps`` split evenly, the remainder to the first blocks, so
    the total is ``steps``; at least one each (warned: the total is then ``n_blocks``)."""
    base, extra = divmod(steps, n_blocks)
    if base == 0 and not threshold:
        warnings.warn(
            f"{steps} steps for {n_blocks} blocks: each block gets one step ({n_blocks} in all)",
            stacklevel=4,
        )
    per_block = torch.full((n_blocks,), base, dtype=torch.long) + (torch.arange(n_blocks) < extra).long()
    return per_block.clamp(min=1)


def _plan(block_len: torch.Tensor, block_steps: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """[B, n_blocks, max steps] tokens to commit at each step of each block (zeros past a block's end)."""
    width = int(block_steps.max())
    plan = torch.zeros(*block_len.shape, width, dtype=torch.long)
    for s in block_steps.unique().tolist():
        counts = reveal_counts(block_len, s, schedule)  # [B, n_blocks, s]
        at = (block_steps == s)[None, :, None].expand(block_len.shape[0], -1, s)
        plan[..., :s] = torch.where(at, counts, plan[..., :s])
    return plan


def _device(model: torch.nn.Module) -> torch.device:
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


ROW_SEED_STRIDE = 0x9E3779B97F4A7C15  # odd, 2^64 / golden ratio: seeds of neighbouring rows never collide


def row_seed(seed: int, row: int) -> int:
    """The seed of row ``row`` of a batch decoded with ``seed``: row 0 uses ``seed`` itself, so one prompt
    gives the same text alone or first in a batch; other rows get their own streams (a batch of one
    prompt repeated gives different samples)."""
    return seed if row == 0 else (seed + row * ROW_SEED_STRIDE) % (1 << 64)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def forward_candidates(
    parts: MaskedLMParts,
    ids: torch.Tensor,
    attention: torch.Tensor,
    at: tuple[torch.Tensor, torch.Tensor],
    uncond_at: tuple[torch.Tensor, torch.Tensor] | None = None,
    encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Step 3, the network call: encode ``ids`` [R, W] (right-padded; ``attention`` 1 = real) and run the
    output head only at the candidate positions ``at`` = (rows, cols), and at ``uncond_at`` (the
    unconditional copies of guided rows, appended to ``ids``). Returns logits [N, V] and [N', V].
    ``encode``: the key/value cache's encoder (``EncoderKVCache.encode`` bound to the rows) instead of
    the plain one."""
    if encode is not None:
        hidden = encode(ids, attention)
    else:  # no padding in these rows (always so for one prompt): no mask to build, a faster attention
        hidden = parts.encode(ids, None if bool(attention.all()) else attention)
    head = parts.head(hidden[at])
    return head, (parts.head(hidden[uncond_at]) if uncond_at is not None else None)


def _settings(cfg: GenerationConfig, answer: bool) -> tuple:
    """What steps 4-5 depend on: rows with equal settings are proposed and committed in one call."""
    return (
        cfg.temperature,
        cfg.top_k,
        cfg.top_p,
        cfg.repetition_penalty,
        cfg.guidance_scale,
        cfg.remasking,
        cfg.threshold,
        cfg.factor,
        cfg.entropy_budget,
        cfg.confidence_temperature,
        tuple(cfg.suppress_tokens),
        answer,
    )


def _at(t: torch.Tensor, sel: torch.Tensor | None) -> torch.Tensor:
    return t if sel is None else t[sel]


def _pad_to(t: torch.Tensor, shape: tuple[int, ...], fill) -> torch.Tensor:
    """``t`` [B, ...] padded with ``fill`` to [B, *shape]."""
    if tuple(t.shape[1:]) == shape:
        return t
    out = torch.full((t.shape[0], *shape), fill, dtype=t.dtype, device=t.device)
    out[(slice(None), *(slice(0, s) for s in t.shape[1:]))] = t
    return out


@dataclass
class StepResult:
    committed: torch.Tensor  # [B, L] bool: positions written at this step
    took_step: torch.Tensor  # [B] bool: rows that were active (each took one step)


class DecodeState:
    """Rows decoded together, one step at a time: the one decoding loop (``generate``, ``stream``,
    ``infill`` and the server's ``DecodeBatch`` all drive it). Rows join and leave between steps.

        state = DecodeState(model, tokenizer, schedule, mask_id)
        state.add(start, configs, generators)       # rows of a _Canvas, each with its settings and generator
        while (result := state.step()) is not None: # steps 1-6 of the module docstring, for every row
            ...                                     # state.canvas [B, L], state.done [B], result.committed
        state.keep(indices)                         # the other rows leave

    Everything per row is a tensor over rows (canvas, editable positions, blocks, reveal plan, current
    block, place in it, steps taken, passes, finished) or, for what steps 4-5 need, its settings: rows
    with equal settings are proposed and committed in one vectorised call. Random draws (Gumbel noise,
    stochastic counts, the ``random`` scorer) come from each row's own generator, so a row makes the
    same draws alone or in any batch, joining at any step (and the same choices wherever its scores are
    not within rounding noise of a tie: docs/sampling.md, "What is deterministic").
    """

    _FILL = {"attention": 0, "editable": False, "given": False, "block": -1, "commit_step": -1}
    _FILL |= {"block_steps": 1, "plan": 0}  # [B, n_blocks] and [B, n_blocks, steps]: padded per row
    _ROWS = (
        "canvas attention editable given block commit_step block_steps plan n_blocks cap cur step_in_block"
        " steps passes finished stopped answer stop_eos threshold stochastic guided stop_start stop_end"
        " stop_seen cache_mode cache_refresh remask_bar remask_left"
    ).split()

    def __init__(self, model: torch.nn.Module, tokenizer, schedule: Schedule, mask_id: int):
        self.parts = MaskedLMParts(model)
        self.tokenizer, self.schedule, self.mask_id = tokenizer, schedule, mask_id
        self.device = _device(model)
        self.eos_id = tokenizer.eos_token_id
        self.end_fill = self.eos_id if self.eos_id is not None else tokenizer.pad_token_id
        fill = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.fill = mask_id if fill is None else fill  # padding is never attended to; any id will do
        self.forward_passes = 0  # network calls (a batched call counts once)
        self.remasked = 0  # tokens re-masked (remask_threshold), all rows
        self.configs: list[GenerationConfig] = []
        self.generators: list[torch.Generator] = []
        self.stops: list[tuple[str, ...]] = []
        self.keys: list[tuple] = []
        self._forbidden: dict[tuple, torch.Tensor] = {}
        self.kv: EncoderKVCache | None = None  # built when the first row with a cache joins
        # block diffusion (the mode saved with the checkpoint): blocks of the model's size, decoded in
        # order, each step re-encoding the prompt and finished blocks with the block-causal mask
        self.diffusion_block = block_size_of(model)
        if self.diffusion_block is not None:
            check_backbone(self.parts)
        for name in self._ROWS:
            setattr(self, name, None)

    def __len__(self) -> int:
        return len(self.configs)

    # -- rows in and out -----------------------------------------------------------------------------

    def add(self, start: _Canvas, configs: list[GenerationConfig], generators: list[torch.Generator]) -> None:
        """The rows of ``start`` join (as the last rows), each with its settings and random generator."""
        n = start.ids.shape[0]
        ids, attention, editable = start.ids, start.attention, start.editable
        if self.diffusion_block is not None:
            configs = self._block_mode(configs, start.answer)
        block = torch.cat([_block_ids(editable[b : b + 1], c.block_size) for b, c in enumerate(configs)])
        n_blocks = torch.where(editable.any(1), block.max(1).values + 1, 1)
        width_nb = int(n_blocks.max())
        block_len = torch.zeros(n, width_nb + 1, dtype=torch.long)
        block_len.scatter_add_(1, torch.where(editable, block, width_nb), editable.long())
        # rows with the same steps and blocks share one split and one plan (all rows, for ``generate``)
        split: dict[tuple[int, int, bool], list[int]] = {}
        for b, c in enumerate(configs):
            split.setdefault((c.steps, int(n_blocks[b]), c.remasking in ADAPTIVE), []).append(b)
        block_steps = torch.ones(n, width_nb, dtype=torch.long)
        plans = [None] * n
        for (steps, nb, threshold), members in split.items():
            per_block = _steps_per_block(steps, nb, threshold)
            block_steps[members, :nb] = per_block
            plan = _plan(block_len[members, :nb], per_block, self.schedule)
            for j, b in enumerate(members):
                plans[b] = plan[j]
        plan = torch.zeros(n, width_nb, max(int(p.shape[1]) for p in plans), dtype=torch.long)
        for b, p in enumerate(plans):  # [n, n_blocks, steps]: zeros past a row's blocks and steps
            plan[b, : p.shape[0], : p.shape[1]] = p
        pos = torch.arange(ids.shape[1])
        flag = lambda f: torch.tensor([bool(f(c)) for c in configs])  # noqa: E731
        answer = torch.full((n,), start.answer)
        stop_start = torch.where(editable, pos, ids.shape[1]).min(1).values
        new = {
            "canvas": ids,
            "attention": attention,
            "editable": editable,
            "given": attention.bool() & ~editable,  # the condition; masked for the unconditional pass
            "block": block,
            "commit_step": torch.full_like(ids, -1),
            "block_steps": block_steps,
            "plan": plan,
            "n_blocks": n_blocks,
            # a row commits at least one token per pass and waits at most its block's steps per block,
            # so it is done within this many steps; past it a broken commit rule would loop forever
            "cap": editable.sum(1)
            + torch.where(torch.arange(width_nb) < n_blocks[:, None], block_steps, 0).sum(1)
            + torch.tensor([c.remask_budget if c.remask_threshold > 0 else 0 for c in configs]),
            "cur": torch.zeros(n, dtype=torch.long),
            "step_in_block": torch.zeros(n, dtype=torch.long),
            "steps": torch.zeros(n, dtype=torch.long),
            "passes": torch.zeros(n, dtype=torch.long),
            "finished": torch.zeros(n, dtype=torch.bool),
            "stopped": torch.zeros(n, dtype=torch.bool),
            "answer": answer,
            "stop_eos": answer & flag(lambda c: c.stop_at_eos and self.eos_id is not None),
            "threshold": flag(lambda c: c.remasking in ADAPTIVE),  # how many: the rule decides
            "stochastic": flag(lambda c: c.stochastic_counts and c.remasking not in ADAPTIVE),
            "guided": flag(lambda c: c.guidance_scale > 0),
            "stop_start": stop_start,
            "stop_end": torch.where(editable, pos, -1).max(1).values + 1,
            "stop_seen": stop_start.clone(),
            "cache_mode": torch.tensor([MODE_IDS[c.cache] for c in configs], dtype=torch.long),
            "cache_refresh": torch.tensor([c.cache_refresh for c in configs], dtype=torch.long),
            "remask_bar": torch.tensor([c.remask_threshold for c in configs], dtype=torch.float64),
            "remask_left": torch.tensor(
                [c.remask_budget if c.remask_threshold > 0 else 0 for c in configs], dtype=torch.long
            ),
        }
        if self.kv is None and any(c.cache != "none" for c in configs):
            # raises for a backbone it cannot run; a block model's cache is exact (``BlockKVCache``)
            self.kv = (EncoderKVCache if self.diffusion_block is None else BlockKVCache)(self.parts)
            self.kv.add(len(self))  # the rows already here, uncached
        if self.kv is not None:
            self.kv.add(n)
        for name in self._ROWS:
            t = new[name].to(self.device)
            old = getattr(self, name)
            if old is not None:
                shape = tuple(max(a, b) for a, b in zip(old.shape[1:], t.shape[1:], strict=True))
                fill = self.fill if name == "canvas" else self._FILL.get(name, 0)
                t = torch.cat([_pad_to(old, shape, fill), _pad_to(t, shape, fill)])
            setattr(self, name, t)
        self.configs += configs
        self.generators += generators
        self.stops += [tuple(c.stop) if start.answer else () for c in configs]
        self.keys += [_settings(c, start.answer) for c in configs]
        self.cur = self._current_block()

    def keep(self, rows: list[int]) -> None:
        """Only ``rows`` (indices, in the order given) stay; the others leave."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        for name in self._ROWS:
            setattr(self, name, getattr(self, name)[index])
        if self.kv is not None:
            self.kv.keep(index)
        width = int(self.attention.sum(1).max()) if rows else 0
        for name in ("canvas", "attention", "editable", "given", "block", "commit_step"):
            setattr(self, name, getattr(self, name)[:, :width])
        for name in ("configs", "generators", "stops", "keys"):
            setattr(self, name, [getattr(self, name)[i] for i in rows])

    def _block_mode(self, configs: list[GenerationConfig], answer: bool) -> list[GenerationConfig]:
        """A block model decodes its own blocks (the generation ``block_size`` is replaced by the
        model's), left to right; ``cache`` prefix or dual means its exact cache (``BlockKVCache``).
        Infilling would show it text after a block, never seen in training: refused."""
        if not answer:
            raise ValueError("a block-diffusion model writes left to right: infilling needs an MDLM")
        size = self.diffusion_block
        # not a warning: every preset names a block size (32), so each call of a block model would warn
        return [dataclasses.replace(c, block_size=size) for c in configs]

    @property
    def done(self) -> torch.Tensor:
        """[B] rows that will take no more steps (finished, or nothing left to write)."""
        return self.finished | ~((self.canvas == self.mask_id) & self.editable).any(1)

    def _current_block(self) -> torch.Tensor:  # [B] lowest block that still has a mask (n_blocks: none)
        masked = (self.canvas == self.mask_id) & self.editable
        return torch.where(masked, self.block, self.n_blocks[:, None]).min(1).values

    # -- one step ------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> StepResult | None:
        """Steps 1-6 for every row that is not done; ``None`` when no row is left to decode."""
        if not len(self):
            return None
        mask_id = self.mask_id
        masked = (self.canvas == mask_id) & self.editable
        active = ~self.finished & masked.any(1)
        stuck = active & (self.steps >= self.cap)
        any_active, any_stuck = torch.stack([active.any(), stuck.any()]).tolist()
        if not any_active:
            return None
        if any_stuck:
            b = int(stuck.nonzero()[0])
            raise RuntimeError(
                f"the sampler made no progress: {int(masked[b].sum())} positions still masked after "
                f"{int(self.steps[b])} steps (at most {int(self.cap[b])} for {int(self.editable[b].sum())} "
                f"editable positions in {int(self.n_blocks[b])} block(s)); each pass must commit at least "
                "one token"
            )
        rows = torch.arange(len(self), device=self.device)
        # 1. candidates: still-masked positions of each active row's current block
        candidates = masked & (self.block == self.cur[:, None]) & active[:, None]
        remaining = candidates.sum(1)
        # 2. how many each row commits; the block's last scheduled step empties it
        cur = torch.minimum(self.cur, self.n_blocks - 1)
        cur_steps = self.block_steps[rows, cur]  # [B] steps of each row's current block
        k = self.plan[rows, cur, self.step_in_block.clamp(max=self.plan.shape[2] - 1)]
        k = torch.where(self.threshold, remaining, k)
        stochastic = self.stochastic & active
        if bool(stochastic.any()):  # a small call per row: its own generator
            for b in stochastic.nonzero().flatten().tolist():
                one = slice(b, b + 1)
                k[one] = stochastic_counts(
                    remaining[one],
                    self.step_in_block[one],
                    cur_steps[one].double(),
                    self.schedule,
                    self.generators[b],
                )
        k = torch.where(self.step_in_block >= cur_steps - 1, remaining, torch.minimum(k, remaining))
        need = active & (k > 0)
        sub = need.nonzero().flatten()
        commit = torch.zeros_like(candidates)
        if len(sub):
            commit = self._forward_and_commit(sub, candidates, k)
            self.passes += need.long()
        # 6. stop: end token with nothing masked before it, or a stop string in the filled answer
        ended = torch.zeros_like(self.finished)
        if self.eos_id is not None:
            ended |= self.stop_eos & _ended_by_eos(self.canvas, self.editable, mask_id, self.eos_id)
        if any(self.stops):
            ended |= self._stop_strings(active)
        newly = ended & ~self.finished
        if self.end_fill is not None:
            tail = newly[:, None] & self.editable & (self.canvas == mask_id)
            self.canvas = torch.where(tail, self.end_fill, self.canvas)
            self.commit_step = torch.where(tail, self.steps[:, None], self.commit_step)
            commit |= tail
        self.finished |= newly
        self.stopped |= newly
        # advance: a row whose block emptied starts the next one at its first step
        nxt = self._current_block()
        self.step_in_block = torch.where(nxt != self.cur, 0, self.step_in_block + active.long())
        self.cur = nxt
        self.steps += active.long()
        return StepResult(committed=commit, took_step=active)

    def _forward_and_commit(
        self, sub: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor
    ) -> torch.Tensor:
        """Steps 3-5 for the rows ``sub`` that commit something; returns the commit mask [B, L]."""
        mask_id = self.mask_id
        # 3. one forward pass over the rows that commit something, cut to their longest row
        w = int(self.attention[sub].sum(1).max())
        if self.diffusion_block is not None:  # nothing sees a later block: cut after the current ones
            pos = torch.arange(self.canvas.shape[1], device=self.device)
            in_cur = self.editable[sub] & (self.block[sub] == self.cur[sub, None])
            w = min(w, int(torch.where(in_cur, pos, -1).max()) + 1)
        ids, att, cand = self.canvas[sub, :w], self.attention[sub, :w], candidates[sub, :w]
        r, c = cand.nonzero(as_tuple=True)
        # re-masking: the tokens committed at earlier passes of the current block, re-scored this pass
        revisable = (
            (self.remask_left[sub] > 0)[:, None]
            & self.editable[sub, :w]
            & (ids != mask_id)
            & (self.block[sub, :w] == self.cur[sub, None])
            & (self.commit_step[sub, :w] >= 0)
        )
        rr, rc = revisable.nonzero(as_tuple=True)
        guided = self.guided[sub]
        uncond_at, uidx = None, None
        if bool(guided.any()):  # the unconditional copies: the condition masked, padding stays padding
            g = guided.nonzero().flatten()
            uncond = torch.where(self.given[sub[g], :w], mask_id, ids[g])
            ids, att = torch.cat([ids, uncond]), torch.cat([att, att[g]])
            slot = torch.full_like(sub, -1)
            slot[g] = torch.arange(len(g), device=self.device) + len(sub)
            in_g = guided[r]
            uncond_at = (slot[r[in_g]], c[in_g])
            uidx = in_g.long().cumsum(0) - 1  # candidate -> its row in the unconditional head
        encode = None
        if self.kv is not None and bool(self.cache_mode[sub].any()):  # approximate: models/kv_cache.py
            encode = functools.partial(
                self.kv.encode,
                sub,
                current=self.block[sub, :w] == self.cur[sub, None],
                block=self.cur[sub],
                mode=self.cache_mode[sub],
                # every k-th step inside a block: the whole canvas again (0: only at a new block)
                refresh=(self.cache_refresh[sub] > 0)
                & (self.step_in_block[sub] % self.cache_refresh[sub].clamp(min=1) == 0),
            )
        if self.diffusion_block is not None:
            blocks = self.block[sub, :w]
            if self.kv is not None and bool(self.cache_mode[sub].all()):  # exact: prompt and finished blocks
                encode = functools.partial(self.kv.encode, sub, blocks=blocks, current=self.cur[sub])
            else:  # re-encode the prompt and finished blocks (rows without a cache, or mixed with them)
                if uncond_at is not None:
                    blocks = torch.cat([blocks, blocks[guided]])
                encode = functools.partial(self._encode_blocks, blocks)
                if self.kv is not None:
                    self.kv.upto[sub] = 0  # their caches missed this pass: rebuilt at their next one
        n_cand = len(r)
        at = (torch.cat([r, rr]), torch.cat([c, rc])) if len(rr) else (r, c)
        head, uncond_head = forward_candidates(self.parts, ids, att, at, uncond_at, encode)
        head, revised = head[:n_cand], head[n_cand:]
        self.forward_passes += 1
        vocab = head.shape[-1]
        seen_all = None
        # 4-5. proposals and commits, one call per group of rows with equal settings
        groups: dict[tuple, list[int]] = {}
        for j, b in enumerate(sub.tolist()):
            groups.setdefault(self.keys[b], []).append(j)
        commit = torch.zeros_like(candidates)
        proposed = torch.full_like(self.canvas, mask_id)
        for key, members in groups.items():
            cfg = self.configs[int(sub[members[0]])]
            if len(groups) == 1:
                sel, in_rows = None, sub
            else:
                local = torch.zeros(len(sub), dtype=torch.bool, device=self.device)
                local[members] = True
                sel, in_rows = local[r].nonzero().flatten(), sub[local]
            u = None
            if uncond_head is not None and cfg.guidance_scale > 0:
                u = uncond_head[_at(uidx, sel)]
            seen = None
            if cfg.repetition_penalty != 1.0:
                # ids in each row's canvas; padding and holes point at the mask, forbidden anyway
                if seen_all is None:
                    seen_all = torch.where(att[: len(sub)].bool(), self.canvas[sub, :w], mask_id)
                seen = _at(seen_all[r], sel)
            if (key, vocab) not in self._forbidden:
                tok = self.tokenizer
                # Infilling writes text inside text: end, begin and padding tokens have no place in a hole.
                extra = [] if key[-1] else [tok.eos_token_id, tok.bos_token_id, tok.pad_token_id]
                self._forbidden[key, vocab] = _forbidden(vocab, cfg, mask_id, extra, self.device)
            prepared = functools.partial(
                _proposal_logits, _at(head, sel), u, seen, self._forbidden[key, vocab], cfg
            )
            prepared_scores = functools.partial(prepared, for_draw=False)
            row_mask = torch.zeros(len(self), dtype=torch.bool, device=self.device)
            row_mask[in_rows] = True
            chosen = candidates & row_mask[:, None]
            rule = cfg.remasking
            if rule in ("threshold", "margin_threshold"):
                pick = functools.partial(above_threshold, candidates=chosen, tau=cfg.threshold)
            elif rule == "factor":
                pick = functools.partial(factor_rule, candidates=chosen, factor=cfg.factor)
            elif rule == "entropy_budget":
                pick = functools.partial(entropy_budget_rule, candidates=chosen, budget=cfg.entropy_budget)
            else:
                pick = functools.partial(top_k_per_row, candidates=chosen, k=k)
            score_fn = calibrated(SCORERS[ADAPTIVE_SCORE.get(rule, rule)], cfg.confidence_temperature)
            # the factor rule can take a lower pick once a higher one is drawn: no early bar, draw all
            exact_bar = rule != "factor"
            rows, cols = sub[_at(r, sel)], _at(c, sel)
            got, tokens = _choose(
                prepared,
                len(rows),
                vocab,
                rows,
                cols,
                tuple(self.canvas.shape),
                pick,
                score_fn,
                cfg,
                self.generators,
                prepared_scores,
                exact_bar,
            )
            proposed[rows, cols] = tokens
            commit |= got
        self.canvas = torch.where(commit, proposed, self.canvas)
        self.commit_step = torch.where(commit, self.steps[:, None], self.commit_step)
        if len(rr):
            self._remask(sub[rr], rc, revised)
        return commit

    def _remask(self, rows: torch.Tensor, cols: torch.Tensor, logits: torch.Tensor) -> None:
        """Re-mask committed tokens whose probability under this pass fell below their row's bar, the
        least likely first, at most the row's remaining budget (ReMDM-style revision inside the block)."""
        tokens = self.canvas[rows, cols]
        temps = torch.tensor([self.configs[int(b)].confidence_temperature for b in rows.tolist()])
        scaled = logits.double() / temps.to(logits.device)[:, None]
        p = (scaled.gather(1, tokens[:, None]).squeeze(1) - scaled.logsumexp(-1)).exp()
        low = p < self.remask_bar[rows]
        if not bool(low.any()):
            return
        score = torch.full(tuple(self.canvas.shape), float("inf"), dtype=torch.float64, device=self.device)
        score[rows[low], cols[low]] = p[low]
        # the k least likely of each row: rank by minus the probability
        worst = top_k_per_row(-score, torch.isfinite(score), self.remask_left)
        self.canvas = torch.where(worst, self.mask_id, self.canvas)
        self.commit_step = torch.where(worst, -1, self.commit_step)
        self.remask_left -= worst.sum(1)
        self.remasked += int(worst.sum())

    def _encode_blocks(
        self, blocks: torch.Tensor, ids: torch.Tensor, attention: torch.Tensor
    ) -> torch.Tensor:
        """Block mode's network call: the canvas with key block <= query block (``diffusion.block``)."""
        mask, positions = causal_inputs(self.parts, blocks, attention)
        return self.parts.encode(ids, mask, positions)

    def _stop_strings(self, active: torch.Tensor) -> torch.Tensor:
        """[B] rows whose *filled prefix* (answer up to the first mask) contains one of their stop strings.
        Only rows with stop strings whose prefix grew are decoded."""
        width = self.canvas.shape[1]
        pos = torch.arange(width, device=self.device)
        holes = (self.canvas == self.mask_id) & self.editable
        prefix_end = torch.minimum(torch.where(holes, pos, width).min(1).values, self.stop_end)
        has = torch.tensor([bool(s) for s in self.stops], device=self.device)
        hit = torch.zeros_like(active)
        check = (active & has & (prefix_end > self.stop_seen)).nonzero().flatten().tolist()
        if check:
            start, end = self.stop_start.tolist(), prefix_end.tolist()
            canvas = self.canvas[check].cpu()
            for j, b in enumerate(check):
                text = self.tokenizer.decode(canvas[j, start[b] : end[b]].tolist(), skip_special_tokens=True)
                hit[b] = any(s in text for s in self.stops[b])
        self.stop_seen = torch.maximum(self.stop_seen, prefix_end)
        return hit


@torch.no_grad()
def _run(
    model: torch.nn.Module,
    tokenizer,
    start: _Canvas,
    cfg: GenerationConfig,
    schedule: Schedule,
    mask_id: int,
) -> Iterator[StepEvent]:
    state = DecodeState(model, tokenizer, schedule, mask_id)
    batch = start.ids.shape[0]
    seeds = [None if cfg.seed is None else row_seed(cfg.seed, b) for b in range(batch)]
    state.add(start, [cfg] * batch, [make_generator(s, state.device) for s in seeds])
    step = 0
    while (result := state.step()) is not None:
        step += 1
        if bool(result.committed.any()):
            yield StepEvent(
                step=step,
                forward_passes=state.forward_passes,
                canvas=state.canvas.cpu().clone(),
                committed=result.committed.cpu(),
                finished=state.done.cpu(),
                editable=start.editable,
                view_start=start.view_start,
                mask_id=mask_id,
            )
    output = _finish(
        tokenizer,
        start,
        cfg,
        state.canvas.cpu(),
        state.commit_step.cpu(),
        state.forward_passes,
        state.passes,
        step,
        mask_id,
    )
    yield StepEvent(
        step=step,
        forward_passes=state.forward_passes,
        canvas=output.canvas,
        committed=torch.zeros_like(output.canvas, dtype=torch.bool),
        finished=torch.ones(batch, dtype=torch.bool),
        editable=start.editable,
        view_start=start.view_start,
        mask_id=mask_id,
        output=output,
    )


def _cut_at_stops(text: str, stops: tuple[str, ...]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def _finish(
    tokenizer, start, cfg, canvas, commit_step, passes, row_passes, steps, mask_id
) -> GenerationOutput:
    eos_id = tokenizer.eos_token_id
    texts, token_ids, fills = [], [], []
    for b in range(canvas.shape[0]):
        if start.answer:
            n0 = start.prompt_lengths[b]
            ids = canvas[b, n0 : n0 + int(start.editable[b].sum())].tolist()
            if cfg.stop_at_eos and eos_id is not None and eos_id in ids:
                ids = ids[: ids.index(eos_id)]
            ids = [i for i in ids if i != mask_id]
            texts.append(_cut_at_stops(tokenizer.decode(ids, skip_special_tokens=True), tuple(cfg.stop)))
        else:
            ids = canvas[b, start.attention[b].bool()].tolist()
            if ids and ids[0] == tokenizer.bos_token_id:
                ids = ids[1:]
            texts.append(tokenizer.decode(ids, skip_special_tokens=True))
            fills.append([tokenizer.decode(canvas[b, i:j].tolist()) for i, j in start.holes[b]])
        token_ids.append(ids)
    return GenerationOutput(
        texts=texts,
        token_ids=token_ids,
        forward_passes=passes,
        canvas=canvas,
        commit_step=commit_step,
        prompt_lengths=list(start.prompt_lengths),
        row_passes=row_passes.cpu().tolist(),
        steps=steps,
        editable=start.editable,
        fills=fills,
    )


def stream(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str] | list[list[int]],
    config: GenerationConfig | None = None,
    *,
    schedule: Schedule | None = None,
    mask_id: int | None = None,
    infill: bool = False,
    span: int = 2,
) -> Iterator[StepEvent]:
    """Yield a ``StepEvent`` after every step that changed the canvas; the last one has ``.output``.
    ``infill=True``: ``prompts`` are texts with holes (``<mask>``, ``<mask:N>``, ``[...]``, ``[...N]``)."""
    cfg = config or GenerationConfig()
    cfg.validate()
    if not prompts:
        raise ValueError("no prompts given")
    mask_id = tokenizer.mask_token_id if mask_id is None else mask_id
    if mask_id is None:
        raise ValueError("the tokenizer has no mask token: pass mask_id (or load with load_checkpoint)")
    fill = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    fill = mask_id if fill is None else fill  # padding is never attended to; any id will do
    if infill:
        if any(not isinstance(p, str) for p in prompts):
            raise ValueError("infill takes texts with holes, not token ids")
        start = _prepare_infill(model, tokenizer, prompts, span, mask_id, fill)
    else:
        start = _prepare_generate(model, tokenizer, prompts, cfg.max_new_tokens, mask_id, fill)
    return _run(model, tokenizer, start, cfg, schedule or LinearSchedule(), mask_id)


def _collect(events: Iterator[StepEvent], on_step: Callable[[StepEvent], None] | None) -> GenerationOutput:
    for event in events:
        if on_step is not None:
            on_step(event)
        if event.output is not None:
            return event.output
    raise RuntimeError("the sampler ended without an output")  # unreachable: _run always ends with one


def generate(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str] | list[list[int]],
    config: GenerationConfig | None = None,
    *,
    schedule: Schedule | None = None,
    mask_id: int | None = None,
    on_step: Callable[[StepEvent], None] | None = None,
) -> GenerationOutput:
    """Continue each prompt with ``config.max_new_tokens`` tokens; ``on_step`` sees every ``StepEvent``."""
    events = stream(model, tokenizer, prompts, config, schedule=schedule, mask_id=mask_id)
    return _collect(events, on_step)


def infill(
    model: torch.nn.Module,
    tokenizer,
    texts: list[str],
    config: GenerationConfig | None = None,
    *,
    span: int = 2,
    schedule: Schedule | None = None,
    mask_id: int | None = None,
    on_step: Callable[[StepEvent], None] | None = None,
) -> GenerationOutput:
    """Fill the holes of each text; every other token is left as given. ``config.max_new_tokens`` is
    unused (the holes decide the length); ``span`` is the length of a hole written without one."""
    events = stream(
        model, tokenizer, texts, config, schedule=schedule, mask_id=mask_id, infill=True, span=span
    )
    return _collect(events, on_step)
