"""Typed, strict configuration: YAML maps 1:1 onto these dataclasses.

    cfg = load_config("configs/pretrain-tiny.yaml")     # RunConfig
    cfg = from_dict(RunConfig, {"training": {"lr": 3e-4}})

Unknown keys and wrong types are rejected with a message naming the key (``training.lr: expected
float, got 'fast'``). Each field is documented once, in its dataclass.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


@dataclass
class ModelConfig:
    preset: str | None = "tiny"  # build a fresh ModernBERT of this shape (see models.presets) ...
    pretrained: str | None = None  # ... or start from a checkpoint folder / hub id (wins over preset)
    overrides: dict[str, Any] = field(default_factory=dict)  # ModernBertConfig fields for a preset


@dataclass
class TokenizerConfig:
    path: str | None = None  # an existing tokenizer; default: the pretrained model's, or train one
    vocab_size: int = 16000
    min_frequency: int = 2
    max_documents: int | None = None  # train the tokenizer on at most this many documents


@dataclass
class DataConfig:
    sources: list[Any] = field(default_factory=lambda: ["embedded"])  # paths, "hub:id", dicts, "embedded"
    field: str = "text"  # the text field of jsonl / parquet / hub rows
    block_size: int = 128  # tokens per packed training sequence
    val_fraction: float = 0.02
    max_documents: int | None = None  # read at most this many documents (quick experiments)


@dataclass
class DiffusionConfig:
    schedule: str = "linear"  # linear | loglinear | cosine
    schedule_args: dict[str, Any] = field(default_factory=dict)
    normalization: str = "token"  # token | sequence
    antithetic: bool = True  # stratified t over each batch
    t_eps: float = 1e-3


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 256
    alpha: int = 256
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["Wqkv", "Wo", "Wi"])
    merge: bool = True  # fold adapters into the weights of the final model


@dataclass
class TrainingConfig:
    max_steps: int = 1000  # optimiser steps of the whole run
    max_minutes: float | None = None  # time budget: the run is resized to fit after a few steps
    batch_size: int = 16  # sequences per micro-batch per process
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_blocks: int = 64
    eval_t_samples: int = 4
    save_every: int = 200
    keep_last: int = 2
    log_every: int = 10
    seed: int = 0
    precision: str = "auto"  # auto (bf16 on GPUs, fp32 on CPU) | no | bf16 | fp16


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)


def _check(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            path = f"{where}.{key}" if where else key
            raise ConfigError(f"unknown config key {path!r}; known keys here: {sorted(names)}")
    kwargs = {k: _check(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def load_config(path: str | Path, cls: type[T] = RunConfig) -> T:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
