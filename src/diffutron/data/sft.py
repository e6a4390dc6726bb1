"""Instruction data (SFT): conversations -> fixed-length rows with a prompt that is never masked.

What it is: the data component of an instruction-tuning stage. It reads rows from local files, hub
datasets or offline sets built at run time, turns each into a conversation, renders it with the chat
template, and writes one fixed-length row per conversation::

    [<bos>] prompt tokens | answer tokens | <eos> <eos> ... <eos>      (max_length tokens, all attended)
    maskable:  False ...  | True ...                                   (position >= prompt length)

How to use it::

    from diffutron.config import SftConfig
    from diffutron.data.sft import build_sft_data

    data = build_sft_data(SftConfig(sources=["data/pairs.jsonl"], max_length=256), tokenizer)
    data.ids[data.train_idx], data.prompt_lengths, data.report.summary()

Row formats (``format: auto`` detects one per source from its first row; column names are matched
case-insensitively, and ``fields`` maps a canonical name to another column):

* ``alpaca``: ``instruction``, optional ``input``, ``output`` (LlamaTurk). User turn = instruction,
  plus ``"\\n\\n" + input`` when there is one; assistant turn = output.
* ``messages``: a list of ``{role, content}`` (or ShareGPT ``{from, value}``); every message before
  the last assistant message is prompt (multi-turn), the last assistant message is the target.
* ``qa``: ``question``/``answer`` (also prompt/response, prompt/completion, input/output, soru/cevap).

Masking rules (``docs/instruction-tuning.md``): the prompt is never masked and never scored; the
answer is right-padded with the end token and the padding is part of the answer (the model learns to
stop by filling the tail with end tokens); a row longer than ``max_length`` is dropped or has its
answer truncated (``too_long``), a prompt is never cut, and every case is counted in the report.

Splits and mixtures: each source is split into train / held-out rows (``val_fraction``, ``seed``)
*before* mixing, so no held-out row is ever trained on, however often its source is repeated. A
source's ``weight`` sets how many rows it gives per epoch: ``weight x`` its training rows (a seeded
subset below 1, whole repeats plus a seeded subset above 1).

What it does not know: quality, language or duplicates of the rows; the offline ``builtin`` sets are
small derived tasks for demos and tests, not a substitute for real instruction data.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
import importlib.util
import json
import logging
import os
import random
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffutron.config import SftConfig, SftSourceConfig, from_dict
from diffutron.data import skills as _skills
from diffutron.data.sources import DataReport, embedded_corpus
from diffutron.languages import LANGUAGES, LanguagePack
from diffutron.text.bos import with_bos
from diffutron.text.chat import check_messages, format_chat, prompt_and_answer, render_with
from diffutron.text.normalize import normalize

__all__ = [
    "BUILTIN_SOURCES",
    "FORMATS",
    "TOO_LONG",
    "SftData",
    "SftReport",
    "SourceStats",
    "answer_maskable",
    "as_source",
    "build_sft_data",
    "encode_conversations",
    "iter_conversations",
    "register_builtin",
    "row_to_messages",
]

log = logging.getLogger(__name__)

FORMATS = ("auto", "alpaca", "messages", "qa")
TOO_LONG = ("drop", "truncate")
_ALIASES: dict[str, tuple[str, ...]] = {
    "messages": ("messages", "conversations", "conversation"),
    "instruction": ("instruction", "talimat"),
    "input": ("input", "context", "girdi"),
    "output": ("output", "response", "cikti", "çıktı"),
    "question": ("question", "prompt", "query", "input", "soru"),
    "answer": ("answer", "response", "completion", "output", "cevap", "yanit", "yanıt"),
    "system": ("system", "system_prompt"),
}
_ROLE_NAMES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
}
_TOKENIZE_BATCH = 512


# ---------------------------------------------------------------------------------------------
# Sources: spec -> raw rows
# ---------------------------------------------------------------------------------------------


def as_source(spec: SftSourceConfig | dict | str) -> SftSourceConfig:
    """A source spec as a dataclass: ``"hub:id"``, ``"builtin:name"``, a path string or a mapping."""
    if isinstance(spec, SftSourceConfig):
        source = spec
    elif isinstance(spec, dict):
        source = from_dict(SftSourceConfig, spec, "source")
    elif isinstance(spec, str) and spec.startswith("hub:"):
        source = SftSourceConfig(hub=spec[4:])
    elif isinstance(spec, str) and spec.startswith("builtin:"):
        source = SftSourceConfig(builtin=spec[8:])
    elif isinstance(spec, str):
        source = SftSourceConfig(path=spec)
    else:
        raise ValueError(f"an SFT source is a mapping or a string, got {spec!r}")
    given = [k for k in ("path", "hub", "builtin") if getattr(source, k)]
    if len(given) != 1:
        raise ValueError(f"an SFT source needs exactly one of path, hub or builtin; got {given or 'none'}")
    if source.format not in FORMATS:
        raise ValueError(
            f"SFT source {label(source)}: format must be one of {FORMATS}, got {source.format!r}"
        )
    if source.weight < 0:
        raise ValueError(f"SFT source {label(source)}: weight must be >= 0, got {source.weight}")
    if source.builtin and source.builtin not in BUILTIN_SOURCES:
        raise ValueError(
            f"unknown builtin SFT source {source.builtin!r}; available: {sorted(BUILTIN_SOURCES)}"
        )
    unknown = set(source.fields) - set(_ALIASES)
    if unknown:
        raise ValueError(
            f"SFT source {label(source)}: unknown fields {sorted(unknown)}; known: {sorted(_ALIASES)}"
        )
    return source


def label(source: SftSourceConfig) -> str:
    if source.hub:
        return f"hub:{source.hub}" + (f"/{source.name}" if source.name else "") + f"[{source.split}]"
    if source.builtin:
        return f"builtin:{source.builtin}"
    return str(source.path)


def _iter_raw(source: SftSourceConfig, report: DataReport) -> Iterator[tuple[int, Any]]:
    """(where, raw row) of a source: the file line for JSONL, else the 1-based row number; bad
    records are reported and skipped."""
    name = label(source)
    report.sources.append(name)
    if source.builtin:
        numbered: Iterator[tuple[int, Any]] = enumerate(BUILTIN_SOURCES[source.builtin](), start=1)
    elif source.hub:
        import datasets  # seconds to import; only hub sources pay for it

        numbered = enumerate(
            datasets.load_dataset(
                source.hub, source.name, split=source.split, streaming=True, revision=source.revision
            ),
            start=1,
        )
    else:
        numbered = _iter_file(Path(source.path), report)
    for n, row in numbered:
        report.records += 1
        yield n, row


def _iter_file(path: Path, report: DataReport) -> Iterator[tuple[int, Any]]:
    """(where, row) of a file. JSONL counts file lines, blank and bad ones included, so a problem
    is reported at the line an editor shows; a JSON list or a parquet file counts rows."""
    if not path.exists():
        raise FileNotFoundError(f"SFT data source not found: {path}")
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    report.add_problem(str(path), n, "bad_json", f"{exc.msg} at column {exc.colno}")
                    continue
                yield n, row
    elif name.endswith(".json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):  # {"data": [...]} and similar: the one list inside
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise ValueError(f"{path}: expected a JSON list of rows (or an object holding one list)")
            data = lists[0]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of rows")
        yield from enumerate(data, start=1)
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        yield from enumerate((row for batch in batches for row in batch.to_pylist()), start=1)
    else:
        raise ValueError(f"unsupported SFT file type: {path} (.jsonl, .jsonl.gz, .json, .parquet)")


# ---------------------------------------------------------------------------------------------
# Rows -> conversations
# ---------------------------------------------------------------------------------------------


class BadRow(ValueError):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


def _column(row: dict, canonical: str, fields: dict[str, str]) -> str | None:
    """The row's column for a canonical name: ``fields`` first, then the aliases, case-insensitively."""
    names = (fields[canonical],) if canonical in fields else _ALIASES[canonical]
    lower = {k.lower(): k for k in row}
    for n in names:
        if n in row:
            return n
        if n.lower() in lower:
            return lower[n.lower()]
    return None


def detect_format(row: Any, fields: dict[str, str]) -> str:
    if not isinstance(row, dict):
        raise BadRow("bad_json", f"expected a JSON object per row, got {type(row).__name__}")
    if _column(row, "messages", fields):
        return "messages"
    if _column(row, "instruction", fields) and _column(row, "output", fields):
        return "alpaca"
    if _column(row, "question", fields) and _column(row, "answer", fields):
        return "qa"
    raise BadRow(
        "missing_field",
        f"cannot tell the row format from its columns {sorted(row)}: expected messages, "
        "instruction/input/output or question/answer (set `format` and `fields`)",
    )


def _text(row: dict, canonical: str, fields: dict[str, str], required: bool = True) -> str:
    col = _column(row, canonical, fields)
    value = row.get(col) if col is not None else None
    if value is None:
        if required:
            raise BadRow("missing_field", f"no {canonical!r} column (columns: {sorted(row)})")
        return ""
    if not isinstance(value, str):
        raise BadRow("not_string", f"{col!r} is {type(value).__name__}, not a string")
    return normalize(value).strip()


def row_to_messages(
    row: Any, fmt: str, fields: dict[str, str] | None = None, system: str | None = None
) -> list[dict[str, str]]:
    """One raw row as a conversation ending with the assistant message to learn. Raises ``BadRow``."""
    fields = fields or {}
    if fmt == "auto":
        fmt = detect_format(row, fields)
    if not isinstance(row, dict):
        raise BadRow("bad_json", f"expected a JSON object per row, got {type(row).__name__}")
    if fmt == "messages":
        messages = _messages(row[_column(row, "messages", fields) or "messages"])
    else:
        if fmt == "alpaca":
            user = _text(row, "instruction", fields)
            extra = _text(row, "input", fields, required=False)
            user = f"{user}\n\n{extra}" if extra else user
            answer = _text(row, "output", fields)
        elif fmt == "qa":
            user, answer = _text(row, "question", fields), _text(row, "answer", fields)
        else:
            raise ValueError(f"unknown SFT format {fmt!r}; one of {FORMATS}")
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        row_system = _text(row, "system", fields, required=False)
        if row_system:
            messages.insert(0, {"role": "system", "content": row_system})
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    try:
        check_messages(messages)  # e.g. a system message in the middle of a conversation
    except ValueError as exc:
        raise BadRow("bad_json", str(exc)) from exc
    if not messages[-1]["content"] or not any(m["role"] == "user" and m["content"] for m in messages):
        raise BadRow("empty", "empty question or answer")
    return messages


def _messages(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):  # some datasets store the list as a JSON string
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BadRow("bad_json", f"messages is a string that is not JSON: {exc.msg}") from exc
    if not isinstance(value, list) or not value:
        raise BadRow("missing_field", "messages must be a non-empty list")
    out = []
    for m in value:
        if not isinstance(m, dict):
            raise BadRow("bad_json", f"a message must be a mapping, got {m!r}")
        role = _ROLE_NAMES.get(str(m.get("role", m.get("from", ""))).lower())
        content = m.get("content", m.get("value"))
        if role is None or not isinstance(content, str):
            raise BadRow("bad_json", f"a message needs a known role and string content, got {m!r}")
        out.append({"role": role, "content": normalize(content).strip()})
    while out and out[-1]["role"] != "assistant":  # trailing user turns have no target: drop them
        out.pop()
    if not out:
        raise BadRow("empty", "no assistant message to learn")
    return out


def iter_conversations(source: SftSourceConfig, report: DataReport) -> Iterator[list[dict[str, str]]]:
    """Conversations of one source, at most ``source.max_rows``; bad rows reported and skipped."""
    fmt, name, kept = source.format, label(source), 0
    for n, row in _iter_raw(source, report):
        try:
            if fmt == "auto":
                fmt = detect_format(row, source.fields)  # one format per source, fixed by its first row
            messages = row_to_messages(row, fmt, source.fields, source.system)
        except BadRow as exc:
            report.add_problem(name, n, exc.kind, str(exc))
            continue
        report.documents += 1
        yield messages
        kept += 1
        if source.max_rows is not None and kept >= source.max_rows:
            return


# ---------------------------------------------------------------------------------------------
# Conversations -> fixed-length token rows
# ---------------------------------------------------------------------------------------------


@dataclass
class SourceStats:
    """What happened to one source's rows."""

    source: str
    conversations: int = 0  # valid conversations read
    kept: int = 0  # rows written
    dropped_too_long: int = 0  # prompt + answer + end token over max_length (too_long: drop)
    truncated: int = 0  # answer cut to fit (too_long: truncate); the prompt is never cut
    dropped_prompt_too_long: int = 0  # the prompt alone leaves no room for an answer: always dropped
    bad_rows: int = 0  # unreadable rows (see problems)
    train: int = 0
    val: int = 0
    mixture_rows: int = 0  # training rows per epoch after the weight
    skipped: str | None = None  # why an optional source was skipped


@dataclass
class SftReport:
    sources: list[SourceStats] = field(default_factory=list)
    problems: DataReport = field(default_factory=DataReport)
    max_length: int = 0
    too_long: str = "drop"

    def summary(self) -> str:
        lines = [f"SFT rows of {self.max_length} tokens (too long: {self.too_long})"]
        total = sum(s.mixture_rows for s in self.sources) or 1
        for s in self.sources:
            if s.skipped:
                lines.append(f"  {s.source}: skipped ({s.skipped})")
                continue
            lines.append(
                f"  {s.source}: {s.conversations:,} conversations -> {s.kept:,} rows "
                f"(dropped too long {s.dropped_too_long:,}, truncated {s.truncated:,}, "
                f"prompt too long {s.dropped_prompt_too_long:,}, bad rows {s.bad_rows:,}); "
                f"train {s.train:,} / held out {s.val:,}; {s.mixture_rows:,} rows per epoch "
                f"({100 * s.mixture_rows / total:.1f}% of the mixture)"
            )
        if self.problems.n_problems:
            lines.append(self.problems.summary(max_examples=5))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "too_long": self.too_long,
            "sources": [asdict(s) for s in self.sources],
            "problems": self.problems.to_dict(),
        }


@dataclass
class SftData:
    """Rows ready for the training loop (the ``blocks`` of instruction tuning)."""

    ids: np.ndarray  # int32 [N, max_length]
    prompt_lengths: np.ndarray  # int32 [N]: positions < prompt length are prompt (never masked)
    answer_lengths: np.ndarray  # int32 [N]: answer tokens incl. the first end token (0 padding)
    train_idx: np.ndarray  # int64: the epoch's rows, repeats allowed (weights), sorted
    val_idx: np.ndarray  # int64: held-out rows in a seeded order (a prefix is a fair sample)
    report: SftReport

    def maskable(self, rows: np.ndarray) -> np.ndarray:
        return answer_maskable(self.prompt_lengths[rows], self.ids.shape[1])


def answer_maskable(prompt_lengths: np.ndarray, length: int) -> np.ndarray:
    """[N, length] bool: True at answer positions (the answer and its end-token padding)."""
    return np.arange(length)[None, :] >= np.asarray(prompt_lengths)[:, None]


def encode_conversations(
    conversations: Sequence[Sequence[dict[str, str]]],
    tokenizer: Any,
    max_length: int,
    too_long: str = "drop",
    render: Callable[[Sequence[dict], bool], str] | None = None,
    stats: SourceStats | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids [n, max_length], prompt lengths [n], answer lengths [n]) for the rows that fit.

    Prompt and answer are tokenised separately, without special tokens, and joined after the
    tokenizer's ``<bos>`` (if it has one; ``text.bos.with_bos``, the helper sampling uses, so a
    template that renders ``<bos>`` itself does not get two): exactly the prompt tokens a sampler sees when it encodes
    the prompt text alone, so training and inference agree on where the answer starts.
    """
    if too_long not in TOO_LONG:
        raise ValueError(f"too_long must be one of {TOO_LONG}, got {too_long!r}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no end token: SFT pads answers with it")
    stats = stats or SourceStats(source="")
    split = [prompt_and_answer(c, render or format_chat) for c in conversations]
    ids, plens, alens = [], [], []
    for start in range(0, len(split), _TOKENIZE_BATCH):
        chunk = split[start : start + _TOKENIZE_BATCH]
        kw = dict(add_special_tokens=False, return_attention_mask=False, verbose=False)
        prompts = tokenizer([p for p, _ in chunk], **kw)["input_ids"]
        answers = tokenizer([a for _, a in chunk], **kw)["input_ids"]
        for p, a in zip(prompts, answers, strict=True):
            prompt = with_bos(tokenizer, p)  # once, even when the template renders <bos> itself
            if len(prompt) >= max_length:
                stats.dropped_prompt_too_long += 1
                continue
            if len(prompt) + len(a) + 1 > max_length:  # + 1: at least one end token must fit
                if too_long == "drop":
                    stats.dropped_too_long += 1
                    continue
                a = a[: max_length - len(prompt)]  # no end token: the model is not taught a false stop
                stats.truncated += 1
            row = prompt + a + [eos] * (max_length - len(prompt) - len(a))
            ids.append(row)
            plens.append(len(prompt))
            alens.append(min(len(a) + 1, max_length - len(prompt)))
            stats.kept += 1
    return (
        np.asarray(ids, dtype=np.int32).reshape(-1, max_length),
        np.asarray(plens, dtype=np.int32),
        np.asarray(alens, dtype=np.int32),
    )


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from diffutron.data.packing import train_val_split

    return train_val_split(n, val_fraction, seed)


def _mixture(train: np.ndarray, weight: float, rng: np.random.Generator) -> np.ndarray:
    """``weight x len(train)`` rows: whole repeats, then a seeded subset for the fraction."""
    n = round(weight * len(train))
    repeats, rest = divmod(n, len(train)) if len(train) else (0, 0)
    parts = [train] * repeats + [np.sort(rng.choice(train, rest, replace=False))]
    return np.concatenate(parts).astype(np.int64)


def _replay(parts: list[np.ndarray], n_own: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """Rows of the replayed sources, ``share`` of the final mixture: each source keeps its own
    proportion among them (their weights as in the stage they came from)."""
    pool = np.concatenate(parts)
    n = round(share / (1.0 - share) * n_own)
    return _mixture(pool, n / len(pool), rng)


def _cache_key(cfg: SftConfig, sources: list[SftSourceConfig], tokenizer: Any) -> str:
    spec = [
        [asdict(s) for s in sources],
        cfg.replay,
        len(cfg.replay_sources),
        cfg.max_length,
        cfg.too_long,
        cfg.val_fraction,
        cfg.seed,
        cfg.chat_template,
        cfg.system,
        len(tokenizer),
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.backend_tokenizer.to_str()[:100_000] if hasattr(tokenizer, "backend_tokenizer") else "",
    ]
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_sft_data(
    cfg: SftConfig, tokenizer: Any, cache_dir: Path | None = None, *, progress: bool = True
) -> SftData:
    """Read, render, tokenise, split and mix every source of ``cfg`` (cached under ``cache_dir``)."""
    if cfg.max_length < 2:
        raise ValueError(f"sft.max_length must be at least 2, got {cfg.max_length}")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ValueError(f"sft.val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if not 0.0 <= cfg.replay < 1.0:
        raise ValueError(f"sft.replay must be in [0, 1), got {cfg.replay}")
    own = [as_source(s) for s in cfg.sources]
    replayed = [as_source(s) for s in cfg.replay_sources] if cfg.replay > 0 else []
    sources = own + replayed
    for s in sources:
        if s.system is None and cfg.system is not None:
            s.system = cfg.system
    cache = cache_dir / f"sft-{_cache_key(cfg, sources, tokenizer)}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        return _load(cache)
    render = render_with(tokenizer, cfg.chat_template)
    report = SftReport(max_length=cfg.max_length, too_long=cfg.too_long)
    rng = np.random.default_rng(cfg.seed)
    all_ids, all_p, all_a, train_parts, val_parts, offset = [], [], [], [], [], 0
    replay_parts: list[np.ndarray] = []  # the replayed sources' rows, scaled to their share below
    replay_spans: list[tuple[SourceStats, int, int]] = []  # each replayed source's rows (for the report)
    for k, s in enumerate(sources):
        is_replay = k >= len(own)
        stats = SourceStats(source=label(s) + (" (replay)" if is_replay else ""))
        report.sources.append(stats)
        before = report.problems.n_problems
        try:
            conversations = list(iter_conversations(s, report.problems))
        except ModuleNotFoundError as exc:
            if not s.optional:
                raise
            stats.skipped = str(exc)
            log.warning("skipping optional SFT source %s: %s", stats.source, exc)
            continue
        stats.bad_rows = report.problems.n_problems - before
        stats.conversations = len(conversations)
        ids, plens, alens = encode_conversations(
            conversations, tokenizer, cfg.max_length, cfg.too_long, render, stats
        )
        if progress:
            log.info("%s: %d rows", stats.source, len(ids))
        train, val = _split(len(ids), cfg.val_fraction, cfg.seed)
        stats.train, stats.val = len(train), len(val)
        mixed = _mixture(train, s.weight, rng) if len(train) else train
        stats.mixture_rows = len(mixed)
        all_ids.append(ids)
        all_p.append(plens)
        all_a.append(alens)
        if is_replay:  # held out by the stage it came from: this stage validates on its own rows
            replay_parts.append(mixed + offset)
            replay_spans.append((stats, offset, offset + len(ids)))
        else:
            train_parts.append(mixed + offset)
            val_parts.append(val + offset)
        offset += len(ids)
    if replay_parts and sum(map(len, replay_parts)):
        replayed = _replay(replay_parts, sum(map(len, train_parts)), cfg.replay, rng)
        train_parts.append(replayed)
        for stats, lo, hi in replay_spans:  # the report counts the rows drawn, not the pool drawn from
            stats.mixture_rows = int(((replayed >= lo) & (replayed < hi)).sum())
    if offset == 0:
        raise ValueError("the SFT sources gave no usable rows:\n" + report.summary())
    val_idx = np.concatenate(val_parts).astype(np.int64)
    data = SftData(
        ids=np.concatenate(all_ids),
        prompt_lengths=np.concatenate(all_p),
        answer_lengths=np.concatenate(all_a),
        train_idx=np.sort(np.concatenate(train_parts)).astype(np.int64),
        # a seeded order, so the first k held-out rows (the loop's eval slice) mix all sources
        val_idx=np.random.default_rng(cfg.seed + 1).permutation(val_idx),
        report=report,
    )
    if cache is not None:
        _save(cache, data)
    return data


def _save(path: Path, data: SftData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:  # a handle, so numpy does not append another suffix
            np.savez(
                fh,
                ids=data.ids,
                prompt_lengths=data.prompt_lengths,
                answer_lengths=data.answer_lengths,
                train_idx=data.train_idx,
                val_idx=data.val_idx,
                report=np.frombuffer(json.dumps(data.report.to_dict()).encode(), dtype=np.uint8),
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load(path: Path) -> SftData:
    with np.load(path) as z:
        raw = json.loads(bytes(z["report"]).decode())
        problems = DataReport()
        problems.problem_counts = raw["problems"]["problem_counts"]
        report = SftReport(
            sources=[SourceStats(**s) for s in raw["sources"]],
            problems=problems,
            max_length=raw["max_length"],
            too_long=raw["too_long"],
        )
        return SftData(
            ids=z["ids"],
            prompt_lengths=z["prompt_lengths"],
            answer_lengths=z["answer_lengths"],
            train_idx=z["train_idx"],
            val_idx=z["val_idx"],
            report=report,
        )


# ---------------------------------------------------------------------------------------------
# Offline sets built at run time (nothing is stored in this repository)
# ---------------------------------------------------------------------------------------------

BUILTIN_SOURCES: dict[str, Callable[[], Iterator[dict[str, Any]]]] = {}


def register_builtin(name: str):
    def wrap(fn: Callable[[], Iterator[dict[str, Any]]]):
        BUILTIN_SOURCES[name] = fn
        return fn

    return wrap


# A sentence ends at . ! ? (or …) followed by space and an upper-case letter (A-Z and the language
# pack's own) or a quote.
def _sentence_end(pack: LanguagePack) -> re.Pattern[str]:
    return re.compile(rf"(?<=[.!?…])\s+(?=[\"“'‘(]?[A-Z{pack.sentence_starts}])")


_WORD_CORE = re.compile(r"^([\"“'‘(]*)([^\W\d_]+(?:['’][^\W\d_]+)?)([\W]*)$")


def _sentences(
    doc: str, sentence_end: re.Pattern[str], min_words: int = 5, max_words: int = 40
) -> list[str | None]:
    """Sentences of a document in order; ``None`` stands for one too short or too long (a gap)."""
    out: list[str | None] = []
    for para in doc.split("\n"):
        for s in sentence_end.split(para.strip()):
            s = " ".join(s.split())
            out.append(s if s and min_words <= len(s.split()) <= max_words else None)
        out.append(None)  # a paragraph break: no continuation across it
    return out


def _continuation(pack: LanguagePack) -> Iterator[dict[str, Any]]:
    """The pack's corpus: a sentence -> the sentence that follows it in the same paragraph."""
    end, instruction = _sentence_end(pack), pack.instructions["continuation"]
    for doc in embedded_corpus(pack.corpus):
        sents = _sentences(doc, end)
        for a, b in zip(sents, sents[1:], strict=False):
            if a and b:
                yield {"instruction": instruction, "input": a, "output": b}


def _fill_blank(pack: LanguagePack) -> Iterator[dict[str, Any]]:
    """The pack's corpus: a sentence with one word replaced by ``___`` -> that word (cloze)."""
    end, instruction = _sentence_end(pack), pack.instructions["fill-blank"]
    for doc in embedded_corpus(pack.corpus):
        for s in _sentences(doc, end):
            if not s:
                continue
            words = s.split()
            choices = [i for i, w in enumerate(words) if (m := _WORD_CORE.match(w)) and len(m.group(2)) >= 4]
            if not choices:
                continue
            i = random.Random(zlib.crc32(s.encode())).choice(choices)  # same choice on every run
            pre, core, post = _WORD_CORE.match(words[i]).groups()
            blanked = " ".join([*words[:i], f"{pre}___{post}", *words[i + 1 :]])
            yield {"instruction": instruction, "input": blanked, "output": core}


# Every pack gets both sets, under the name its pack gives them (Turkish: the bare names).
for _pack in LANGUAGES.values():
    for _name, _fn in (("continuation", _continuation), ("fill-blank", _fill_blank)):
        register_builtin(_pack.builtin(_name))(functools.partial(_fn, _pack))


# The checkable skills (data/skills.py): skills-general, skills-copy, skill-<name>.
for _name, _fn in _skills.builtin_sets().items():
    register_builtin(_name)(_fn)


CHATTERBOT_INSTALL = "pip install --no-deps chatterbot-corpus"


@register_builtin("chatterbot")
def _chatterbot() -> Iterator[dict[str, Any]]:
    """chatterbot-corpus (BSD): its Turkish conversations, one row per assistant turn (multi-turn:
    the earlier turns are the prompt). Read from the installed package at run time."""
    if importlib.util.find_spec("chatterbot_corpus") is None:
        raise ModuleNotFoundError(
            f"the 'chatterbot' SFT source needs the chatterbot-corpus package: {CHATTERBOT_INSTALL}",
            name="chatterbot_corpus",
        )
    import yaml

    folder = importlib.resources.files("chatterbot_corpus") / "data" / "turkish"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith((".yml", ".yaml")):
            continue
        data = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
        for conv in data.get("conversations") or []:
            turns = [str(t) for t in conv if isinstance(t, (str, int, float))]
            roles = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
            messages = [{"role": r, "content": t} for r, t in zip(roles, turns, strict=True)]
            for end in range(2, len(messages) + 1, 2):  # every prefix that ends with an answer
                yield {"messages": messages[:end]}
