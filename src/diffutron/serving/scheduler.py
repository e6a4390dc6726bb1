"""The scheduler: one thread owns the model and a ``DecodeBatch``; HTTP handlers only enqueue and await.

    sched = Scheduler(model, tokenizer, schedule, mask_id, max_batch=64, max_queue=256)
    sched.start()
    job = sched.submit(Job(prompts=[...], configs=[...], want="text"))   # QueueFull when the queue is full
    async for kind, index, data in job.events(): ...                      # "admitted", "step", "done", ...
    sched.cancel(job)                                                      # its rows leave at the next step
    sched.close(drain=10.0)                                                # on SIGTERM: refuse new work, drain
    sched.stop(drain=10.0)                                                 # ... and wait for the thread to end

Continuous batching: between two steps the thread admits waiting requests (first come, first served)
while the batch has room for all their rows, takes out the rows of cancelled requests, and after the
step hands every changed row to its request and removes the rows that are done. A request whose rows
do not fit waits; one larger than the whole batch runs when the batch is empty. Every row carries its
own settings and random generator (``sampling/batch.py`` over the engine's ``DecodeState``, the same
vectorised loop as ``generate``), so any requests can share a pass.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..sampling.batch import DecodeBatch, Row
from ..sampling.config import GenerationConfig
from .metrics import Metrics

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """Too many requests waiting; the client should retry later (HTTP 429)."""


class Closing(Exception):
    """The server is shutting down (HTTP 503)."""


@dataclass(eq=False)
class Job:
    """One HTTP request: one row per (prompt, choice)."""

    prompts: list[str]
    configs: list[GenerationConfig]
    infill: bool = False
    span: int = 2
    n: int = 1  # choices per prompt: rows p*n .. p*n+n-1 answer prompt p
    want: Literal["none", "text", "canvas"] = "none"  # what each step sends: nothing, the prefix, the canvas
    rows: list[Row] = field(default_factory=list)
    outputs: dict[int, dict] = field(default_factory=dict)
    cancelled: bool = False
    admitted_at: float = 0.0
    _loop: asyncio.AbstractEventLoop | None = None
    _queue: asyncio.Queue | None = None

    def _send(self, kind: str, index: int | None = None, data=None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, index, data))
        except RuntimeError:  # the handler's event loop is gone (server stopping): nobody is listening
            self.cancelled = True

    async def events(self) -> AsyncIterator[tuple[str, int | None, object]]:
        """``("admitted", None, None)`` once its rows run, then ``("step", i, payload)`` per changed row
        (with ``want``), ``("done", i, result)`` per row, and ``("end", None, None)``; or
        ``("error", None, exception)`` instead."""
        while True:
            kind, index, data = await self._queue.get()
            yield kind, index, data
            if kind in ("end", "error"):
                return


class Scheduler:
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        schedule=None,
        mask_id: int | None = None,
        *,
        max_batch: int = 64,
        max_queue: int = 256,
        metrics: Metrics | None = None,
    ):
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1")
        self.tokenizer = tokenizer
        self.batch = DecodeBatch(model, tokenizer, schedule, mask_id)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.metrics = metrics or Metrics()
        self._pending: collections.deque[Job] = collections.deque()
        self._jobs: list[Job] = []  # admitted, not finished
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._drain_until = float("inf")

    # -- called from the HTTP side ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="diffutron-scheduler", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        job._loop = asyncio.get_running_loop()
        job._queue = asyncio.Queue()
        with self._cv:
            if self._closing:
                raise Closing("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are waiting; retry shortly")
            self._pending.append(job)
            self.metrics.queue_depth.set(len(self._pending))
            self._cv.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Its rows leave the batch at the next step (or it never joins)."""
        with self._cv:
            job.cancelled = True
            self._cv.notify()

    def close(self, drain: float = 0.0) -> None:
        """Refuse new requests; in-flight ones may run ``drain`` more seconds, then fail cleanly (their
        streams end with an error chunk, the others get a 503). Returns at once; a second call keeps
        the first deadline (the server calls this when SIGTERM arrives, the app's shutdown again)."""
        with self._cv:
            if not self._closing:
                self._closing = True
                self._drain_until = time.monotonic() + drain
            self._cv.notify()

    def stop(self, drain: float = 0.0) -> None:
        """``close(drain)``, then wait for the model thread to end."""
        self.close(drain)
        if self._thread is not None:
            self._thread.join(timeout=drain + 30)

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    # -- the model thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cv:
                while not (self._pending or self._jobs or self._closing):
                    self._cv.wait()
                if self._closing and (
                    not (self._pending or self._jobs) or time.monotonic() > self._drain_until
                ):
                    self._fail_all(Closing("the server shut down before this request finished"))
                    return
                admit = self._admit()
            for job in admit:
                self._start(job)
            self._drop_cancelled()
            if not self.batch.rows:
                continue
            try:
                passes = self.batch.forward_passes
                live = sum(not r.done for r in self.batch.rows)
                changed = self.batch.step()
            except Exception as exc:  # a fault in the model: fail what is running, keep serving
                log.exception("decoding step failed")
                self._fail_running(RuntimeError(f"decoding failed: {exc}"))
                continue
            if self.batch.forward_passes > passes:
                self.metrics.forward_passes.inc()
                self.metrics.batch_size.observe(live)
            for row in changed:
                self._deliver(row)
            self.metrics.batch_rows.set(len(self.batch.rows))

    def _admit(self) -> list[Job]:
        """Waiting jobs that fit, in arrival order (called with the lock held)."""
        admit, rows = [], len(self.batch.rows)
        while self._pending:
            job = self._pending[0]
            if job.cancelled:
                self._pending.popleft()
                continue
            if rows and rows + len(job.prompts) > self.max_batch:
                break
            admit.append(self._pending.popleft())
            rows += len(job.prompts)
        self.metrics.queue_depth.set(len(self._pending))
        return admit

    def _start(self, job: Job) -> None:
        try:
            for i, (prompt, cfg) in enumerate(zip(job.prompts, job.configs, strict=True)):
                job.rows.append(self.batch.add(prompt, cfg, infill=job.infill, span=job.span, tag=(job, i)))
        except Exception as exc:  # noqa: BLE001 - bad input found by the engine (context, holes, settings)
            for row in job.rows:
                self.batch.remove(row)
            job._send("error", None, exc if isinstance(exc, ValueError) else ValueError(str(exc)))
            return
        job.admitted_at = time.monotonic()
        self._jobs.append(job)
        job._send("admitted")
        for row in job.rows:  # a row can be done at once (nothing to write)
            if row.done:
                self._deliver(row)

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._jobs if j.cancelled]:
            for row in job.rows:
                self.batch.remove(row)
            self._jobs.remove(job)

    def _deliver(self, row: Row) -> None:
        job, i = row.tag
        if job.cancelled:
            return
        if row.done:
            self.batch.remove(row)
            out = row.output
            # generated: the answer up to its end, or every position of the holes (the text around
            # them is the prompt's, even though infill's token_ids hold the whole text)
            editable = int(row.editable.sum())
            tokens = editable if job.infill else len(out.token_ids[0])
            self.metrics.finished(tokens)
            job.outputs[i] = {
                "text": out.texts[0],
                "fills": out.fills[0] if out.fills else [],
                "tokens": tokens,
                "prompt_tokens": int(row.start.attention.sum()) - editable,
                "finish_reason": "stop" if row.stopped or job.infill else "length",
                "forward_passes": row.passes,
                "steps": row.steps,
                "canvas": row.segments(self.tokenizer) if job.want == "canvas" else None,
            }
            job._send("done", i, job.outputs[i])
            if len(job.outputs) == len(job.rows):
                self._jobs.remove(job)
                job._send("end")
        elif job.want == "text":
            job._send("step", i, {"prefix": self._prefix_text(row), "steps": row.steps})
        elif job.want == "canvas":
            payload = {
                "canvas": row.segments(self.tokenizer),
                "step": row.steps,
                "forward_passes": row.passes,
            }
            job._send("step", i, payload)

    def _prefix_text(self, row: Row) -> str:
        ids = row.filled_prefix()
        eos = self.tokenizer.eos_token_id
        if row.cfg.stop_at_eos and eos in ids:
            ids = ids[: ids.index(eos)]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _fail_running(self, exc: Exception) -> None:
        for job in self._jobs:
            for row in job.rows:
                self.batch.remove(row)
            job._send("error", None, exc)
        self._jobs.clear()

    def _fail_all(self, exc: Exception) -> None:
        self._fail_running(exc)
        while self._pending:
            self._pending.popleft()._send("error", None, exc)
        self.metrics.queue_depth.set(0)
