"""The checkpoint format: a standard ``transformers`` model folder plus the diffusion settings.

    save_checkpoint(out_dir, model, tokenizer, settings)   # safetensors + tokenizer + diffusion_config.json
    loaded = load_checkpoint("path/or/hub-id")              # -> Loaded(model, tokenizer, settings)
    loaded = load_for_inference(path, device="auto", dtype="auto")   # the commands' --device/--dtype

A folder written here loads with ``AutoModelForMaskedLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` as well. ``load_checkpoint`` also takes any masked LM from the hub
(``jhu-clsp/mmBERT-base``, ``diffutron/DiffutronLM-0.3B-Instruct``): a missing mask or pad token is
added (and the embeddings resized), and missing diffusion settings fall back to the defaults
(linear schedule, the recipe's choice) with a note. The schedule saved here is the one training used,
and the one sampling and likelihood evaluation will use.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel

from ..diffusion.block import attach_block_size, check_mode
from ..diffusion.schedules import Schedule, get_schedule
from ..hardware import cpu_bf16_units
from ..io import atomic_dir, atomic_write_json

log = logging.getLogger(__name__)
SETTINGS_FILE = "diffusion_config.json"
FORMAT_VERSION = 1


@dataclass
class DiffusionSettings:
    """What a sampler or evaluator must know beyond the transformer: how the model was noised."""

    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "linear"})
    mask_token_id: int | None = None
    normalization: str = "token"
    t_eps: float = 1e-3
    context_length: int | None = None  # tokens per training row (block / SFT length): perplexity windows
    mode: str = "mdlm"  # mdlm | block: how the model was trained, so it samples and scores the same way
    block_size: int | None = None  # block mode: tokens per diffusion block
    format_version: int = FORMAT_VERSION

    def make_schedule(self) -> Schedule:
        return get_schedule(dict(self.schedule))

    @property
    def diffusion_block(self) -> int | None:
        """The block size the loss, likelihood and sampler run with: ``None`` for an MDLM."""
        return int(self.block_size) if self.mode == "block" else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            log.warning(
                "ignoring unknown diffusion settings %s (written by a newer version?)", sorted(unknown)
            )
        version = data.get("format_version", 0)
        if version < FORMAT_VERSION:
            log.warning("upgrading diffusion settings from format %s to %s", version, FORMAT_VERSION)
        return cls(**{k: v for k, v in data.items() if k in known and k != "format_version"})


@dataclass
class Loaded:
    model: PreTrainedModel
    tokenizer: Any
    settings: DiffusionSettings
    source: str = ""

    @property
    def mask_id(self) -> int:
        return int(self.settings.mask_token_id)


def save_checkpoint(
    out_dir: str | Path,
    model: PreTrainedModel,
    tokenizer,
    settings: DiffusionSettings,
    extra_files: dict[str, Any] | None = None,
) -> Path:
    """Write model (safetensors), tokenizer and settings to ``out_dir`` atomically."""
    if hasattr(model, "merge_and_unload"):
        raise ValueError(
            "save_checkpoint expects a plain model: merge LoRA adapters first (models.lora.merge_lora)"
        )
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / SETTINGS_FILE, asdict(settings))
        for name, data in (extra_files or {}).items():
            atomic_write_json(tmp / name, data)
    return out_dir


def _ensure_tokens(model: PreTrainedModel, tokenizer) -> list[str]:
    from ..text.tokenizer import ensure_special_tokens

    n_model = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > n_model and not _is_added_only(tokenizer, n_model):
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary holds {n_model}: "
            "they come from different models (pass the tokenizer that was trained with this model)"
        )
    added = ensure_special_tokens(tokenizer)
    if len(tokenizer) > n_model:
        model.resize_token_embeddings(len(tokenizer))
        log.warning("added %s to the tokenizer and resized the embeddings to %d", added, len(tokenizer))
    return added


def _is_added_only(tokenizer, n_model: int) -> bool:
    # A vocabulary larger than the model is fine only if the excess are tokens added on top (resizable).
    base = getattr(tokenizer, "vocab_size", len(tokenizer))
    return base <= n_model


QUIET_BARS = ("Loading weights",)  # transformers' per-tensor bar: noise on every command, not progress


@contextlib.contextmanager
def quiet_weight_loading():
    """Hide ``transformers``' "Loading weights" bar unless debug logging is on (``diffutron -v``);
    download bars of the hub stay (they are real progress on a slow network)."""
    from transformers.utils import logging as hf_logging

    set_hook = getattr(hf_logging, "set_tqdm_hook", None)
    if set_hook is None or logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    previous = getattr(hf_logging, "_tqdm_hook", None)

    def hook(factory, args, kwargs):
        if kwargs.get("desc") in QUIET_BARS:
            kwargs = {**kwargs, "disable": True}
        return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

    set_hook(hook)
    try:
        yield
    finally:
        set_hook(previous)


def load_checkpoint(
    name_or_path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
) -> Loaded:
    """Load any masked LM (local folder or hub id) with its tokenizer and diffusion settings."""
    src = str(name_or_path)
    local = Path(src)
    if local.exists() and not (local / "config.json").exists():
        raise FileNotFoundError(f"{local} has no config.json: not a model folder (did training finish?)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, revision=revision)
    except Exception as exc:  # noqa: BLE001 - a missing, truncated or foreign tokenizer: many types
        raise ValueError(f"{src}: the tokenizer does not load ({type(exc).__name__}: {_first_line(exc)})") from exc
    try:
        with quiet_weight_loading():
            model = AutoModelForMaskedLM.from_pretrained(src, revision=revision, dtype=dtype)
    except OSError as exc:
        raise FileNotFoundError(f"{src}: the model does not load ({_first_line(exc)})") from exc
    except Exception as exc:  # noqa: BLE001 - safetensors, config and architecture errors have many types
        raise ValueError(
            f"{src} does not hold a masked language model usable for diffusion "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    _ensure_tokens(model, tokenizer)
    settings_path = local / SETTINGS_FILE if local.exists() else None
    if settings_path is not None and settings_path.exists():
        try:
            settings = DiffusionSettings.from_dict(json.loads(settings_path.read_text(encoding="utf-8")))
            settings.make_schedule()
            check_mode(settings.mode, settings.block_size)
        except Exception as exc:  # noqa: BLE001 - broken JSON, wrong types, unknown schedule
            raise ValueError(f"{settings_path}: unreadable diffusion settings ({_first_line(exc)})") from exc
    else:
        settings = _hub_settings(src, revision)
    if settings.mask_token_id is None:
        settings.mask_token_id = tokenizer.mask_token_id
    if settings.mask_token_id != tokenizer.mask_token_id:
        raise ValueError(
            f"{src}: diffusion settings say mask id {settings.mask_token_id}, tokenizer says "
            f"{tokenizer.mask_token_id}: the tokenizer does not belong to this checkpoint"
        )
    attach_block_size(model, settings.diffusion_block)
    model.eval()
    if device is not None:
        model.to(device)
    return Loaded(model=model, tokenizer=tokenizer, settings=settings, source=src)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """The ``--device`` and ``--dtype`` of ``generate``, ``eval``, ``perplexity`` and ``serve``.
    ``auto`` device: cuda when available, else cpu. ``auto`` dtype: bf16 on CUDA and on a CPU with
    usable bf16 units (AMX or AVX512-BF16, ``hardware.cpu_bf16_units``), fp32 elsewhere: without the
    units bf16 runs ~20x slower, with them bf16 weights ran the published shape 2-5x faster than fp32
    (docs/benchmarks.md, "bf16 on CPUs"). The choice and its reason are logged."""
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"--device {device!r} is not a torch device (auto, cpu, cuda, cuda:1)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available here (use --device cpu or auto)")
        if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: there are {torch.cuda.device_count()} CUDA devices")
    if dtype == "auto":
        if dev.type == "cuda":
            return dev, torch.bfloat16
        if dev.type == "cpu":
            units = cpu_bf16_units()
            chosen = torch.bfloat16 if units else torch.float32
            log.info("--dtype auto: %s weights on the CPU (%s)", "bf16" if units else "fp32", units.why)
            return dev, chosen
        return dev, torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: choose auto, {', '.join(DTYPES)}")
    return dev, DTYPES[dtype]


def load_for_inference(
    name_or_path: str | Path, *, device: str = "auto", dtype: str = "auto", revision: str | None = None
) -> Loaded:
    """``load_checkpoint`` on the device and in the dtype of ``resolve_device_dtype`` (the weights
    themselves in bf16/fp16, not autocast: half the memory and traffic). On CUDA, TF32 is enabled
    for what still multiplies in float32 (``--dtype fp32``)."""
    dev, dt = resolve_device_dtype(device, dtype)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return load_checkpoint(name_or_path, device=dev, dtype=dt, revision=revision)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:limit]


def _hub_settings(src: str, revision: str | None) -> DiffusionSettings:
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(src, SETTINGS_FILE, revision=revision)
        return DiffusionSettings.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except Exception:  # noqa: BLE001 - any hub/offline failure means "no settings file": use defaults
        log.info("%s has no %s; using the default diffusion settings (linear schedule)", src, SETTINGS_FILE)
        return DiffusionSettings()
