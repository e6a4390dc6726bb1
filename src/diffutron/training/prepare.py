"""Build the components of a run from its config: tokenizer, packed data blocks, model.

Each function does one thing and is reused by every recipe (quickstart, train, the staged pipeline).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer, ModernBertForMaskedLM, PreTrainedModel

from ..config import DataConfig, ModelConfig, TokenizerConfig
from ..data import DataReport, build_blocks, iter_documents, train_val_split
from ..models.checkpoint import _ensure_tokens, load_checkpoint
from ..models.presets import preset_config
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
    cache = cache_dir / f"blocks-{key}.npy"
    report = DataReport()
    blocks = build_blocks(iter_corpus(data, report), tokenizer, data.block_size, cache_path=cache)
    return blocks, report


def split_blocks(blocks: np.ndarray, data: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if len(blocks) < 2:
        raise ValueError(
            f"the data gave {len(blocks)} block(s) of {data.block_size} tokens: too little to train and validate"
        )
    return train_val_split(len(blocks), data.val_fraction, seed)


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
