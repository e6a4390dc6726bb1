"""Run tasks on a model: multiple choice by the Monte-Carlo ELBO, generation by the sampling engine.

    loaded = load_checkpoint("runs/quickstart/model")
    results = evaluate(loaded, resolve_tasks("diffutron"), EvalConfig(data_dir="evaldata/", limit=100))
    results.save("results.json"); print(results.tasks["xcopa_tr"].metrics["acc"])

Multiple choice (per task):
  1. load the items (``sources.load_task_data``: data dir, package or hub; bad rows reported);
  2. render prompt and choices (``tasks.render``); one request per choice: (prompt, " " + choice);
  3. score all requests of a chunk of items together (``likelihood.ContinuationScorer``: samples x
     choices x items in few forward passes);
  4. ``acc`` = argmax of the log-likelihoods, ``acc_norm`` = argmax of log-likelihood / characters of
     the choice, F1 / macro-F1 on the ``acc`` predictions; chance = mean of 1 / number of choices.
Generation: greedy decoding with ``sampling.generate`` (steps = new tokens, blocks of 32), the answer
cut at the task's stop strings, scored by SQuAD exact match / F1 or ROUGE. A prompt too long for the
model loses the end of its ``truncate_field`` (the passage), never the question.

A task that cannot load its data is reported with its error and the run goes on with the others.
"""

from __future__ import annotations

import functools
import json
import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..io import atomic_write_json
from ..models.heads import context_limit
from .likelihood import ContinuationScorer, LikelihoodConfig, special_affixes
from .metrics import (
    Metric,
    argmax,
    binary_f1,
    bootstrap,
    macro_f1,
    mean_with_stderr,
    rouge,
    squad_exact,
    squad_f1,
)
from .sources import Problem, TaskData, load_task_data
from .tasks import GENERATE, Rendered, Task, render

log = logging.getLogger(__name__)
ITEMS_PER_CHUNK = 64  # items scored together: bounds memory and gives progress updates


@dataclass
class EvalConfig:
    samples: int = 32  # Monte-Carlo samples per choice (exact enumeration for short answers)
    batch_size: int = 32  # rows per forward pass
    seed: int = 0
    limit: int | None = None  # score the first N good items of each task (lm-eval's --limit)
    sample: int | None = None  # ... or N good items drawn at random (seeded by `seed`), in file order
    data_dir: str | None = None
    data_files: dict[str, str] = field(default_factory=dict)  # task -> explicit file or folder
    split: str | None = None  # override every task's split
    dataset_revision: str | None = None  # hub revision (commit) for every hub task
    enumerate_small: bool = True
    common_masks: bool = True  # choices of equal token length share their masks (common random numbers)
    max_length: int | None = None  # default: the model's context
    max_new_tokens: int | None = None  # generation; default: the task's (64)
    gen_steps: int | None = None  # default: one step per new token
    gen_block_size: int = 32
    gen_batch_size: int = 8
    bootstrap_iters: int = 1000
    log_items: str | None = None  # write every item's prompt, scores and prediction (JSONL)


@dataclass
class TaskResult:
    task: str
    kind: str
    split: str
    source: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    n: int = 0
    skipped: int = 0
    problems: list[Problem] = field(default_factory=list)
    chance: float | None = None
    seconds: float = 0.0
    forward_passes: int = 0
    truncated: int = 0
    error: str | None = None
    selection: str = "all"  # which items were scored: all, the first N, or a seeded random N

    def to_dict(self, max_problems: int = 50) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "split": self.split,
            "source": self.source,
            "n": self.n,
            "selection": self.selection,
            "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
            "chance": self.chance,
            "skipped": self.skipped,
            "problems": [str(p) for p in self.problems[:max_problems]],
            "seconds": round(self.seconds, 3),
            "items_per_second": round(self.n / self.seconds, 3) if self.seconds > 0 else None,
            "forward_passes": self.forward_passes,
            "forward_passes_per_item": round(self.forward_passes / self.n, 3) if self.n else None,
            "truncated": self.truncated,
            "error": self.error,
        }


@dataclass
class EvalResults:
    model: str
    settings: dict[str, Any]
    tasks: dict[str, TaskResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "settings": self.settings,
            "tasks": {k: v.to_dict() for k, v in self.tasks.items()},
        }

    def save(self, path: str | Path) -> Path:
        atomic_write_json(Path(path), self.to_dict())
        return Path(path)


def environment() -> dict[str, str]:
    import transformers

    try:
        from importlib.metadata import version

        diffutron = version("diffutron")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        diffutron = "unknown"
    return {
        "diffutron": diffutron,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


class Evaluator:
    """Holds the model and the likelihood scorer; ``run(task)`` evaluates one task."""

    def __init__(self, model, tokenizer, *, mask_id: int, schedule=None, config: EvalConfig | None = None):
        self.model, self.tokenizer, self.mask_id, self.schedule = model, tokenizer, int(mask_id), schedule
        self.config = config or EvalConfig()
        c = self.config
        self.scorer = ContinuationScorer(
            model,
            tokenizer,
            mask_id=mask_id,
            config=LikelihoodConfig(
                samples=c.samples,
                batch_size=c.batch_size,
                seed=c.seed,
                enumerate_small=c.enumerate_small,
                common_masks=c.common_masks,
                max_length=c.max_length,
            ),
        )
        self._item_log = open(c.log_items, "w", encoding="utf-8") if c.log_items else None

    def close(self) -> None:
        if self._item_log is not None:
            self._item_log.close()

    def load(self, task: Task) -> TaskData:
        c = self.config
        return load_task_data(
            task,
            data_dir=c.data_dir,
            data_file=c.data_files.get(task.name),
            split=c.split,
            revision=c.dataset_revision,
            limit=c.limit,
            sample=c.sample,
            seed=c.seed,
        )

    def run(self, task: Task, progress: bool = False) -> TaskResult:
        start = time.perf_counter()
        try:
            data = self.load(task)
        except (FileNotFoundError, RuntimeError, ValueError) as exc:
            log.error("%s: %s", task.name, exc)
            return TaskResult(task.name, task.kind, self.config.split or task.split, "", error=str(exc))
        result = TaskResult(task.name, task.kind, data.split, data.source, problems=data.problems)
        result.selection = data.selection
        result.skipped = len(data.problems)
        if data.items:
            if task.kind == GENERATE:
                self._generate(task, data, result, progress)
            else:
                self._multiple_choice(task, data, result, progress)
        result.n = len(data.items)
        result.seconds = time.perf_counter() - start
        return result

    def _log(self, task: Task, record: dict[str, Any]) -> None:
        if self._item_log is not None:
            self._item_log.write(json.dumps({"task": task.name, **record}, ensure_ascii=False) + "\n")

    # --- multiple choice -------------------------------------------------------------------

    def _multiple_choice(self, task: Task, data: TaskData, result: TaskResult, progress: bool) -> None:
        rendered = [render(task, item.fields) for item in data.items]
        golds, preds, preds_norm = [], [], []
        chunks = range(0, len(rendered), ITEMS_PER_CHUNK)
        for start in tqdm(chunks, desc=task.name, disable=not progress, leave=False):
            block = rendered[start : start + ITEMS_PER_CHUNK]
            requests = [(r.prompt, task.delimiter + choice) for r in block for choice in r.choices]
            scored = self.scorer.score(requests)
            result.forward_passes += scored.forward_passes
            result.truncated += scored.truncated
            offset = 0
            for i, r in enumerate(block):
                k = len(r.choices)
                lls = scored.loglikelihoods[offset : offset + k]
                per_char = [ll / max(1, len(c)) for ll, c in zip(lls, r.choices, strict=True)]
                golds.append(r.gold)
                preds.append(argmax(lls))
                preds_norm.append(argmax(per_char))
                self._log(
                    task,
                    {
                        "where": data.items[start + i].where,
                        "prompt": r.prompt,
                        "choices": r.choices,
                        "gold": r.gold,
                        "loglikelihoods": lls,
                        "stderr": scored.stderr[offset : offset + k],
                        "pred": preds[-1],
                        "pred_norm": preds_norm[-1],
                    },
                )
                offset += k
        result.chance = sum(1 / len(r.choices) for r in rendered) / len(rendered)
        n_classes = max(len(r.choices) for r in rendered)
        c = self.config
        for name in task.metrics:
            if name == "acc":
                result.metrics[name] = mean_with_stderr(
                    [float(p == g) for p, g in zip(preds, golds, strict=True)]
                )
            elif name == "acc_norm":
                hits = [float(p == g) for p, g in zip(preds_norm, golds, strict=True)]
                result.metrics[name] = mean_with_stderr(hits)
            elif name == "f1":
                result.metrics[name] = bootstrap(binary_f1, golds, preds, c.bootstrap_iters, c.seed)
            elif name == "macro_f1":
                fn = functools.partial(macro_f1, n_classes=n_classes)
                result.metrics[name] = bootstrap(fn, golds, preds, c.bootstrap_iters, c.seed)
            else:
                raise ValueError(f"{task.name}: metric {name!r} is not a multiple-choice metric")

    # --- generation ------------------------------------------------------------------------

    def _fit_prompt(self, task: Task, item: dict[str, Any], budget: int) -> tuple[Rendered, bool]:
        """Render the prompt; if it is longer than ``budget`` tokens, shorten ``truncate_field`` from
        its end (binary search on characters) so the question and the answer cue are kept."""
        r = render(task, item)
        if self._n_tokens(r.prompt) <= budget:
            return r, False
        key = task.truncate_field
        if key is None or key not in item:
            raise ValueError(f"{task.name}: a prompt of {self._n_tokens(r.prompt)} tokens exceeds {budget}")
        full = item[key]
        lo, hi = 0, len(full)
        while lo < hi:  # the longest prefix of the field that fits
            mid = (lo + hi + 1) // 2
            if self._n_tokens(render(task, {**item, key: full[:mid]}).prompt) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return render(task, {**item, key: full[:lo]}), True

    def _n_tokens(self, s: str) -> int:
        return len(self.tokenizer(s, add_special_tokens=False)["input_ids"])

    def _generate(self, task: Task, data: TaskData, result: TaskResult, progress: bool) -> None:
        from ..sampling import GenerationConfig, generate

        c = self.config
        n_new = c.max_new_tokens or task.max_new_tokens
        gen = GenerationConfig(
            max_new_tokens=n_new,
            steps=c.gen_steps or n_new,
            block_size=min(c.gen_block_size, n_new),
            temperature=0.0,
            seed=c.seed,
        )
        limit = c.max_length or context_limit(self.model) or 512
        prefix, _ = special_affixes(self.tokenizer)
        budget = limit - n_new - len(prefix)
        fitted = [self._fit_prompt(task, item.fields, budget) for item in data.items]
        result.truncated = sum(t for _, t in fitted)
        scores: dict[str, list[float]] = {m: [] for m in task.metrics}
        chunks = range(0, len(fitted), c.gen_batch_size)
        for start in tqdm(chunks, desc=task.name, disable=not progress, leave=False):
            block = [r for r, _ in fitted[start : start + c.gen_batch_size]]
            out = generate(
                self.model,
                self.tokenizer,
                [r.prompt for r in block],
                gen,
                schedule=self.schedule,
                mask_id=self.mask_id,
            )
            result.forward_passes += out.forward_passes
            for i, (r, raw) in enumerate(zip(block, out.texts, strict=True)):
                answer = cut_at(raw, task.until).strip()
                item_scores = score_generation(task.metrics, answer, r.gold)
                for k, v in item_scores.items():
                    scores[k].append(v)
                self._log(
                    task,
                    {
                        "where": data.items[start + i].where,
                        "prompt": r.prompt,
                        "references": r.gold,
                        "generated": raw,
                        "answer": answer,
                        **item_scores,
                    },
                )
        result.metrics = {k: mean_with_stderr(v) for k, v in scores.items()}


def cut_at(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    end = len(text)
    for s in stops:
        i = text.find(s)
        if s and i != -1:
            end = min(end, i)
    return text[:end]


def score_generation(metrics: Sequence[str], answer: str, references: list[str]) -> dict[str, float]:
    out = {}
    for name in metrics:
        if name == "exact_match":
            out[name] = squad_exact(answer, references)
        elif name == "f1":
            out[name] = squad_f1(answer, references)
        elif name.startswith("rouge"):
            out[name] = max(rouge(answer, ref)[name] for ref in references)
        else:
            raise ValueError(f"metric {name!r} is not a generation metric")
    return out


def evaluate(
    loaded,
    tasks: Sequence[Task],
    config: EvalConfig | None = None,
    *,
    progress: bool = False,
) -> EvalResults:
    """Evaluate a ``models.Loaded`` checkpoint on ``tasks``; one task failing to load skips only it."""
    config = config or EvalConfig()
    evaluator = Evaluator(
        loaded.model,
        loaded.tokenizer,
        mask_id=loaded.mask_id,
        schedule=loaded.settings.make_schedule(),
        config=config,
    )
    settings = {
        **{k: v for k, v in asdict(config).items() if k != "log_items"},
        "likelihood": "stratified Monte-Carlo ELBO (exact for answers with 2^L - 1 <= samples)",
        "diffusion": asdict(loaded.settings),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(next(loaded.model.parameters()).device),
        "versions": environment(),
    }
    results = EvalResults(model=str(loaded.source), settings=settings)
    try:
        for task in tasks:
            results.tasks[task.name] = evaluator.run(task, progress=progress)
    finally:
        evaluator.close()
    return results
