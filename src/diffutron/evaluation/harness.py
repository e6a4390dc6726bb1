"""``diffutron`` as an lm-evaluation-harness model, so CETVEL's own task folder runs unchanged.

    diffutron lm-eval --model diffutron --model_args pretrained=runs/quickstart/model,mc_samples=32 \\
        --tasks xcopa_tr --include_path ./cetvel/tasks/
    python -m diffutron.evaluation.harness ...      # the same, without the diffutron CLI

lm-eval finds models through its registry, which only holds what has been imported; it has no
plugin entry points. Importing this module registers ``diffutron`` (after lm-eval's own models,
which it would otherwise skip), and both commands above are the stock ``lm_eval`` command line
with that import done first. From Python: ``import diffutron.evaluation.harness`` and then
``lm_eval.simple_evaluate(model="diffutron", model_args=...)``, or pass a ``DiffutronLM``.

The three request types:
- ``loglikelihood``: the stratified Monte-Carlo ELBO (``likelihood.py``); ``is_greedy`` = every
  answer token is the argmax when the whole answer is masked (one extra pass per request);
- ``loglikelihood_rolling``: the text is cut into windows of half the length the model was trained
  on (from its checkpoint; else its context); each window is scored as the answer after as much
  preceding text as fits, so every token is scored once. Framed as in training: ``<bos>`` only
  where the context reaches the start of the text, ``<eos>`` only after its last window;
- ``generate_until``: greedy decoding with the sampling engine, cut at the ``until`` strings.

Model arguments (``--model_args k=v,...``): ``pretrained`` (folder or hub id), ``mc_samples`` (32),
``rows_per_pass`` (default: lm-eval's ``--batch_size`` x ``mc_samples``), ``seed`` (0),
``enumerate_small`` (true), ``max_length``, ``max_new_tokens`` (64), ``steps`` (= new tokens),
``block_size`` (32), ``revision``, ``device`` (cuda when available, else cpu).

Requires ``lm-eval`` (``pip install lm-eval``); nothing else in Diffutron imports this module.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import lm_eval.models  # noqa: F401 - registers the stock models first (see the module docstring)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import model_registry, register_model
from tqdm.auto import tqdm

from .likelihood import ContinuationScorer, EncodedPair, LikelihoodConfig
from .runner import cut_at

log = logging.getLogger(__name__)
REQUESTS_PER_CALL = 256  # requests scored together (progress granularity, memory bound)


def rolling_windows(
    ids: Sequence[int], length: int, prefix: tuple[int, ...], suffix: tuple[int, ...]
) -> list[EncodedPair]:
    """Score every token of a text once: windows of ``length // 2`` tokens, each the answer after as
    much preceding text as fits in ``length``. ``prefix`` (``<bos>``) only where the context reaches
    the start of the text, ``suffix`` (``<eos>``) only after the last window: a window inside a text
    is not framed as a whole document."""
    room = length - len(prefix) - len(suffix)
    window = max(1, room // 2)
    pairs = []
    for i in range(0, len(ids), window):
        answer = tuple(ids[i : i + window])
        start = max(0, i - (room - len(answer)))
        last = i + window >= len(ids)
        pairs.append(
            EncodedPair(tuple(ids[start:i]), answer, prefix if start == 0 else (), suffix if last else ())
        )
    return pairs


class DiffutronLM(LM):
    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        batch_size: int | str | None = 1,
        mc_samples: int = 32,
        rows_per_pass: int | None = None,
        seed: int = 0,
        enumerate_small: bool = True,
        max_length: int | None = None,
        max_new_tokens: int = 64,
        steps: int | None = None,
        block_size: int = 32,
        revision: str | None = None,
        **unused,
    ) -> None:
        super().__init__()
        from ..models.checkpoint import load_checkpoint

        unused = {k: v for k, v in unused.items() if v is not None and k not in ("max_batch_size",)}
        if unused:
            log.warning("diffutron: ignoring model arguments %s", sorted(unused))
        if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            device = "cuda" if torch.cuda.is_available() else "cpu"  # lm_eval's CLI defaults to cuda
        loaded = load_checkpoint(pretrained, device=device, revision=revision)
        self.loaded = loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.schedule = loaded.settings.make_schedule()
        # lm-eval's batch size counts requests; one request is up to mc_samples masked rows.
        requests_per_pass = int(batch_size) if str(batch_size).isdigit() else 1  # "auto" -> 1
        rows = int(rows_per_pass) if rows_per_pass else max(1, requests_per_pass) * int(mc_samples)
        self.scorer = ContinuationScorer(
            self.model,
            self.tokenizer,
            mask_id=loaded.mask_id,
            config=LikelihoodConfig(
                samples=int(mc_samples),
                batch_size=rows,
                seed=int(seed),
                enumerate_small=str(enumerate_small).lower() not in ("false", "0"),
                max_length=int(max_length) if max_length else None,
            ),
        )
        # rolling windows follow the length the model was trained on, not its whole context
        self.train_length = min(
            loaded.settings.context_length or self.scorer.max_length, self.scorer.max_length
        )
        self.seed, self.max_new_tokens, self.block_size = int(seed), int(max_new_tokens), int(block_size)
        self.steps = int(steps) if steps else None
        self.gen_batch_size = max(1, requests_per_pass)

    @property
    def tokenizer_name(self) -> str:
        return str(self.loaded.source).replace("/", "__")

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [tuple(r.args) for r in requests]
        out: list[tuple[float, bool]] = []
        for start in tqdm(
            range(0, len(pairs), REQUESTS_PER_CALL), disable=disable_tqdm, desc="loglikelihood"
        ):
            chunk = pairs[start : start + REQUESTS_PER_CALL]
            scores = self.scorer.score(chunk).loglikelihoods
            greedy = self.scorer.greedy(chunk)
            out += list(zip(scores, greedy, strict=True))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for r in tqdm(requests, disable=disable_tqdm, desc="loglikelihood_rolling"):
            (text,) = r.args
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            pairs = rolling_windows(ids, self.train_length, *self.scorer.affixes)
            out.append(float(sum(self.scorer.score_encoded(pairs).loglikelihoods)))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from ..sampling import GenerationConfig, generate

        out: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            _, kwargs = r.args
            until = kwargs.get("until") or []
            until = (until,) if isinstance(until, str) else tuple(until)
            n_new = int(kwargs.get("max_gen_toks", self.max_new_tokens))
            groups.setdefault((until, n_new), []).append(i)
        limit = self.scorer.max_length
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="generate_until")
        for (until, n_new), idx in groups.items():
            cfg = GenerationConfig(
                max_new_tokens=n_new,
                steps=self.steps or n_new,
                block_size=min(self.block_size, n_new),
                temperature=0.0,
                seed=self.seed,
            )
            for start in range(0, len(idx), self.gen_batch_size):
                chunk = idx[start : start + self.gen_batch_size]
                prompts = [self._prompt_ids(requests[i].args[0], limit - n_new - 1) for i in chunk]
                texts = generate(
                    self.model,
                    self.tokenizer,
                    prompts,
                    cfg,
                    schedule=self.schedule,
                    mask_id=self.loaded.mask_id,
                ).texts
                for i, t in zip(chunk, texts, strict=True):
                    out[i] = cut_at(t, until)
                bar.update(len(chunk))
        bar.close()
        return [o or "" for o in out]

    def _prompt_ids(self, context: str, room: int) -> list[int]:
        ids = self.tokenizer(context, add_special_tokens=False)["input_ids"]
        return ids[-room:] if len(ids) > room else ids


if "diffutron" not in model_registry:
    register_model("diffutron")(DiffutronLM)


def main(argv: Sequence[str] | None = None) -> int:
    """The stock lm_eval command line, with ``diffutron`` registered."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = ["lm_eval", *argv]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
