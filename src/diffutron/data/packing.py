"""Packing tokenised documents into fixed-size training blocks, with a cache and a fixed split.

What it is: the step between a document stream (:func:`diffutron.data.iter_documents`) and the
training loop. Documents are tokenised without special tokens, framed as the tokenizer frames a
text (``<bos> document <eos>``, the convention of ``diffutron.text.bos``: sampling, scoring and
perplexity put the same ``<bos>`` before a text), concatenated, and cut into blocks of exactly
``block_size`` tokens, so no position is padding and the model learns where documents start and end.

How to use it::

    from diffutron.data import DataReport, build_blocks, iter_documents, train_val_split

    report = DataReport()
    blocks = build_blocks(iter_documents("embedded", report), tokenizer, block_size=128,
                          cache_path=Path("cache/ataturk-tok16k-128.npy"))
    train_idx, val_idx = train_val_split(len(blocks), val_fraction=0.05, seed=0)
    train, val = blocks[train_idx], blocks[val_idx]

What it does not know: whether a cache file still matches the corpus and tokenizer — the cache is
keyed by its path only, so put the corpus, tokenizer and block size into the file name (or delete
the file) when any of them changes. A block may span two documents; attention across the
``<eos>`` boundary is not masked here. The tail shorter than one block is dropped (its length is
reported), and an empty document contributes nothing, not even its ``<bos>``/``<eos>``.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

__all__ = ["Packer", "build_blocks", "pack_token_stream", "train_val_split"]

logger = logging.getLogger(__name__)

# Blocks gathered before they become one int32 array: a Python list of lists costs ~10x the array.
_WRITE_ROWS = 4096


class Packer:
    """Iterator over blocks of exactly ``block_size`` token ids packed from ``docs_token_ids``.

    Each document goes in as ``[bos_id] + ids + [eos_id]`` (no ``<bos>`` when ``bos_id`` is None).
    After the iterator is exhausted, ``dropped_tail_tokens`` holds the number of tokens (the last
    ``<eos>`` included) left over in the final partial block, which is not yielded.
    ``documents`` and ``tokens`` count what went in (``tokens`` includes the special ids).
    """

    def __init__(
        self, docs_token_ids: Iterable[list[int]], block_size: int, eos_id: int, bos_id: int | None = None
    ) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.block_size = block_size
        self.eos_id = eos_id
        self.head = [] if bos_id is None else [bos_id]
        self.documents = 0
        self.tokens = 0
        self.blocks = 0
        self.dropped_tail_tokens = 0
        self.finished = False
        self._it = self._pack(iter(docs_token_ids))

    def __iter__(self) -> Packer:
        return self

    def __next__(self) -> list[int]:
        return next(self._it)

    def _pack(self, docs: Iterator[list[int]]) -> Iterator[list[int]]:
        bs = self.block_size
        buf: list[int] = []
        for ids in docs:
            if not ids:
                continue
            buf.extend(self.head)
            buf.extend(ids)
            buf.append(self.eos_id)
            self.documents += 1
            self.tokens += len(self.head) + len(ids) + 1
            # Walk an offset and trim once per document: deleting from the front per block would
            # be quadratic for a document much longer than a block.
            start = 0
            while len(buf) - start >= bs:
                yield buf[start : start + bs]
                self.blocks += 1
                start += bs
            del buf[:start]
        self.dropped_tail_tokens = len(buf)
        self.finished = True


def pack_token_stream(
    docs_token_ids: Iterable[list[int]], block_size: int, eos_id: int, bos_id: int | None = None
) -> Packer:
    """Pack documents (lists of token ids) into full blocks; see :class:`Packer`.

    Returns a :class:`Packer`, which is an ``Iterator[list[int]]``; keep a reference to it to read
    ``dropped_tail_tokens`` once it is exhausted.
    """
    return Packer(docs_token_ids, block_size, eos_id, bos_id)


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _load_cache(path: Path, block_size: int) -> np.ndarray:
    arr = np.load(path, mmap_mode="r")  # memory-mapped: a corpus of any size costs no RAM
    if arr.ndim != 2 or arr.shape[1] != block_size or arr.dtype != np.int32:
        raise ValueError(
            f"cache {path} holds {arr.dtype} blocks of shape {arr.shape}, not int32 [n, {block_size}]; "
            "delete it or choose another cache_path"
        )
    return arr


def _batch_encoder(tokenizer: Any) -> Callable[[list[str]], list[list[int]]]:
    """A function from a batch of texts to their token ids, without special tokens.

    A ``transformers`` fast tokenizer whose backend neither truncates nor pads is called through
    that ``tokenizers`` backend's ``encode_batch_fast`` (no character offsets, no ``BatchEncoding``):
    the same ids, about a fifth faster. Anything else goes through the tokenizer's ``__call__``.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    fast = getattr(backend, "encode_batch_fast", None)
    if fast is not None and backend.truncation is None and backend.padding is None:
        return lambda batch: [enc.ids for enc in fast(batch, add_special_tokens=False)]

    def slow(batch: list[str]) -> list[list[int]]:
        # verbose=False: documents longer than model_max_length are expected here (they are
        # cut into blocks), so the "sequence too long" warning would only be noise.
        enc = tokenizer(
            batch,
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return enc["input_ids"]

    return slow


def build_blocks(
    documents: Iterable[str],
    tokenizer: Any,
    block_size: int,
    cache_path: Path | None = None,
    batch_docs: int = 256,
    *,
    progress: bool = True,
) -> np.ndarray:
    """Tokenise ``documents`` and pack them into an int32 array of shape ``[n_blocks, block_size]``.

    ``tokenizer`` is a ``transformers`` tokenizer (a fast one tokenises each batch of
    ``batch_docs`` documents in parallel) with an ``eos_token_id``; its ``bos_token_id`` (if any)
    starts each document. With ``cache_path``, an
    existing file is loaded instead (``documents`` is then not read at all) and a new result is
    written there atomically. Returns an array with 0 rows if the corpus is shorter than a block.
    """
    if cache_path is not None:
        cache_path = Path(cache_path)
        if cache_path.exists():
            logger.info("loading cached blocks from %s", cache_path)
            return _load_cache(cache_path, block_size)
    eos_id = getattr(tokenizer, "eos_token_id", None)
    if eos_id is None:
        raise ValueError("the tokenizer has no eos token; packing needs one to mark document ends")
    if batch_docs < 1:
        raise ValueError(f"batch_docs must be positive, got {batch_docs}")

    encode = _batch_encoder(tokenizer)

    def token_ids() -> Iterator[list[int]]:
        bar = tqdm(documents, desc="tokenising", unit="doc", disable=not progress)
        for batch in _batched(bar, batch_docs):
            yield from encode(batch)

    packer = Packer(token_ids(), block_size, eos_id, getattr(tokenizer, "bos_token_id", None))
    if cache_path is None:
        blocks = _collect_in_memory(packer, block_size)
    else:
        blocks = _stream_to_npy(packer, block_size, cache_path)
    logger.info(
        "packed %d documents / %d tokens into %d blocks of %d; dropped a tail of %d tokens",
        packer.documents,
        packer.tokens,
        len(blocks),
        block_size,
        packer.dropped_tail_tokens,
    )
    return blocks


def _collect_in_memory(packer: Packer, block_size: int) -> np.ndarray:
    chunks: list[np.ndarray] = []
    pending: list[list[int]] = []
    for block in packer:
        pending.append(block)
        if len(pending) >= _WRITE_ROWS:
            chunks.append(np.asarray(pending, dtype=np.int32))
            pending = []
    if pending:
        chunks.append(np.asarray(pending, dtype=np.int32))
    return np.concatenate(chunks) if chunks else np.zeros((0, block_size), dtype=np.int32)


def _npy_header(n_rows: int, block_size: int) -> bytes:
    buf = io.BytesIO()
    header = {"descr": np.dtype(np.int32).str, "fortran_order": False, "shape": (n_rows, block_size)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def _stream_to_npy(packer: Packer, block_size: int, path: Path) -> np.ndarray:
    """Write blocks into a temporary .npy as they come, then rename it to ``path`` and map it.

    Plain buffered writes, no memory map while writing: pages of a written-to map count in the
    process's resident memory until the whole file is written, so a mapped copy made resident
    memory grow with the corpus (+52 % from 10 to 100 MB). The header is written first for 0 rows
    and rewritten in place once the row count is known: numpy pads an .npy header with room for
    21 more digits of the shape, so both headers have the same length.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            reserved = _npy_header(0, block_size)
            fh.write(reserved)
            n_rows, pending = 0, []
            for block in packer:
                pending.append(block)
                if len(pending) >= _WRITE_ROWS:
                    fh.write(np.asarray(pending, dtype=np.int32).tobytes())
                    n_rows, pending = n_rows + len(pending), []
            if pending:
                fh.write(np.asarray(pending, dtype=np.int32).tobytes())
                n_rows += len(pending)
            header = _npy_header(n_rows, block_size)
            if len(header) != len(reserved):  # only past 10**21 rows
                raise RuntimeError(f"{n_rows} blocks do not fit the .npy header reserved in {tmp}")
            fh.seek(0)
            fh.write(header)
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


def train_val_split(n_blocks: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split block indices ``0..n_blocks-1`` into sorted (train, validation) index arrays.

    The same ``(n_blocks, val_fraction, seed)`` gives the same split on every run and machine
    (``numpy.random.default_rng``, PCG64; numpy has kept that stream unchanged so far but does not
    promise it forever, so store the indices with a run if they must outlive a numpy upgrade).
    With ``n_blocks >= 2`` and ``val_fraction > 0`` there is at least one validation block and at
    least one training block, however small the fraction; ``val_fraction == 0`` gives an empty
    validation set, and a single block always goes to training.
    """
    if n_blocks < 0:
        raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(n_blocks * val_fraction)
    if n_blocks < 2:
        n_val = 0  # a single block must be trained on; there is nothing to hold out
    elif val_fraction > 0:
        n_val = min(max(n_val, 1), n_blocks - 1)
    perm = np.random.default_rng(seed).permutation(n_blocks)
    # Sorted so reading the blocks (possibly memory-mapped) walks the array forwards.
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)
