"""Decoding settings: one dataclass, documented once; the CLI builds its flags from these fields.

    cfg = GenerationConfig(max_new_tokens=64, steps=64, block_size=32, remasking="low_confidence")
    cfg = preset("fast", max_new_tokens=128)            # a named preset with overrides
    cfg = dataclasses.replace(PRESETS["diffutron"], seed=7)

``PRESETS["diffutron"]`` is the setting published with the Diffutron checkpoints (64 steps, 64 new
tokens, blocks of 32, temperature 0.1, repetition penalty 1.2, low-confidence remasking: about one
token per forward pass). ``PRESETS["fast"]`` is the same with Fast-dLLM threshold decoding (τ = 0.95), which
commits every position the model is sure of and so needs far fewer passes; ``SERVER_PRESET`` (``fast``)
is what the server and its page use unless a request names another.
What it does not know: the model. Values are checked against the model (context length) by the engine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..models.kv_cache import CACHE_MODES
from .commit import REMASKING  # derived from the registered commit rules


def _opt(default, help: str, **kw):  # noqa: A002 - "help" mirrors argparse
    """A dataclass field with its documentation attached (read by ``cli/generate.py`` for --help)."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class GenerationConfig:
    max_new_tokens: int = _opt(64, "answer length: the number of masks appended to the prompt")
    steps: int = _opt(64, "denoising steps over the whole answer, split evenly over the blocks")
    block_size: int | None = _opt(
        32, "semi-autoregressive block length in tokens; 0 or None: the whole answer (pure diffusion)"
    )
    remasking: str = _opt("low_confidence", "which masked positions to commit each step", choices=REMASKING)
    threshold: float = _opt(
        0.9, "threshold (margin_threshold) remasking: commit every position whose confidence (margin) >= this"
    )
    factor: float = _opt(1.0, "factor remasking: commit the n most confident while (n + 1)(1 - p_n) < this")
    entropy_budget: float = _opt(
        0.5, "entropy_budget remasking: commit lowest-entropy first while their summed entropy (nats) <= this"
    )
    confidence_temperature: float = _opt(
        1.0, "divide the logits by this before scoring commits (a fitted calibration; draws unchanged)"
    )
    remask_threshold: float = _opt(
        0.0,
        "re-mask a token committed at an earlier pass of the current block whose probability has fallen "
        "below this (0: never; committed tokens are then final)",
    )
    remask_budget: int = _opt(
        4, "with remask_threshold: the most tokens a row may re-mask in all (each costs at most one pass)"
    )
    stochastic_counts: bool = _opt(
        False, "draw how many to commit per step from Binomial(masked, reveal probability) (MDLM)"
    )
    temperature: float = _opt(0.0, "0: greedy; > 0: Gumbel-max sampling at this temperature")
    top_k: int = _opt(0, "sample only among the k most likely tokens (0: off)")
    top_p: float = _opt(1.0, "sample only from the smallest set with this total probability (1: off)")
    repetition_penalty: float = _opt(
        1.0, "token ids already in the canvas: positive logits / penalty, negative * penalty (1: off)"
    )
    suppress_tokens: tuple[int, ...] = _opt((), "token ids never proposed (the mask never is)")
    guidance_scale: float = _opt(
        0.0, "classifier-free guidance w: logits = u + (w + 1)(c - u), u with the prompt masked (0: off)"
    )
    stop_at_eos: bool = _opt(True, "stop a row once its end token is committed with no hole before it")
    stop: tuple[str, ...] = _opt((), "stop strings: a row ends at the first one in its filled answer")
    seed: int | None = _opt(0, "random seed for sampling and random remasking (None: nondeterministic)")
    cache: str = _opt(
        "none",
        "approximate key/value cache (ModernBERT): none, prefix (prompt and finished blocks cached), "
        "dual (the suffix too); refreshed at every block",
        choices=CACHE_MODES,
    )
    cache_refresh: int = _opt(
        0, "with a cache: also refresh it every this many steps inside a block (0: only at a new block)"
    )

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.block_size is not None and self.block_size < 0:
            raise ValueError("block_size must be >= 0 (0 or None: the whole answer)")
        if self.remasking not in REMASKING:
            raise ValueError(f"remasking must be one of {REMASKING}, got {self.remasking!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.factor <= 0 or self.entropy_budget < 0:
            raise ValueError("factor must be > 0 and entropy_budget >= 0")
        if not self.confidence_temperature > 0:
            raise ValueError(f"confidence_temperature must be > 0, got {self.confidence_temperature}")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_k must be >= 0 and top_p in (0, 1]")
        if self.guidance_scale < 0:
            raise ValueError("guidance_scale must be >= 0")
        if not 0.0 <= self.remask_threshold < 1.0 or self.remask_budget < 0:
            raise ValueError("remask_threshold must be in [0, 1) and remask_budget >= 0")
        if self.cache_refresh < 0:
            raise ValueError(f"cache_refresh must be >= 0, got {self.cache_refresh}")
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}, got {self.cache!r}")
        if self.cache != "none" and self.guidance_scale > 0:
            raise ValueError(
                "the key/value cache does not support classifier-free guidance: use cache='none'"
            )


PRESETS: dict[str, GenerationConfig] = {
    # The inference setting published with the Diffutron checkpoints (recipe.md).
    "diffutron": GenerationConfig(
        max_new_tokens=64,
        steps=64,
        block_size=32,
        temperature=0.1,
        repetition_penalty=1.2,
        remasking="low_confidence",
    ),
    # Same, with Fast-dLLM threshold decoding: the number of passes adapts to the text. tau = 0.95: on the
    # hard testbed the fewest passes among the rules that lost no item against one token per pass, on a
    # strong model (70 % exact match, 1/11 of the passes) and a weak one; 0.9 lost items on the strong one.
    "fast": GenerationConfig(
        max_new_tokens=64,
        steps=64,
        block_size=32,
        temperature=0.1,
        repetition_penalty=1.2,
        remasking="threshold",
        threshold=0.95,
    ),
}


# What `diffutron serve` and its page decode with unless a request says otherwise: the adaptive rule
# matched the one-token-per-pass reference's exact match with ~1/10 of its passes on the hard testbed
# (docs/benchmarks.md, "Fewer passes on the hard testbed"). The CLI keeps the published `diffutron`.
SERVER_PRESET = "fast"


def preset(name: str, **overrides) -> GenerationConfig:
    """A copy of ``PRESETS[name]`` with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
