"""The sampling engine: text from a masked diffusion model by iterative unmasking.

    cfg = PRESETS["diffutron"]                       # or GenerationConfig(...)
    out = generate(model, tokenizer, ["Türkiye'nin başkenti"], cfg, schedule=schedule)
    out.texts, out.forward_passes
    out = infill(model, tokenizer, ["Ankara Türkiye'nin <mask:2> şehridir."], cfg)
    for event in stream(model, tokenizer, prompts, cfg):   # one event per step that changed the canvas
        print(event.partial_texts(tokenizer))

One loop serves generation and infilling. Its input is a canvas [B, L] and the positions it may write
(``editable``): the answer after the prompt (generation) or the holes of a text (infilling). Rows are
right-padded and padding is excluded by the attention mask, so a batch of prompts of different
lengths gives what each prompt gives alone. Editable positions are cut, in order, into
semi-autoregressive blocks of ``block_size``; each row decodes the lowest block that still has masks,
in ``steps / n_blocks`` steps (a remainder goes to the first blocks, so ``steps`` is the total; fewer
steps than blocks gives each block one, with a warning; ``output.steps`` says what was taken), or, with
``threshold``, as many as the text needs. A step:

  1. candidates: the still-masked positions of each row's current block;
  2. how many each row commits: from the schedule (deterministic or stochastic) or all of them for
     ``threshold``; a row with nothing to commit is not sent through the network — MDLM's "reuse the
     previous prediction when nothing changed", exact because the model has no time input: the
     prediction for an unchanged canvas is the one it already had, so the call is simply not made;
  3. one forward pass over the rows that commit something (and, with guidance, the same rows with
     the prompt masked); the output head runs only at candidate positions;
  4. proposals: penalty, suppression, top-k/top-p, greedy or Gumbel-max (``proposals.py``), in
     float64 but ``MAX_PROPOSAL_ELEMENTS`` at a time: a long answer in one block over a 256k
     vocabulary would otherwise hold several float64 [N, V] copies (1 GB each at N = 512);
  5. commit the best-scored candidates by the commit rule (``commit.py``); with sampling, tokens are
     drawn only at candidates that can be committed (``_choose``: exact, and it spares float64 noise
     over the vocabulary at every masked position); committed tokens are never re-masked;
  6. stop: a row whose end token is committed with nothing masked before it, or whose filled answer
     contains a stop string, is finished: its remaining masks become end tokens, it takes no more passes.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from ..diffusion.schedules import LinearSchedule, Schedule
from ..models.heads import MaskedLMParts, context_limit
from .commit import (
    SCORERS,
    above_threshold,
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


class _StopStrings:
    """Stop strings end a row when its *filled prefix* (answer up to the first mask) contains one.
    Only rows whose prefix grew are decoded; opt-in, so the default path has no per-row Python."""

    def __init__(self, tokenizer, stops: tuple[str, ...], editable: torch.Tensor, mask_id: int):
        self.tokenizer, self.stops, self.editable, self.mask_id = tokenizer, stops, editable, mask_id
        pos = torch.arange(editable.shape[1])
        self.start = torch.where(editable, pos, editable.shape[1]).min(1).values  # answer start
        self.end = torch.where(editable, pos, -1).max(1).values + 1  # answer end
        self.seen = self.start.clone()  # prefix end at the last check

    def __call__(self, canvas: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        canvas = canvas.cpu()
        pos = torch.arange(canvas.shape[1])
        holes = (canvas == self.mask_id) & self.editable
        prefix_end = torch.minimum(torch.where(holes, pos, canvas.shape[1]).min(1).values, self.end)
        hit = torch.zeros_like(rows)
        for b in (rows & (prefix_end > self.seen)).nonzero().flatten().tolist():
            ids = canvas[b, int(self.start[b]) : int(prefix_end[b])].tolist()
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            hit[b] = any(s in text for s in self.stops)
        self.seen = torch.maximum(self.seen, prefix_end)
        return hit


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
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 5: commit mask [B, L] and proposals [N] (-1 where nothing was drawn) for ``n`` candidates
    at (rows, cols). ``prepared(idx)`` gives the (unfiltered, filtered) float64 logits of candidates
    ``idx``, called a chunk at a time. Exactly the outcome of drawing every candidate, with draws made
    only where needed:
    - a score that ignores the proposal (margin, entropy, random) picks first, then draws the picks;
    - a confidence score (low_confidence, threshold) cannot exceed that of the greedy token, so:
      draw where the rule would commit if every draw were greedy; then also draw any candidate whose
      greedy score reaches the weakest pick so far (drawing more can only raise that bar); pick."""

    device = rows.device

    def grid(values: torch.Tensor) -> torch.Tensor:  # [N] candidate scores -> [B, L], -inf elsewhere
        g = torch.full(shape, float("-inf"), dtype=torch.float64, device=device)
        g[rows, cols] = values
        return g

    def draw_at(where: torch.Tensor, scored: torch.Tensor | None = None) -> None:
        for chunk in _chunks(int(where.sum()), vocab):
            idx = where.nonzero().flatten()[chunk.to(device)]
            logits, scaled = prepared(idx)
            tokens[idx] = draw(scaled, cfg.temperature, generator)
            if scored is not None:
                scored[idx] = score_fn(logits, tokens[idx], generator)

    # [N] the greedy proposals and their scores (for a confidence: the best score any draw can get)
    greedy = torch.empty(n, dtype=torch.long, device=device)
    upper = torch.empty(n, dtype=torch.float64, device=device)
    for idx in _chunks(n, vocab):
        idx = idx.to(device)
        logits, _ = prepared(idx)
        greedy[idx] = logits.argmax(-1)
        upper[idx] = score_fn(logits, greedy[idx] if score_fn.uses_proposal else None, generator)
    if cfg.temperature == 0:
        return pick(grid(upper)), greedy
    tokens = torch.full_like(greedy, -1)
    if not score_fn.uses_proposal:
        commit = pick(grid(upper))
        draw_at(commit[rows, cols])
        return commit, tokens
    score = torch.full_like(upper, float("-inf"))
    drawn = torch.zeros_like(greedy, dtype=torch.bool)
    todo = pick(grid(upper))[rows, cols]
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-3 for candidates ``idx``: float64 logits (guidance, penalty, forbidden ids) unfiltered
    at T = 1 for the scores, and at T with top-k / top-p for the draw (``proposals.prepare``)."""
    logits = head[idx].double()
    if uncond is not None:
        u = uncond[idx].double()
        logits = u + (cfg.guidance_scale + 1.0) * (logits - u)
    if seen is not None:
        logits = apply_repetition_penalty_ids(logits, seen[idx], cfg.repetition_penalty)
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


@torch.no_grad()
def _run(
    model: torch.nn.Module,
    tokenizer,
    start: _Canvas,
    cfg: GenerationConfig,
    schedule: Schedule,
    mask_id: int,
) -> Iterator[StepEvent]:
    parts = MaskedLMParts(model)
    device = _device(model)
    generator = torch.Generator(device=device)
    if cfg.seed is None:
        generator.seed()
    else:
        generator.manual_seed(cfg.seed)
    eos_id = tokenizer.eos_token_id
    canvas, attention = start.ids.to(device), start.attention.to(device)
    editable = start.editable.to(device)
    given = attention.bool() & ~editable  # the condition; masked for the unconditional (CFG) pass
    batch, width = canvas.shape
    block = _block_ids(editable, cfg.block_size)
    n_blocks = int(block.max()) + 1 if editable.any() else 1
    block_steps = _steps_per_block(cfg.steps, n_blocks, cfg.remasking == "threshold").to(device)
    max_steps = int(block_steps.max())
    block_len = torch.zeros(batch, n_blocks + 1, dtype=torch.long, device=device)
    block_len.scatter_add_(1, torch.where(editable, block, n_blocks), editable.long())
    plan = _plan(block_len[:, :n_blocks].cpu(), block_steps.cpu(), schedule).to(device)
    threshold = cfg.remasking == "threshold"
    score_fn = SCORERS["low_confidence" if threshold else cfg.remasking]
    # Infilling writes text inside text: end, begin and padding tokens have no place in a hole.
    extra = [] if start.answer else [eos_id, tokenizer.bos_token_id, tokenizer.pad_token_id]
    forbidden: torch.Tensor | None = None  # [V], built at the first pass when V is known
    stops = (
        _StopStrings(tokenizer, tuple(cfg.stop), start.editable, mask_id)
        if start.answer and cfg.stop
        else None
    )
    end_fill = eos_id if eos_id is not None else tokenizer.pad_token_id
    rows_all = torch.arange(batch, device=device)

    commit_step = torch.full((batch, width), -1, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    row_passes = torch.zeros(batch, dtype=torch.long, device=device)
    step_in_block = torch.zeros(batch, dtype=torch.long, device=device)

    def current_block() -> torch.Tensor:  # [B] lowest block that still has a mask (n_blocks: none)
        return torch.where((canvas == mask_id) & editable, block, n_blocks).min(1).values

    cur = current_block()
    passes = step = 0
    # A row commits at least one token per pass and waits at most its block's steps per block, so it
    # is done within this many steps; past it a broken commit rule would loop forever: fail instead.
    step_cap = int(editable.sum(1).max()) + int(block_steps.sum())
    while True:
        masked = (canvas == mask_id) & editable
        active = ~finished & masked.any(1)
        if not active.any():
            break
        if step >= step_cap:
            raise RuntimeError(
                f"the sampler made no progress: {int(masked[active].sum())} positions still masked after "
                f"{step} steps (at most {step_cap} for {int(editable.sum(1).max())} editable positions in "
                f"{n_blocks} block(s) of {int(block_steps.sum())} steps in all); each pass must commit at "
                "least one token"
            )
        # 1. candidates: still-masked positions of each active row's current block
        candidates = masked & (block == cur[:, None]) & active[:, None]
        remaining = candidates.sum(1)
        # 2. how many each row commits; the block's last scheduled step empties it
        cur_steps = block_steps[cur.clamp(max=n_blocks - 1)]  # [B] steps of each row's current block
        if threshold:
            k = remaining
        elif cfg.stochastic_counts:
            k = stochastic_counts(remaining, step_in_block, cur_steps.double(), schedule, generator)
        else:
            k = plan[rows_all, cur.clamp(max=n_blocks - 1), step_in_block.clamp(max=max_steps - 1)]
        k = torch.where(step_in_block >= cur_steps - 1, remaining, torch.minimum(k, remaining))
        need = active & (k > 0)
        commit = torch.zeros_like(candidates)
        if need.any():
            # 3. one forward pass over the rows that commit something, cut to their longest row
            sub = need.nonzero().flatten()
            w = int(attention[sub].sum(1).max())
            ids, att, cand = canvas[sub, :w], attention[sub, :w], candidates[sub, :w]
            guided = cfg.guidance_scale > 0
            if guided:
                uncond = torch.where(given[sub, :w], torch.full_like(ids, mask_id), ids)
                ids, att = torch.cat([ids, uncond]), torch.cat([att, att])
            # no padding in these rows (always so for one prompt): no mask to build, a faster attention
            hidden = parts.encode(ids, None if bool(att.all()) else att)
            r, c = cand.nonzero(as_tuple=True)
            head = parts.head(hidden[r, c])  # [N, V]: head only where a token is proposed
            uncond_head = parts.head(hidden[r + len(sub), c]) if guided else None
            passes += 1
            row_passes += need.long()
            # 4. proposals, in float64 a chunk of candidates at a time (see ``_proposal_logits``)
            if forbidden is None:
                forbidden = _forbidden(head.shape[-1], cfg, mask_id, extra, device)
            seen = None
            if cfg.repetition_penalty != 1.0:
                # ids in each row's canvas; padding and holes point at the mask, forbidden anyway
                seen = torch.where(att[: len(sub)].bool(), canvas[sub, :w], mask_id)[r]
            prepared = functools.partial(_proposal_logits, head, uncond_head, seen, forbidden, cfg)
            # 5. choose the commits by the rule; draw proposals only where they can be committed
            chosen = candidates & need[:, None]
            if threshold:
                pick = functools.partial(above_threshold, candidates=chosen, tau=cfg.threshold)
            else:
                pick = functools.partial(top_k_per_row, candidates=chosen, k=k)
            rows = sub[r]
            n, vocab = head.shape
            commit, tokens = _choose(
                prepared, n, vocab, rows, c, (batch, width), pick, score_fn, cfg, generator
            )
            proposed = torch.full_like(canvas, mask_id)
            proposed[rows, c] = tokens
            canvas = torch.where(commit, proposed, canvas)
            commit_step[commit] = step
        # 6. stop: end token with nothing masked before it, or a stop string in the filled answer
        if start.answer:
            ended = torch.zeros_like(finished)
            if cfg.stop_at_eos and eos_id is not None:
                ended |= _ended_by_eos(canvas, editable, mask_id, eos_id)
            if stops is not None:
                ended |= stops(canvas, active.cpu()).to(device)
            newly = ended & ~finished
            if newly.any() and end_fill is not None:
                tail = newly[:, None] & editable & (canvas == mask_id)
                canvas = torch.where(tail, torch.full_like(canvas, end_fill), canvas)
                commit_step[tail] = step
                commit |= tail
            finished |= newly
        # advance: a row whose block emptied starts the next one at its first step
        nxt = current_block()
        step_in_block = torch.where(nxt != cur, 0, step_in_block + active.long())
        cur = nxt
        step += 1
        if commit.any():
            yield StepEvent(
                step=step,
                forward_passes=passes,
                canvas=canvas.cpu().clone(),
                committed=commit.cpu(),
                finished=(finished | ~((canvas == mask_id) & editable).any(1)).cpu(),
                editable=start.editable,
                view_start=start.view_start,
                mask_id=mask_id,
            )

    output = _finish(
        tokenizer, start, cfg, canvas.cpu(), commit_step.cpu(), passes, row_passes, step, mask_id
    )
    yield StepEvent(
        step=step,
        forward_passes=passes,
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
