"""A decoding batch that rows join and leave between steps (continuous batching for the server).

    batch = DecodeBatch(model, tokenizer, schedule, mask_id)
    row = batch.add("Türkiye'nin başkenti", cfg)                 # or batch.add(text, cfg, infill=True)
    while batch.rows:
        for r in batch.step():                                    # rows whose canvas changed
            print(r.partial(tokenizer), r.done and r.output.texts[0])
    batch.remove(row)                                             # e.g. its client went away

Each row carries everything ``engine._run`` keeps per row — canvas, editable positions, blocks, its
reveal plan, where it is in its block, its settings and **its own random generator** (seeded from its
``cfg.seed``). A step runs one forward pass over every row that commits something (right-padded to the
longest, padding excluded by the attention mask, as in ``_run``), then proposes and commits each row from
its own logits with its own generator. So a row's random draws never depend on its neighbours: the same
seed gives the same text alone or in any batch, and a row alone gives exactly what ``generate`` gives
(tests/serving/test_serving_batch.py checks both). Rows may differ in prompt, length and every setting.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from ..diffusion.schedules import LinearSchedule, Schedule
from ..models.heads import MaskedLMParts
from .commit import SCORERS, above_threshold, stochastic_counts, top_k_per_row
from .config import GenerationConfig
from .engine import (
    GenerationOutput,
    _block_ids,
    _Canvas,
    _choose,
    _device,
    _ended_by_eos,
    _finish,
    _forbidden,
    _plan,
    _prepare_generate,
    _prepare_infill,
    _proposal_logits,
    _steps_per_block,
    _StopStrings,
)
from .prompts import render_partial


@dataclass(eq=False)
class Row:
    """One sequence being decoded; ``tag`` is the caller's (the scheduler keeps its request there)."""

    cfg: GenerationConfig
    start: _Canvas  # the one-row canvas the row started from (CPU)
    canvas: torch.Tensor  # [L] on the model's device
    editable: torch.Tensor  # [L] bool
    block: torch.Tensor  # [L] block index of each editable position, -1 elsewhere
    n_blocks: int
    block_steps: torch.Tensor  # [n_blocks] steps of each block (the engine's split of cfg.steps)
    plan: torch.Tensor  # [n_blocks, max block steps] scheduled commits per step
    generator: torch.Generator
    stops: _StopStrings | None
    commit_step: torch.Tensor  # [L]
    mask_id: int
    tag: object = None
    cur: int = 0  # current block
    step_in_block: int = 0
    steps: int = 0  # steps this row has taken (the ``step`` of ``_run`` for a batch of one)
    passes: int = 0  # forward passes this row took part in
    finished: bool = False  # ended by its end token or a stop string
    stopped: bool = False  # finished before its answer was full (OpenAI's finish_reason "stop")
    committed: torch.Tensor | None = None  # [L] bool: written at the last step
    output: GenerationOutput | None = None  # set when the row is done
    _k: int = 0
    _candidates: torch.Tensor | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.output is not None

    @property
    def length(self) -> int:
        return int(self.canvas.shape[0])

    def partial(self, tokenizer, symbol: str = "░") -> str:
        """The answer (or text) so far, masks shown as ``symbol``."""
        return render_partial(tokenizer, self._view().tolist(), self.mask_id, symbol)

    def segments(self, tokenizer) -> list[str | int]:
        """The view as runs: a string for decoded text, an int for that many masks (for the page)."""
        out: list[str | int] = []
        run: list[int] = []
        for i in self._view().tolist():
            if i == self.mask_id:
                if run:
                    out.append(tokenizer.decode(run, skip_special_tokens=True))
                    run = []
                if out and isinstance(out[-1], int):
                    out[-1] += 1
                else:
                    out.append(1)
            else:
                run.append(i)
        if run:
            out.append(tokenizer.decode(run, skip_special_tokens=True))
        return out

    def filled_prefix(self) -> list[int]:
        """Answer ids up to the first mask (what can be streamed left to right already)."""
        view = self._view()
        holes = (view == self.mask_id).nonzero()
        return view[: int(holes[0]) if len(holes) else len(view)].tolist()

    def _view(self) -> torch.Tensor:
        start = self.start.view_start[0]
        pos = self.editable.nonzero()
        end = int(pos.max()) + 1 if len(pos) else start
        return self.canvas[start:end].cpu()


class DecodeBatch:
    """Rows decoded together, one step at a time; rows may join and leave between steps."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        schedule: Schedule | None = None,
        mask_id: int | None = None,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.schedule = schedule or LinearSchedule()
        self.mask_id = tokenizer.mask_token_id if mask_id is None else mask_id
        if self.mask_id is None:
            raise ValueError("the tokenizer has no mask token: pass mask_id")
        fill = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.fill = self.mask_id if fill is None else fill
        self.parts = MaskedLMParts(model)
        self.device = _device(model)
        self.rows: list[Row] = []
        self.forward_passes = 0  # network calls made by this batch (a call counts once)
        self._forbidden: dict[tuple, torch.Tensor] = {}

    # -- rows in and out ---------------------------------------------------------------------------

    def add(
        self,
        prompt: str | list[int],
        config: GenerationConfig,
        *,
        infill: bool = False,
        span: int = 2,
        tag: object = None,
    ) -> Row:
        """Start decoding ``prompt`` (or, ``infill=True``, the holes of a text) with ``config``.
        Bad input (a prompt over the context, a text without holes, bad settings) raises ValueError."""
        cfg = config
        cfg.validate()
        if infill:
            if not isinstance(prompt, str):
                raise ValueError("infill takes a text with holes, not token ids")
            start = _prepare_infill(self.model, self.tokenizer, [prompt], span, self.mask_id, self.fill)
        else:
            start = _prepare_generate(
                self.model, self.tokenizer, [prompt], cfg.max_new_tokens, self.mask_id, self.fill
            )
        # One row alone has no padding; keep just its real positions.
        width = int(start.attention[0].sum())
        editable = start.editable[0, :width]
        block = _block_ids(editable[None], cfg.block_size)[0]
        n_blocks = int(block.max()) + 1 if editable.any() else 1
        block_steps = _steps_per_block(cfg.steps, n_blocks, cfg.remasking == "threshold")
        block_len = torch.bincount(block[editable], minlength=n_blocks)
        generator = torch.Generator(device=self.device)
        if cfg.seed is None:
            generator.seed()
        else:
            generator.manual_seed(cfg.seed)
        stops = None
        if start.answer and cfg.stop:
            stops = _StopStrings(self.tokenizer, tuple(cfg.stop), start.editable[:, :width], self.mask_id)
        dev = self.device
        row = Row(
            cfg=cfg,
            start=start,
            canvas=start.ids[0, :width].to(dev),
            editable=editable.to(dev),
            block=block.to(dev),
            n_blocks=n_blocks,
            block_steps=block_steps,
            plan=_plan(block_len[None], block_steps, self.schedule)[0].to(dev),
            generator=generator,
            stops=stops,
            commit_step=torch.full((width,), -1, dtype=torch.long, device=dev),
            mask_id=self.mask_id,
            tag=tag,
        )
        row.cur = self._current_block(row)
        self.rows.append(row)
        if not self._active(row):  # nothing to write (cannot happen for a valid prompt; kept exact)
            self._finalize(row)
        return row

    def remove(self, row: Row) -> None:
        if row in self.rows:
            self.rows.remove(row)

    # -- one step ------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> list[Row]:
        """Advance every unfinished row by one step; return the rows whose canvas changed (a row that
        is done carries ``output``; the caller removes it). Rows with nothing to commit skip the pass."""
        live = [r for r in self.rows if not r.done]
        need = []
        for row in live:
            row.committed = None
            if self._plan_step(row):
                need.append(row)
        if need:
            self._forward_and_commit(need)
        changed = []
        for row in live:
            self._after_commit(row)
            if row.committed is not None and bool(row.committed.any()):
                changed.append(row)
            if not self._active(row):
                self._finalize(row)
                if row not in changed:
                    changed.append(row)
        return changed

    def _active(self, row: Row) -> bool:
        return not row.finished and bool(((row.canvas == self.mask_id) & row.editable).any())

    def _current_block(self, row: Row) -> int:
        masked = (row.canvas == self.mask_id) & row.editable
        return int(torch.where(masked, row.block, row.n_blocks).min())

    def _plan_step(self, row: Row) -> bool:
        """Steps 1-2 of ``_run`` for one row: candidates and how many to commit; True if it needs a pass."""
        cfg = row.cfg
        masked = (row.canvas == self.mask_id) & row.editable
        row._candidates = masked & (row.block == row.cur)
        remaining = int(row._candidates.sum())
        spb = int(row.block_steps[min(row.cur, row.n_blocks - 1)])  # steps of the current block
        if cfg.remasking == "threshold":
            k = remaining
        elif cfg.stochastic_counts:
            i = torch.tensor([row.step_in_block], device=self.device)
            rem = torch.tensor([remaining], device=self.device)
            n_steps = torch.tensor([spb], dtype=torch.float64, device=self.device)
            k = int(stochastic_counts(rem, i, n_steps, self.schedule, row.generator)[0])
        else:
            k = int(row.plan[min(row.cur, row.n_blocks - 1), min(row.step_in_block, row.plan.shape[1] - 1)])
        row._k = remaining if row.step_in_block >= spb - 1 else min(k, remaining)
        return row._k > 0

    def _forward_and_commit(self, need: list[Row]) -> None:
        """Step 3 (one pass over the rows that commit) and steps 4-5 per row with its own generator."""
        w = max(r.length for r in need)
        ids = torch.full((len(need), w), self.fill, dtype=torch.long, device=self.device)
        att = torch.zeros((len(need), w), dtype=torch.long, device=self.device)
        for b, r in enumerate(need):
            ids[b, : r.length] = r.canvas
            att[b, : r.length] = 1
        guided = [b for b, r in enumerate(need) if r.cfg.guidance_scale > 0]
        if guided:  # the unconditional rows: the condition (everything but the answer) masked
            uncond = ids[guided].clone()
            for j, b in enumerate(guided):
                given = ~need[b].editable  # prompt (or the text around the holes); padding stays padding
                uncond[j, : need[b].length][given] = self.mask_id
            ids, att = torch.cat([ids, uncond]), torch.cat([att, att[guided]])
        hidden = self.parts.encode(ids, None if bool(att.all()) else att)
        self.forward_passes += 1
        where = [r._candidates.nonzero().flatten() for r in need]
        rows_idx = torch.cat([torch.full_like(c, b) for b, c in enumerate(where)])
        cols = torch.cat(where)
        head_all = self.parts.head(hidden[rows_idx, cols])  # [N, V] candidates of all rows
        uncond_all = None
        if guided:
            u_rows = torch.cat([torch.full_like(where[b], len(need) + j) for j, b in enumerate(guided)])
            u_cols = torch.cat([where[b] for b in guided])
            uncond_all = self.parts.head(hidden[u_rows, u_cols])
        offset = u_offset = 0
        for b, row in enumerate(need):
            n = len(where[b])
            head = head_all[offset : offset + n]
            offset += n
            uncond = None
            if row.cfg.guidance_scale > 0:
                uncond = uncond_all[u_offset : u_offset + n]
                u_offset += n
            self._commit_row(row, head, uncond, where[b])

    def _commit_row(
        self, row: Row, head: torch.Tensor, uncond: torch.Tensor | None, cols: torch.Tensor
    ) -> None:
        """Steps 4-5 of ``_run`` for one row (a batch of one: the same calls, the same draws)."""
        cfg = row.cfg
        row.passes += 1
        n, vocab = head.shape
        key = (tuple(cfg.suppress_tokens), row.start.answer, vocab)
        if key not in self._forbidden:
            tok = self.tokenizer
            extra = [] if row.start.answer else [tok.eos_token_id, tok.bos_token_id, tok.pad_token_id]
            self._forbidden[key] = _forbidden(vocab, cfg, self.mask_id, extra, self.device)
        seen = row.canvas[None, :].expand(n, -1) if cfg.repetition_penalty != 1.0 else None
        prepared = functools.partial(_proposal_logits, head, uncond, seen, self._forbidden[key], cfg)
        chosen = row._candidates[None, :]
        threshold = cfg.remasking == "threshold"
        if threshold:
            pick = functools.partial(above_threshold, candidates=chosen, tau=cfg.threshold)
        else:
            k = torch.tensor([row._k], device=self.device)
            pick = functools.partial(top_k_per_row, candidates=chosen, k=k)
        score_fn = SCORERS["low_confidence" if threshold else cfg.remasking]
        rows = torch.zeros_like(cols)
        commit, tokens = _choose(
            prepared, n, vocab, rows, cols, (1, row.length), pick, score_fn, cfg, row.generator
        )
        commit = commit[0]
        proposed = torch.full_like(row.canvas, self.mask_id)
        proposed[cols] = tokens
        row.canvas = torch.where(commit, proposed, row.canvas)
        row.commit_step[commit] = row.steps
        row.committed = commit

    def _after_commit(self, row: Row) -> None:
        """Steps 6 (stop) and the block advance of ``_run`` for one row."""
        cfg, tok = row.cfg, self.tokenizer
        committed = row.committed if row.committed is not None else torch.zeros_like(row.editable)
        if row.start.answer:
            ended = False
            if cfg.stop_at_eos and tok.eos_token_id is not None:
                ended = bool(
                    _ended_by_eos(row.canvas[None], row.editable[None], self.mask_id, tok.eos_token_id)
                )
            if row.stops is not None:
                ended |= bool(row.stops(row.canvas[None], torch.ones(1, dtype=torch.bool))[0])
            if ended and not row.finished:
                end_fill = tok.eos_token_id if tok.eos_token_id is not None else tok.pad_token_id
                tail = row.editable & (row.canvas == self.mask_id)
                row.stopped = True
                if end_fill is not None:
                    row.canvas = torch.where(tail, torch.full_like(row.canvas, end_fill), row.canvas)
                    row.commit_step[tail] = row.steps
                    committed = committed | tail
                row.finished = True
        row.committed = committed
        nxt = self._current_block(row)
        row.step_in_block = 0 if nxt != row.cur else row.step_in_block + 1
        row.cur = nxt
        row.steps += 1

    def _finalize(self, row: Row) -> None:
        row.output = _finish(
            self.tokenizer,
            row.start,
            row.cfg,
            row.canvas[None].cpu(),
            row.commit_step[None].cpu(),
            row.passes,
            torch.tensor([row.passes]),
            row.steps,
            self.mask_id,
        )
