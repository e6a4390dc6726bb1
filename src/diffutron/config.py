"""Typed, strict configuration: YAML maps 1:1 onto these dataclasses.

    cfg = load_config("my-config.yaml")                      # RunConfig: one training run
    cfg = from_dict(RunConfig, {"training": {"lr": 3e-4}})
    recipe = load_recipe(shipped.resolve("diffutron-0.3b"))  # RecipeConfig: stages run one after another

A run trains on packed text (``data``) or, when it has an ``sft`` section, on instruction data.
A recipe is a list of stages; each stage is a run whose model is the previous stage's output.

Unknown keys and wrong types are rejected with a message naming the key (``training.lr: expected
float, got 'fast'``). Each field is documented once, in its dataclass.
"""

from __future__ import annotations

import dataclasses
import math
import re
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
    shape: str | None = None  # the preset a `pretrained` model's shape matches: `recipe check` offline


@dataclass
class TokenizerConfig:
    path: str | None = None  # an existing tokenizer; default: the pretrained model's, or train one
    vocab_size: int = 16000
    min_frequency: int = 2
    max_documents: int | None = None  # train the tokenizer on at most this many documents
    # a trained tokenizer gets the chat markers as tokens of their own (for sft.chat_template: compact)
    chat_markers: bool = False


@dataclass
class DataConfig:
    sources: list[Any] = field(default_factory=lambda: ["embedded"])  # paths, "hub:id", dicts, "embedded"
    field: str = "text"  # the text field of jsonl / parquet / hub rows
    block_size: int = 128  # tokens per packed training sequence
    val_fraction: float = 0.02
    max_documents: int | None = None  # read at most this many documents (quick experiments)

    def __post_init__(self) -> None:
        if not self.sources:  # found by the fuzz suite: else "the data gave 0 blocks", naming nothing
            raise ConfigError(
                "data.sources is empty: list at least one corpus (a path, 'hub:<id>' or 'embedded')"
            )


@dataclass
class DiffusionConfig:
    schedule: str = "linear"  # linear | loglinear | cosine
    schedule_args: dict[str, Any] = field(default_factory=dict)
    normalization: str = "token"  # token | sequence
    stratified_t: bool = True  # systematic t (or k) over each batch: (u + i/B) mod 1, one shared offset u
    t_eps: float = 1e-3
    estimator: str = (
        "time"  # time: Bernoulli(1 - alpha(t)) masks, weight w(t) | count: k ~ U{1..n} masks, weight n/k
    )
    mode: str = "mdlm"  # mdlm (the published Diffutron) | block: BD3-LM, autoregressive over blocks (docs/block-diffusion.md)
    block_size: int | None = (
        None  # block mode: tokens per block (L'); L' = the row length is the MDLM, 1 is autoregressive
    )
    t_clip: list[float] | None = (
        None  # [beta, omega]: train on t ~ U[beta, omega] (BD3-LM's clipped levels); eval never clips
    )
    block_noise: str = (
        "block"  # block mode: block = a noise level (or count) per block, as BD3-LM | row = one per row
    )
    noised_copies: int = 1  # block mode: k noised copies per row share one clean copy ((k+1)L tokens a pass)

    def __post_init__(self) -> None:
        # checked here so a typo fails when the config loads, not at the first training step
        from .diffusion.block import check_mode
        from .diffusion.loss import check_copies
        from .diffusion.masking import check_clip

        try:
            check_mode(self.mode, self.block_size)
            if self.t_clip is not None:
                check_clip(self.t_clip)
            if self.block_noise not in ("block", "row"):
                raise ValueError(f"block_noise must be 'block' or 'row', got {self.block_noise!r}")
            check_copies(self.noised_copies, self.block_size if self.mode == "block" else None)
        except ValueError as exc:
            raise ConfigError(f"diffusion: {exc}") from None
        if self.mode == "mdlm" and self.block_size is not None:
            raise ConfigError(
                "diffusion.block_size is set but diffusion.mode is 'mdlm': set mode: block, or drop it"
            )


@dataclass
class SftSourceConfig:
    """One source of instruction data: exactly one of ``path``, ``hub`` or ``builtin``."""

    path: str | None = None  # a local .jsonl[.gz] / .json / .parquet file
    hub: str | None = None  # a Hugging Face dataset id (streamed)
    builtin: str | None = None  # an offline set derived at run time (see data.sft.BUILTIN_SOURCES)
    name: str | None = None  # hub dataset config name
    split: str = "train"  # hub split
    revision: str | None = None  # hub revision (a commit sha pins the data)
    format: str = "auto"  # auto | alpaca | messages | qa
    fields: dict[str, str] = field(default_factory=dict)  # canonical name -> column, e.g. {output: cevap}
    system: str | None = None  # system prompt for rows without one (wins over sft.system)
    weight: float = 1.0  # rows per epoch = weight x training rows (<1: a seeded subset, >1: repeats)
    max_rows: int | None = None  # read at most this many rows
    optional: bool = False  # skip with a warning when unavailable (a missing optional package)


@dataclass
class SftConfig:
    """Instruction data: conversations rendered with the chat template into fixed-length rows
    (prompt | answer | end-token padding); only the answer and its padding are masked and scored."""

    sources: list[SftSourceConfig | str] = field(default_factory=list)  # dicts, "hub:id", "builtin:x", paths
    max_length: int = 256  # tokens per row: prompt + answer + end-token padding
    too_long: str = "drop"  # drop | truncate (cuts the answer, never the prompt); counted either way
    val_fraction: float = 0.1  # held out per source before mixing
    seed: int = 42  # the held-out split and the mixture draw
    # diffutron (the BERT-style default) | compact (markers as tokens: text/chat.py) | tokenizer | Jinja
    chat_template: str = "diffutron"
    system: str | None = None  # default system prompt for every source
    # share of this stage's training rows replayed from the previous SFT stage's sources (forgetting):
    # 0.3 = 30 % of the mixture; the pipeline fills replay_sources from the stage before
    replay: float = 0.0
    replay_sources: list[SftSourceConfig | str] = field(default_factory=list)


@dataclass
class LoraConfig:
    """LoRA adapters (``models.lora.apply_lora``); the defaults are the published CPT setting."""

    enabled: bool = False
    r: int = 256
    alpha: int = 256
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["Wqkv", "Wo", "Wi"])
    merge: bool = True  # fold adapters into the weights of the final model


PRECISIONS = ("auto", "fp32", "no", "bf16", "fp16")


@dataclass
class TrainingConfig:
    max_steps: int = 1000  # optimiser steps of the whole run
    epochs: float | None = None  # passes over the training rows; sets max_steps when given
    max_minutes: float | None = None  # time budget: the run is resized to fit after a few steps
    batch_size: int = 16  # sequences per micro-batch per process
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    warmup_ratio: float | None = None  # warmup as a share of the run's steps (wins over warmup_steps)
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
    precision: str = "auto"  # auto (bf16 on GPUs and on CPUs with AMX/AVX512-BF16, else fp32; logged) | fp32 (alias: no) | bf16 | fp16
    gradient_checkpointing: bool = (
        False  # recompute activations in backward (transformers'): less memory, more time
    )
    compile: bool | str = (
        "auto"  # torch.compile the encoder: true | false | auto (one CUDA device; off on CPU: it does not pay back)
    )
    max_logit_elements: int | None = (
        None  # logits per chunk of the head (rows x vocabulary); none: models.heads.MAX_LOGIT_ELEMENTS (32M)
    )

    def __post_init__(self) -> None:
        # found by the fuzz suite: a batch of -1 sequences failed deep inside torch.cat, naming nothing
        for key in ("batch_size", "grad_accum", "max_logit_elements"):
            value = getattr(self, key)
            if isinstance(value, int) and value < 1:
                raise ConfigError(f"training.{key} must be at least 1, got {value}")
        for key in ("epochs", "max_minutes"):  # inf epochs overflowed while sizing the run
            value = getattr(self, key)
            if isinstance(value, int | float) and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"training.{key} must be a positive finite number, got {value}")
        if self.precision not in PRECISIONS:  # else accelerate failed at the start of the run
            raise ConfigError(
                f"training.precision: expected one of {' | '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.precision == "fp32":
            self.precision = "no"  # accelerate's name for it; a run saved with either resumes with the other
        if self.compile not in (True, False, "auto"):  # a number YAML read comes back as text: "3"
            raise ConfigError(f"training.compile: expected true | false | auto, got {self.compile!r}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sft: SftConfig | None = None  # instruction tuning: rows come from here and `data` is not read
    language: str = "tr"  # the language pack (diffutron.languages): what `embedded` and builtin sets mean

    def __post_init__(self) -> None:
        from .languages import localize

        localize(self.language, self.data, self.sft)


@dataclass
class StageConfig:
    """One stage of a recipe: a run whose model is the previous stage's output (LoRA merged)."""

    name: str = ""  # unique; the stage's folder under the recipe's output folder
    data: DataConfig | None = None  # pre-training text (packed blocks) ...
    sft: SftConfig | None = None  # ... or instruction data: exactly one of the two
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)


@dataclass
class RecipeConfig:
    """A whole progression, e.g. continual pre-training -> general -> task-specific instruction tuning."""

    name: str = "recipe"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)  # the first stage's starting point
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)  # the first stage's tokenizer
    defaults: dict[str, Any] = field(default_factory=dict)  # stage sections every stage starts from
    stages: list[StageConfig] = field(default_factory=list)
    language: str = "tr"  # the language pack of every stage (see RunConfig.language)

    def __post_init__(self) -> None:
        from .languages import localize

        for stage in self.stages:
            localize(self.language, stage.data, stage.sft)


STAGE_SECTIONS = ("data", "sft", "diffusion", "lora", "training")
_YAML_WORDS = {False: "no", True: "yes"}
_STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
        key_tp, item_tp = typing.get_args(tp) or (Any, Any)
        return {_check(k, key_tp, where): _check(v, item_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str and isinstance(value, int):
        # YAML 1.1 (PyYAML, also for --set) reads unquoted no/off/false, yes/on/true as booleans and 42
        # as a number; a text field takes them back as text. The word is lost: off arrives as "no".
        return _YAML_WORDS[value] if isinstance(value, bool) else str(value)
    if tp is str and isinstance(value, float):  # its text is lost (1e3, 1.50): only quoting keeps it
        raise ConfigError(f"{where}: expected str, got the number {value!r}; quote it to keep it as text")
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


def _read_yaml_file(path: str | Path, what: str, top_level: str) -> tuple[Path, dict[str, Any]]:
    """The mapping at the top of a YAML file, with errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping ({top_level})")
    return path, data


def load_config(path: str | Path, cls: type[T] = RunConfig) -> T:
    path, data = _read_yaml_file(path, "config", "of sections")
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def recipe_from_dict(data: dict[str, Any]) -> RecipeConfig:
    """Build a recipe: each stage's sections start from ``defaults`` (key by key, the stage wins);
    then the whole is checked (unique stage names, one kind of data per stage)."""
    data = dict(data)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"defaults: expected a mapping of stage sections, got {defaults!r}")
    for key, value in defaults.items():
        if key not in STAGE_SECTIONS:
            raise ConfigError(f"unknown config key 'defaults.{key}'; known keys here: {list(STAGE_SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"defaults.{key}: expected a mapping, got {value!r}")
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError("stages: a recipe needs a non-empty list of stages")
    merged = []
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise ConfigError(f"stages[{i}]: expected a mapping, got {stage!r}")
        stage = dict(stage)
        for key, value in defaults.items():
            if key in ("data", "sft") and key not in stage:
                continue  # a default data section must not turn an SFT stage into a pre-training one
            if isinstance(stage.get(key, {}), dict):
                stage[key] = {**value, **(stage.get(key) or {})}
        merged.append(stage)
    recipe = from_dict(RecipeConfig, {**data, "stages": merged})
    validate_recipe(recipe)
    return recipe


def validate_recipe(recipe: RecipeConfig) -> None:
    seen: set[str] = set()
    for i, stage in enumerate(recipe.stages):
        where = f"stages[{i}]"
        if not stage.name or not _STAGE_NAME.match(stage.name):
            raise ConfigError(f"{where}.name: give each stage a name of letters, digits, '-', '_' or '.'")
        if stage.name in seen:
            raise ConfigError(f"{where}.name: stage name {stage.name!r} is used twice")
        seen.add(stage.name)
        if (stage.data is None) == (stage.sft is None):
            raise ConfigError(f"stage {stage.name!r}: give exactly one of `data` (pre-training) or `sft`")
        if stage.sft is not None and not stage.sft.sources:
            raise ConfigError(f"stage {stage.name!r}: sft.sources is empty")


def load_recipe(path: str | Path) -> RecipeConfig:
    path, data = _read_yaml_file(path, "recipe", "name, model, stages, ...")
    try:
        return recipe_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
