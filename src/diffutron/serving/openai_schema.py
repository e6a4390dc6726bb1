"""Request and response bodies of the OpenAI-compatible API (pydantic), and their mapping onto the engine.

    req = CompletionRequest.model_validate(body)        # raises pydantic.ValidationError on bad input
    cfgs = sampling_configs(req, limits, default_preset="diffutron")   # one GenerationConfig per choice

OpenAI's fields (``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``n``, ``seed``, ``stream``) map onto
``GenerationConfig``; the diffusion settings (``preset``, ``steps``, ``block_size``, ``remasking``,
``threshold``, ``factor``, ``entropy_budget``, ``confidence_temperature``, ``remask_threshold``,
``remask_budget``, ``repetition_penalty``, ``top_k``) are extra body fields (the ``openai`` client passes them
with ``extra_body=``). ``stream_canvas: true`` streams the whole partial canvas after every step instead
of text deltas (the page uses it). Unknown fields are rejected by name, except OpenAI fields that do not
apply to a diffusion model, which are accepted and ignored (listed in ``IGNORED``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..sampling import PRESETS, REMASKING, GenerationConfig, preset

Finite = Annotated[float, Field(allow_inf_nan=False)]
SEED_MAX = 2**63 - 1


@dataclass
class Limits:
    """What the server accepts (``diffutron serve`` flags)."""

    max_tokens: int = 512  # answer length cap
    max_n: int = 8  # choices per request
    max_steps: int = 1024  # denoising steps cap
    max_prompt_chars: int = 100_000  # before tokenizing; the context limit is checked after
    max_messages: int = 256


def _utf8(text: str) -> str:
    # a lone surrogate ("\ud800" in JSON) is valid JSON but no text: reject it here, not in the tokenizer
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text is not valid Unicode (lone surrogate)") from exc
    return text


class _Sampling(BaseModel):
    """Fields shared by every generating endpoint."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=512)
    temperature: Finite | None = Field(default=None, ge=0.0, le=10.0)
    top_p: Finite | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=-SEED_MAX, le=SEED_MAX)
    stream: bool = False
    stream_canvas: bool = False
    # diffusion settings (extra body fields)
    preset: Literal[tuple(PRESETS)] | None = None  # type: ignore[valid-type]
    steps: int | None = Field(default=None, ge=1)
    block_size: int | None = Field(default=None, ge=0)
    remasking: Literal[REMASKING] | None = None  # type: ignore[valid-type]
    threshold: Finite | None = Field(default=None, gt=0.0, le=1.0)
    factor: Finite | None = Field(default=None, gt=0.0, le=100.0)
    entropy_budget: Finite | None = Field(default=None, ge=0.0, le=100.0)
    confidence_temperature: Finite | None = Field(default=None, gt=0.0, le=100.0)
    remask_threshold: Finite | None = Field(default=None, ge=0.0, lt=1.0)
    remask_budget: int | None = Field(default=None, ge=0, le=1024)
    repetition_penalty: Finite | None = Field(default=None, gt=0.0, le=100.0)
    top_k: int | None = Field(default=None, ge=0, le=1_000_000)
    # OpenAI fields with no meaning for this server: accepted, ignored
    user: str | None = Field(default=None, max_length=512)
    stream_options: dict | None = None
    frequency_penalty: Finite | None = None
    presence_penalty: Finite | None = None
    logit_bias: dict | None = None


IGNORED = ("user", "stream_options", "frequency_penalty", "presence_penalty", "logit_bias")


class _Generating(_Sampling):
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4 or any(not s or len(s) > 256 for s in stops):
            raise ValueError("stop: at most 4 non-empty strings of at most 256 characters")
        for s in stops:
            _utf8(s)
        return v


class CompletionRequest(_Generating):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        prompts = [v] if isinstance(v, str) else v
        if not prompts or any(not p.strip() for p in prompts):
            raise ValueError("prompt must be a non-empty string (or a non-empty list of them)")
        for p in prompts:
            _utf8(p)
        return v

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return _utf8(self.content if isinstance(self.content, str) else "".join(p.text for p in self.content))


class ChatRequest(_Generating):
    messages: list[Message]
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @field_validator("messages")
    @classmethod
    def _messages(cls, v):
        if not v or not any(m.role == "user" for m in v):
            raise ValueError("messages must contain at least one user message")
        for m in v:
            m.text()
        return v


class InfillRequest(_Sampling):
    prompt: str  # a text with holes: <mask>, <mask:N>, [...], [...N]
    span: int = Field(default=2, ge=1, le=64)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        if not v.strip():
            raise ValueError("prompt must be a non-empty text with holes")
        return _utf8(v)


class BadRequest(ValueError):
    """Bad input found after schema validation (limits, settings the engine rejects)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def sampling_configs(
    req: _Sampling, limits: Limits, default_preset: str, *, stop: tuple[str, ...] = ()
) -> list[GenerationConfig]:
    """One ``GenerationConfig`` per choice; choice i samples with seed + i."""
    overrides = {
        k: getattr(req, k)
        for k in (
            "temperature",
            "top_p",
            "steps",
            "block_size",
            "remasking",
            "threshold",
            "factor",
            "entropy_budget",
            "confidence_temperature",
            "remask_threshold",
            "remask_budget",
            "repetition_penalty",
            "top_k",
        )
        if getattr(req, k) is not None
    }
    n = getattr(req, "n", 1)
    if n > limits.max_n:
        raise BadRequest(f"n must be <= {limits.max_n}, got {n}", "n")
    max_tokens = getattr(req, "max_completion_tokens", None) or getattr(req, "max_tokens", None)
    if max_tokens is not None:
        if max_tokens > limits.max_tokens:
            raise BadRequest(f"max_tokens must be <= {limits.max_tokens}, got {max_tokens}", "max_tokens")
        overrides["max_new_tokens"] = max_tokens
    if overrides.get("steps", 0) > limits.max_steps:
        raise BadRequest(f"steps must be <= {limits.max_steps}, got {overrides['steps']}", "steps")
    req_stop = getattr(req, "stop", None)
    stops = (req_stop,) if isinstance(req_stop, str) else tuple(req_stop or ()) or stop
    cfg = preset(req.preset or default_preset, **overrides)
    cfg = dataclasses.replace(cfg, stop=stops)
    if cfg.max_new_tokens > limits.max_tokens:
        cfg = dataclasses.replace(cfg, max_new_tokens=limits.max_tokens)
    try:
        cfg.validate()
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    if req.seed is None:
        return [dataclasses.replace(cfg, seed=None) for _ in range(n)]
    return [dataclasses.replace(cfg, seed=(req.seed + i) % SEED_MAX) for i in range(n)]
