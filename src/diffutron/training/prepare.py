"""Build the components of a run from its config: tokenizer, training rows, model.

Each function does one thing and is reused by every recipe (quickstart, train, the staged pipeline).
``prepare_data`` is where a run's kind is decided: packed text blocks (pre-training, every position
maskable) or instruction rows (SFT, only answer positions maskable). Both come back as ``TrainData``,
fixed-length rows the one training loop consumes alike.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer, ModernBertForMaskedLM, PreTrainedModel

from ..config import DataConfig, ModelConfig, RunConfig, SftConfig, TokenizerConfig
from ..data import DataReport, build_blocks, iter_documents, train_val_split
from ..data.sft import answer_maskable, build_sft_data
from ..models.checkpoint import _ensure_tokens, load_checkpoint
from ..models.presets import preset_config
from ..text.chat import add_chat_markers, install_chat_template
from ..text.tokenizer import ensure_special_tokens, train_tokenizer

log = logging.getLogger(__name__)


def iter_corpus(data: DataConfig, report: DataReport, limit: int | None = None) -> Iterator[str]:
    """All documents of all sources, in order, at most ``limit`` (or data.max_documents)."""
    docs = itertools.chain.from_iterable(
        iter_documents(src, report, field=data.field) for src in data.sources
    )
    cap = (
        min(x for x in (limit, data.max_documents) if x is not None)
        if (limit or data.max_documents)
        else None
    )
    return itertools.islice(docs, cap) if cap is not None else docs


def prepare_tokenizer(
    tok: TokenizerConfig, model: ModelConfig, data: DataConfig, out_dir: Path, block_size: int
):
    """An existing tokenizer (config path, else the pretrained model's) or a new BPE trained on the data."""
    source = tok.path or model.pretrained
    if source is None and (out_dir / "tokenizer" / "tokenizer.json").exists():
        source = str(out_dir / "tokenizer")  # trained by an earlier attempt of this run: reuse it (resume)
    if source is not None:
        tokenizer = AutoTokenizer.from_pretrained(source)
        ensure_special_tokens(tokenizer)
        return tokenizer
    report = DataReport()
    tokenizer = train_tokenizer(
        iter_corpus(data, report, tok.max_documents),
        vocab_size=tok.vocab_size,
        min_frequency=tok.min_frequency,
        model_max_length=max(512, block_size),
    )
    if tok.chat_markers:  # for sft.chat_template: compact (text/chat.py)
        add_chat_markers(tokenizer)
    tokenizer.save_pretrained(out_dir / "tokenizer")
    return tokenizer


def prepare_blocks(data: DataConfig, tokenizer, cache_dir: Path) -> tuple[np.ndarray, DataReport]:
    """Packed [n_blocks, block_size] token ids, cached on disk under a key of data config + tokenizer."""
    key = hashlib.sha1(
        json.dumps(
            [
                data.sources,
                data.field,
                data.block_size,
                data.max_documents,
                len(tokenizer),
                tokenizer.backend_tokenizer.to_str()[:100_000],
            ],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:16]
    cache = cache_dir / f"blocks-bos-{key}.npy"  # "bos": documents framed <bos> ... <eos> (text.bos)
    report = DataReport()
    blocks = build_blocks(iter_corpus(data, report), tokenizer, data.block_size, cache_path=cache)
    return blocks, report


def split_blocks(blocks: np.ndarray, data: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if len(blocks) < 2:
        raise ValueError(
            f"the data gave {len(blocks)} block(s) of {data.block_size} tokens: too little to train and validate"
        )
    return train_val_split(len(blocks), data.val_fraction, seed)


@dataclass
class TrainData:
    """Fixed-length token rows and what the loop needs to know about them."""

    rows: np.ndarray  # [N, L] token ids (int32, possibly memory-mapped)
    train_idx: np.ndarray  # rows of one epoch (repeats allowed: SFT mixture weights)
    val_idx: np.ndarray  # held-out rows; the loop validates on the first `eval_blocks`
    kind: str = "pretrain"  # pretrain | sft
    prompt_lengths: np.ndarray | None = None  # SFT: positions before this are prompt, never masked
    answer_lengths: np.ndarray | None = None  # SFT: answer tokens incl. the first end token
    report_text: str = ""  # human-readable data report ("" when there is nothing to say)
    report: dict[str, Any] | None = None

    @property
    def length(self) -> int:
        return int(self.rows.shape[1])

    def maskable(self, idx: np.ndarray) -> np.ndarray:
        """[len(idx), L] bool: where the forward process may mask (and the loss scores)."""
        if self.prompt_lengths is None:
            return np.ones((len(idx), self.length), dtype=bool)
        return answer_maskable(self.prompt_lengths[idx], self.length)


def prepare_chat_template(sft: SftConfig, tokenizer) -> None:
    """The template the SFT rows are rendered with goes into the tokenizer (and so into the model
    folder), so ``apply_chat_template`` at inference builds exactly the prompts training saw."""
    if sft.chat_template == "tokenizer":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("sft.chat_template: tokenizer, but this tokenizer has no chat template")
        return
    install_chat_template(tokenizer, sft.chat_template)  # a name (diffutron, compact) or Jinja


def prepare_data(cfg: RunConfig, tokenizer, cache_dir: Path, seed: int) -> TrainData:
    """Packed blocks for a pre-training run, rendered instruction rows for an SFT run."""
    if cfg.sft is not None:
        sft = build_sft_data(cfg.sft, tokenizer, cache_dir)
        if len(sft.val_idx) == 0:
            raise ValueError(
                "the SFT data has no held-out rows: set sft.val_fraction > 0 (validation needs them)"
            )
        if len(sft.train_idx) == 0:
            raise ValueError("the SFT data has no training rows:\n" + sft.report.summary())
        return TrainData(
            rows=sft.ids,
            train_idx=sft.train_idx,
            val_idx=sft.val_idx,
            kind="sft",
            prompt_lengths=sft.prompt_lengths,
            answer_lengths=sft.answer_lengths,
            report_text=sft.report.summary(),
            report=sft.report.to_dict(),
        )
    blocks, report = prepare_blocks(cfg.data, tokenizer, cache_dir)
    train_idx, val_idx = split_blocks(blocks, cfg.data, seed)
    return TrainData(
        rows=blocks,
        train_idx=train_idx,
        val_idx=val_idx,
        report_text=report.summary() if report.documents else "",
        report=report.to_dict() if report.documents else None,
    )


def build_model(model: ModelConfig, tokenizer) -> PreTrainedModel:
    if model.pretrained:
        loaded = load_checkpoint(model.pretrained)
        net = loaded.model
        net.train()
        return net
    if not model.preset:
        raise ValueError("model: set either `preset` or `pretrained`")
    net = ModernBertForMaskedLM(preset_config(model.preset, tokenizer, **model.overrides))
    _ensure_tokens(net, tokenizer)
    return net
