"""A decoding batch that rows join and leave between steps (continuous batching for the server).

    batch = DecodeBatch(model, tokenizer, schedule, mask_id)
    row = batch.add("Türkiye'nin başkenti", cfg)                 # or batch.add(text, cfg, infill=True)
    while batch.rows:
        for r in batch.step():                                    # rows whose canvas changed
            print(r.partial(tokenizer), r.done and r.output.texts[0])
    batch.remove(row)                                             # e.g. its client went away

A thin layer over the engine's ``DecodeState`` (the one decoding loop, ``engine.py``): ``add`` prepares
one prompt (or text with holes) as ``generate`` / ``infill`` would and lets it join with its own settings
and **its own random generator** (seeded from its ``cfg.seed``); ``step`` runs steps 1-6 for every row at
once (one forward pass over the rows that commit something, proposals and commits vectorised over rows
with equal settings); a ``Row`` is the caller's handle on one sequence: its views, and its
``GenerationOutput`` once done. A row's random draws never depend on its neighbours, so under the same seed
a row makes the same choices alone or in any batch wherever its scores are not within rounding noise of
a tie (a batched forward pass runs other kernels: docs/sampling.md, "What is deterministic"), and a row
alone gives exactly what ``generate`` gives (tests/serving/test_serving_batch.py checks both). Rows may differ in prompt, length and every setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..diffusion.schedules import LinearSchedule, Schedule
from .config import GenerationConfig
from .engine import (
    DecodeState,
    GenerationOutput,
    _Canvas,
    _finish,
    _prepare_generate,
    _prepare_infill,
    make_generator,
)
from .prompts import render_partial, view_runs


@dataclass(eq=False)
class Row:
    """One sequence being decoded; ``tag`` is the caller's (the scheduler keeps its request there)."""

    cfg: GenerationConfig
    start: _Canvas  # the one-row canvas the row started from (CPU)
    mask_id: int
    tag: object = None
    output: GenerationOutput | None = None  # set when the row is done
    _batch: DecodeBatch | None = field(default=None, repr=False)
    _left: dict | None = field(default=None, repr=False)  # its state when it left the batch

    @property
    def done(self) -> bool:
        return self.output is not None

    @property
    def length(self) -> int:
        return int(self.start.ids.shape[1])

    @property
    def editable(self) -> torch.Tensor:
        return self.start.editable[0]

    @property
    def canvas(self) -> torch.Tensor:
        """[L] the row's canvas now."""
        return self._get("canvas")

    @property
    def steps(self) -> int:
        """Steps this row has taken (the ``step`` of ``generate`` for a batch of one)."""
        return self._get("steps")

    @property
    def passes(self) -> int:
        """Forward passes this row took part in."""
        return self._get("passes")

    @property
    def stopped(self) -> bool:
        """Finished before its answer was full, by its end token or a stop string (``finish_reason`` "stop")."""
        return self._get("stopped")

    def _get(self, name: str):
        if self._left is not None:
            return self._left[name]
        return self._batch._row_value(self, name)

    def partial(self, tokenizer, symbol: str = "░") -> str:
        """The answer (or text) so far, masks (and characters not yet whole) shown as ``symbol``."""
        return render_partial(tokenizer, self._view().tolist(), self.mask_id, symbol)

    def segments(self, tokenizer) -> list[str | int]:
        """The view as runs: a string for decoded text, an int for that many masks (for the page)."""
        return view_runs(tokenizer, self._view().tolist(), self.mask_id)

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
        self.mask_id = tokenizer.mask_token_id if mask_id is None else mask_id
        if self.mask_id is None:
            raise ValueError("the tokenizer has no mask token: pass mask_id")
        self.state = DecodeState(model, tokenizer, schedule or LinearSchedule(), self.mask_id)
        self.rows: list[Row] = []  # in the order of the state's rows

    @property
    def forward_passes(self) -> int:
        """Network calls made by this batch (a call counts once)."""
        return self.state.forward_passes

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
        fill = self.state.fill
        if infill:
            if not isinstance(prompt, str):
                raise ValueError("infill takes a text with holes, not token ids")
            start = _prepare_infill(self.model, self.tokenizer, [prompt], span, self.mask_id, fill)
        else:
            start = _prepare_generate(
                self.model, self.tokenizer, [prompt], cfg.max_new_tokens, self.mask_id, fill
            )
        row = Row(cfg=cfg, start=start, mask_id=self.mask_id, tag=tag, _batch=self)
        self.state.add(start, [cfg], [make_generator(cfg.seed, self.state.device)])
        self.rows.append(row)
        if bool(self.state.done[-1]):  # nothing to write (cannot happen for a valid prompt; kept exact)
            self._finalize(row, len(self.rows) - 1)
        return row

    def remove(self, row: Row) -> None:
        if row not in self.rows:
            return
        i = self.rows.index(row)
        if row._left is None:
            row._left = self._snapshot(i, row)
        self.state.keep([j for j in range(len(self.rows)) if j != i])
        self.rows.pop(i)
        row._batch = None

    # -- one step ------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> list[Row]:
        """Advance every unfinished row by one step; return the rows whose canvas changed (a row that
        is done carries ``output``; the caller removes it). Rows with nothing to commit skip the pass."""
        result = self.state.step()
        if result is None:
            return []
        committed, done = torch.stack([result.committed.any(1), self.state.done]).cpu().tolist()
        changed = []
        for i, row in enumerate(self.rows):
            if row.output is not None:
                continue
            if done[i]:
                self._finalize(row, i)
            if committed[i] or done[i]:
                changed.append(row)
        return changed

    def _row_value(self, row: Row, name: str):
        i = self.rows.index(row)
        if name == "canvas":
            return self.state.canvas[i, : row.length]
        return getattr(self.state, name)[i].item()

    def _snapshot(self, i: int, row: Row) -> dict:
        s = self.state
        return {
            "canvas": s.canvas[i, : row.length].cpu(),
            "commit_step": s.commit_step[i, : row.length].cpu(),
            "steps": int(s.steps[i]),
            "passes": int(s.passes[i]),
            "stopped": bool(s.stopped[i]),
        }

    def _finalize(self, row: Row, i: int) -> None:
        left = row._left = self._snapshot(i, row)
        row.output = _finish(
            self.tokenizer,
            row.start,
            row.cfg,
            left["canvas"][None],
            left["commit_step"][None],
            left["passes"],
            torch.tensor([left["passes"]]),
            left["steps"],
            self.mask_id,
        )
