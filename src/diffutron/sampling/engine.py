"""The sampling engine: text from a masked diffusion model by iterative unmasking.

    cfg = GenerationConfig(max_new_tokens=64, steps=64, block_size=32, temperature=0.0)
    out = generate(loaded.model, loaded.tokenizer, ["Türkiye'nin başkenti"], cfg, schedule=schedule)
    out.texts, out.forward_passes

Canvas per row = prompt + ``max_new_tokens`` masks (+ padding so rows of different prompt lengths
share a tensor; padding is excluded by the attention mask, so batched == one by one).
Answer positions are split into semi-autoregressive blocks; each block gets ``steps / n_blocks``
steps. A step:
  1. one forward pass; the output head runs only on still-masked positions of the current block;
  2. propose a token per such position (mask token never proposed; repetition penalty on ids
     already in the canvas; greedy at temperature 0, else Gumbel-max in float64);
  3. score positions by the commit rule (``low_confidence``: probability of the proposal; ``random``);
  4. commit as many as the schedule says: after step i of a block with n masks,
     round(n * alpha(s_i)) are revealed, s_i = 1 - (i+1)/steps — the same schedule object
     training used; committed tokens are never re-masked;
  5. a row whose end token is committed with everything before it filled is finished: its tail is
     filled with end tokens and it takes no more passes.
``on_step`` receives the canvas after every step (streaming, plots).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..diffusion.schedules import LinearSchedule, Schedule
from ..models.heads import MaskedLMParts

REMASKING = ("low_confidence", "random")


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    steps: int = 64
    block_size: int = 32
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    remasking: str = "low_confidence"
    seed: int | None = 0
    stop_at_eos: bool = True

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.block_size < 1:
            raise ValueError("block_size must be >= 1")
        if self.remasking not in REMASKING:
            raise ValueError(f"remasking must be one of {REMASKING}, got {self.remasking!r}")
        if self.temperature < 0 or self.repetition_penalty <= 0:
            raise ValueError("temperature must be >= 0 and repetition_penalty > 0")


@dataclass
class GenerationOutput:
    texts: list[str]
    token_ids: list[list[int]]  # answer ids, up to (not including) the end token
    forward_passes: int
    canvas: torch.Tensor  # final canvas [B, L]
    commit_step: torch.Tensor  # [B, L]: step at which each position was committed (-1: prompt/padding)
    prompt_lengths: list[int] = field(default_factory=list)


def _reveal_counts(n: int, steps: int, schedule: Schedule) -> list[int]:
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[1:]
    revealed = torch.round(n * schedule.alpha(s)).long().clamp(0, n)
    revealed[-1] = n
    return torch.diff(revealed, prepend=torch.zeros(1, dtype=torch.long)).clamp(min=0).tolist()


def _apply_repetition_penalty(
    logits: torch.Tensor,
    rows: torch.Tensor,
    canvas: torch.Tensor,
    penalty: float,
    mask_id: int,
    pad_id: int | None,
) -> torch.Tensor:
    """Diffutron's rule: every id already in the row's canvas has its logit divided by the penalty
    when positive and multiplied when negative."""
    present = torch.zeros(canvas.shape[0], logits.shape[-1], dtype=torch.bool, device=logits.device)
    present.scatter_(1, canvas, True)
    present[:, mask_id] = False
    if pad_id is not None:
        present[:, pad_id] = False
    hit = present[rows]
    return torch.where(hit, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str] | list[list[int]],
    config: GenerationConfig | None = None,
    *,
    schedule: Schedule | None = None,
    mask_id: int | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> GenerationOutput:
    cfg = config or GenerationConfig()
    cfg.validate()
    schedule = schedule or LinearSchedule()
    mask_id = tokenizer.mask_token_id if mask_id is None else mask_id
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    parts = MaskedLMParts(model)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None

    # 1. canvas: [prompt | masks | padding]
    prompt_ids = [
        p if isinstance(p, list) else tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts
    ]
    if tokenizer.bos_token_id is not None:
        prompt_ids = [
            [tokenizer.bos_token_id, *p] if not p or p[0] != tokenizer.bos_token_id else p for p in prompt_ids
        ]
    lengths = [len(p) for p in prompt_ids]
    n_new = cfg.max_new_tokens
    width = max(lengths) + n_new
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and width > limit:
        raise ValueError(
            f"prompt ({max(lengths)} tokens) + {n_new} new tokens exceed the model's context of {limit}"
        )
    batch = len(prompt_ids)
    fill = pad_id if pad_id is not None else eos_id
    canvas = torch.full((batch, width), fill, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    for b, p in enumerate(prompt_ids):
        canvas[b, : len(p)] = torch.tensor(p, dtype=torch.long)
        canvas[b, len(p) : len(p) + n_new] = mask_id
        attention[b, : len(p) + n_new] = 1
    canvas, attention = canvas.to(device), attention.to(device)
    commit_step = torch.full((batch, width), -1, dtype=torch.long, device=device)
    start = torch.tensor(lengths, device=device)[:, None]  # answer start per row
    rel = torch.arange(width, device=device)[None, :] - start  # position relative to answer start
    in_answer = (rel >= 0) & (rel < n_new)

    n_blocks = -(-n_new // cfg.block_size)
    steps_per_block = max(1, cfg.steps // n_blocks)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    passes, step_no = 0, 0
    for blk in range(n_blocks):
        block_len = min(cfg.block_size, n_new - blk * cfg.block_size)
        in_block = in_answer & (rel >= blk * cfg.block_size) & (rel < blk * cfg.block_size + block_len)
        counts = _reveal_counts(block_len, steps_per_block, schedule)
        for k in counts:
            if k == 0:
                continue
            active = ~finished
            if not active.any():
                break
            # 2. forward pass on the active rows; head only at masked positions of the current block
            candidates = (canvas == mask_id) & in_block & active[:, None]
            if not candidates.any():
                continue
            hidden = parts.encode(canvas, attention)
            passes += 1
            rows, cols = candidates.nonzero(as_tuple=True)
            logits = parts.head(hidden[rows, cols]).double()
            logits[:, mask_id] = float("-inf")
            if cfg.repetition_penalty != 1.0:
                logits = _apply_repetition_penalty(
                    logits, rows, canvas, cfg.repetition_penalty, mask_id, pad_id
                )
            # 3. proposals
            if cfg.temperature > 0:
                u = torch.rand(logits.shape, generator=generator, dtype=torch.float64).to(device)
                gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)).clamp_min(1e-20))
                proposal = (logits / cfg.temperature + gumbel).argmax(-1)
            else:
                proposal = logits.argmax(-1)
            if cfg.remasking == "low_confidence":
                score = torch.softmax(logits, -1).gather(1, proposal[:, None]).squeeze(1)
            else:
                score = torch.rand(proposal.shape, generator=generator, dtype=torch.float64).to(device)
            # 4. commit the k best-scored candidates of each row (vectorised over rows)
            scores = torch.full(canvas.shape, float("-inf"), dtype=torch.float64, device=device)
            scores[rows, cols] = score
            order = scores.argsort(dim=1, descending=True)
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(width, device=device).expand(batch, -1))
            commit = candidates & (rank < k)
            proposed = torch.full_like(canvas, mask_id)
            proposed[rows, cols] = proposal
            canvas = torch.where(commit, proposed, canvas)
            commit_step[commit] = step_no
            step_no += 1
            # 5. early stop: an end token committed with every answer position before it filled
            if cfg.stop_at_eos and eos_id is not None:
                finished = finished | _row_finished(canvas, in_answer, mask_id, eos_id)
                canvas = torch.where(
                    finished[:, None] & in_answer & (canvas == mask_id),
                    torch.full_like(canvas, eos_id),
                    canvas,
                )
            if on_step is not None:
                on_step(
                    {
                        "step": step_no,
                        "block": blk,
                        "canvas": canvas.clone(),
                        "committed": commit.clone(),
                        "forward_passes": passes,
                    }
                )

    answers = []
    for b in range(batch):
        ids = canvas[b, lengths[b] : lengths[b] + n_new].tolist()
        if eos_id is not None and eos_id in ids:
            ids = ids[: ids.index(eos_id)]
        answers.append([i for i in ids if i != mask_id])
    texts = [tokenizer.decode(a, skip_special_tokens=True) for a in answers]
    return GenerationOutput(
        texts=texts,
        token_ids=answers,
        forward_passes=passes,
        canvas=canvas.cpu(),
        commit_step=commit_step.cpu(),
        prompt_lengths=lengths,
    )


def _row_finished(canvas: torch.Tensor, in_answer: torch.Tensor, mask_id: int, eos_id: int) -> torch.Tensor:
    is_eos = (canvas == eos_id) & in_answer
    # cumulative "an end token at or before this position" along the row
    seen_eos = is_eos.long().cumsum(dim=1) > 0
    before_first_eos = in_answer & ~seen_eos
    has_hole_before = ((canvas == mask_id) & before_first_eos).any(dim=1)
    return is_eos.any(dim=1) & ~has_hole_before
