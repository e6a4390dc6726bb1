"""Streaming document readers with a report of everything that was skipped, split or repaired.

What it is: one entry point, :func:`iter_documents`, that turns a *source spec* into a stream of
normalised documents (``str``), plus :class:`DataReport`, which counts what was read and records
where the data was bad. Nothing here loads a whole corpus into memory: text files are read line by
line (a single huge line in chunks of 8 MiB), Parquet in record batches, hub datasets in streaming
mode, the embedded corpus row by row.

How to use it::

    from diffutron.data import DataReport, iter_documents

    report = DataReport()
    for doc in iter_documents("corpus/", report):            # every .txt/.jsonl[.gz]/.parquet inside
        ...
    print(report.summary())

Source specs:

* ``"file.txt"`` / ``"file.txt.gz"``: one document per non-empty line.
* ``"file.jsonl"`` / ``"file.jsonl.gz"``: one JSON object per line, the document in ``field``.
* ``"file.parquet"``: the string column ``field``, one document per row.
* ``"dir/"``: every supported file below it (recursively, hidden entries skipped), sorted by path.
* ``"hub:<dataset_id>"``: a Hugging Face dataset (``train`` split), streamed with ``datasets``.
* ``{"hub": id, "name": config, "split": "train", "field": "text", "revision": sha}``: the same
  with options; ``{"path": "file.jsonl", "field": "content"}`` for a local file with its own field.
  Unknown keys raise ``ValueError``.
* ``"embedded"`` / ``"embedded:ataturk"``: the default corpus (:mod:`diffutron.data.corpus`);
  ``"embedded:koondkorpus"`` (``-heldout``): the Estonian one (non-commercial use only). A run's
  ``language`` key turns ``"embedded"`` into its language pack's corpus (:mod:`diffutron.languages`).

Every document passes through :func:`diffutron.text.normalize` (NFC, ``\\n`` line ends, no BOM or
zero-width characters). A run never stops on one bad line; instead the line is reported in the
:class:`DataReport` with its file and 1-based line (or row / example) number:

* ``undecodable``: invalid UTF-8 bytes; the line is *kept*, bad bytes replaced with U+FFFD.
* ``empty``: a blank line / empty field; skipped.
* ``too_long``: longer than ``max_chars``; split into pieces of at most ``max_chars`` characters,
  preferably at whitespace, and all pieces kept.
* ``bad_json``, ``missing_field``, ``not_string``: the record is skipped.
* ``unsupported_file``: a file in a directory with an extension no reader handles; skipped.

What it does not know: language, duplicates or quality; a JSONL line over 64 MiB is skipped as
``bad_json`` rather than parsed; a text line over 8 MiB is cut into chunks at UTF-8 character
boundaries before the ``max_chars`` split, so words at those chunk edges may be cut. Errors in the
spec itself (missing file, unknown extension, Parquet file without the column, unreachable hub)
are configuration errors and raise at once instead of being reported.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from diffutron.text.normalize import normalize

__all__ = [
    "PROBLEM_KINDS",
    "SUPPORTED_SUFFIXES",
    "DataProblem",
    "DataReport",
    "embedded_corpus",
    "iter_documents",
]

PROBLEM_KINDS = (
    "undecodable",
    "empty",
    "too_long",
    "bad_json",
    "missing_field",
    "not_string",
    "unsupported_file",
)

SUPPORTED_SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz", ".parquet")

_HUB_KEYS = frozenset({"hub", "name", "split", "field", "revision"})
_PATH_KEYS = frozenset({"path", "field"})

# Large enough that real lines are read whole, small enough that a file without newlines (a
# minified dump) cannot exhaust memory.
_CHUNK_BYTES = 8 << 20
_MAX_JSON_LINE_BYTES = 64 << 20
_PARQUET_BATCH_ROWS = 1024
_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class DataProblem:
    """One bad record: where it is (``source``, 1-based ``line``; ``None`` for a whole file) and why."""

    source: str
    line: int | None
    kind: str
    reason: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.kind}: {self.reason}"


@dataclass
class DataReport:
    """Counts of what :func:`iter_documents` read, and the bad records it met.

    ``problem_counts`` counts every problem; ``problems`` keeps details of the first
    ``max_detailed`` problems *of each kind*, so a file full of blank lines cannot hide the one
    undecodable line behind it. One report can be shared by several ``iter_documents`` calls.
    """

    max_detailed: int = 1000
    documents: int = 0
    characters: int = 0
    records: int = 0
    sources: list[str] = field(default_factory=list)
    problem_counts: dict[str, int] = field(default_factory=dict)
    problems: list[DataProblem] = field(default_factory=list)

    @property
    def n_problems(self) -> int:
        return sum(self.problem_counts.values())

    def add_problem(self, source: str, line: int | None, kind: str, reason: str) -> None:
        """Count one problem and keep its details if fewer than ``max_detailed`` of its kind are kept."""
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {kind!r}; expected one of {PROBLEM_KINDS}")
        count = self.problem_counts.get(kind, 0)
        self.problem_counts[kind] = count + 1
        if count < self.max_detailed:
            self.problems.append(DataProblem(source, line, kind, reason))

    def summary(self, max_examples: int = 10) -> str:
        """A few human-readable lines: totals, problems by kind, and the first examples."""
        lines = [
            f"sources: {len(self.sources)}; records read: {self.records:,}; "
            f"documents: {self.documents:,}; characters: {self.characters:,}",
        ]
        if not self.problem_counts:
            lines.append("problems: none")
            return "\n".join(lines)
        by_kind = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.problem_counts.items()))
        lines.append(f"problems: {self.n_problems:,} ({by_kind})")
        lines.extend(f"  {p}" for p in self.problems[:max_examples])
        hidden = self.n_problems - min(max_examples, len(self.problems))
        if hidden > 0:
            lines.append(f"  ... and {hidden:,} more (first {self.max_detailed} of each kind in .problems)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for run logs)."""
        return {
            "documents": self.documents,
            "characters": self.characters,
            "records": self.records,
            "sources": list(self.sources),
            "n_problems": self.n_problems,
            "problem_counts": dict(self.problem_counts),
            "problems": [
                {"source": p.source, "line": p.line, "kind": p.kind, "reason": p.reason}
                for p in self.problems
            ],
        }


# ---------------------------------------------------------------------------------------------
# Spec parsing (eager: a typo in a config should fail before any work is done)
# ---------------------------------------------------------------------------------------------


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    # Longest first so "x.jsonl.gz" is not taken for a ".gz" of something else.
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def iter_documents(
    source: str | os.PathLike[str] | dict[str, Any],
    report: DataReport,
    *,
    field: str = "text",
    max_chars: int = 200_000,
) -> Iterator[str]:
    """Stream normalised documents from ``source`` (see the module docstring for specs).

    The spec is checked when this is called (``ValueError`` for a bad spec or extension,
    ``FileNotFoundError`` for a missing path); reading happens lazily as the result is iterated,
    updating ``report`` as it goes. ``field`` names the JSON key / Parquet column / hub column;
    a dict spec's own ``"field"`` wins. Documents longer than ``max_chars`` are split.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    if isinstance(source, dict):
        records = _from_dict(source, report, field)
    elif isinstance(source, (str, os.PathLike)):
        records = _from_string(os.fspath(source), report, field)
    else:
        raise TypeError(f"source must be a str, path or dict, not {type(source).__name__}")
    return _finish(_readable(records, str(source)), report, max_chars)


def _readable(records: _Records, source: str) -> _Records:
    """A file that breaks off mid-read (truncated gzip, not gzip at all, damaged Parquet, unreadable
    file) is a ``ValueError`` naming the file and the last good record, not a reader's own error."""
    label, line = source, 0
    try:
        for record in records:
            label, line = record[0], record[1]
            yield record
    except (OSError, EOFError, zlib.error) as exc:
        where = f"after record {line}" if line else "at the start"
        raise ValueError(f"{label}: the file cannot be read {where}: {exc} (a truncated or damaged file?)") from exc


# (source label, 1-based record number, raw text, whether the text is one chunk of a longer line)
_Records = Iterator[tuple[str, int, str, bool]]


def _from_dict(spec: dict[str, Any], report: DataReport, default_field: str) -> _Records:
    if ("hub" in spec) == ("path" in spec):
        raise ValueError(f"a dict source needs exactly one of 'hub' or 'path', got keys {sorted(spec)}")
    allowed = _HUB_KEYS if "hub" in spec else _PATH_KEYS
    for key in spec:
        if key not in allowed:
            raise ValueError(f"unknown key {key!r} in source spec {spec!r}; allowed keys: {sorted(allowed)}")
    fld = spec.get("field", default_field)
    if not isinstance(fld, str) or not fld:
        raise ValueError(f"'field' must be a non-empty string, got {fld!r}")
    if "path" in spec:
        return _from_path(Path(spec["path"]), report, fld)
    hub = spec["hub"]
    if not isinstance(hub, str) or not hub:
        raise ValueError(f"'hub' must be a non-empty dataset id, got {hub!r}")
    for key in ("name", "split", "revision"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise ValueError(f"{key!r} must be a string, got {spec[key]!r}")
    return _read_hub(hub, spec.get("name"), spec.get("split") or "train", spec.get("revision"), fld, report)


def _from_string(spec: str, report: DataReport, fld: str) -> _Records:
    if spec.startswith("hub:"):
        dataset_id = spec[len("hub:") :]
        if not dataset_id:
            raise ValueError("'hub:' needs a dataset id, e.g. 'hub:wikimedia/wikipedia'")
        return _read_hub(dataset_id, None, "train", None, fld, report)
    if spec == "embedded" or spec.startswith("embedded:"):
        name = spec.partition(":")[2] or "ataturk"
        if name not in _EMBEDDED:
            raise ValueError(f"unknown embedded corpus {name!r}; available: {sorted(_EMBEDDED)}")
        return _read_embedded(name, report)
    return _from_path(Path(spec), report, fld)


def _from_path(path: Path, report: DataReport, fld: str) -> _Records:
    if not path.exists():
        raise FileNotFoundError(f"data source not found: {path}")
    if path.is_dir():
        files: list[Path] = []
        unsupported: list[Path] = []
        for p in sorted(path.rglob("*"), key=lambda p: p.relative_to(path).as_posix()):
            if not p.is_file() or _is_hidden(p.relative_to(path)):
                continue
            (files if _suffix(p) else unsupported).append(p)
        if not files:
            raise ValueError(f"no supported files ({', '.join(SUPPORTED_SUFFIXES)}) in directory {path}")
        for p in files:  # a wrong column name should fail now, not hours into a run
            if _suffix(p) == ".parquet":
                _check_parquet_column(p, fld)
        return _read_dir(files, unsupported, report, fld)
    suffix = _suffix(path)
    if suffix is None:
        raise ValueError(f"unsupported file type: {path} (supported: {', '.join(SUPPORTED_SUFFIXES)})")
    if suffix == ".parquet":
        _check_parquet_column(path, fld)
    return _READERS[suffix](path, report, fld)


def _read_dir(files: list[Path], unsupported: list[Path], report: DataReport, fld: str) -> _Records:
    for p in unsupported:
        report.add_problem(str(p), None, "unsupported_file", "no reader for this extension; skipped")
    for p in files:
        yield from _from_path(p, report, fld)


# ---------------------------------------------------------------------------------------------
# Readers: each yields raw records and reports record-level problems it can see itself
# ---------------------------------------------------------------------------------------------


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _utf8_safe_cut(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 sequence."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the sequence's lead byte
            continue
        need = 1 if byte < 0x80 else 4 if byte >= 0xF0 else 3 if byte >= 0xE0 else 2
        return len(data) - back if back < need else len(data)
    return len(data)  # only continuation bytes: invalid anyway, let the decoder report it


def _decode(data: bytes, label: str, line: int, report: DataReport | None) -> tuple[str, bool]:
    """Decode UTF-8, replacing bad bytes; report them unless ``report`` is None. Returns (text, bad)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError as exc:
        if report is not None:
            report.add_problem(
                label,
                line,
                "undecodable",
                f"invalid UTF-8 at byte {exc.start}; kept with U+FFFD replacements",
            )
        return data.decode("utf-8", errors="replace"), True


def _strip_eol(data: bytes) -> bytes:
    if data.endswith(b"\n"):
        data = data[:-1]
    if data.endswith(b"\r"):
        data = data[:-1]
    return data


def _read_txt(path: Path, report: DataReport, fld: str) -> _Records:
    label = str(path)
    report.sources.append(label)
    line = 0
    carry = b""  # bytes of a UTF-8 character cut at a chunk edge, prepended to the next chunk
    in_line = False  # the previous chunk ended inside a line (a line longer than _CHUNK_BYTES)
    bad_line = 0  # last line reported as undecodable: a huge line counts once, not once per chunk
    chunked = False  # the current line is longer than one chunk
    with _open_binary(path) as fh:
        while True:
            chunk = fh.readline(_CHUNK_BYTES)
            if not chunk and not carry:
                return
            continuation = in_line
            if not in_line:
                line += 1
                report.records += 1
                chunked = False
            # readline(n) stops short of n bytes without a newline only at the end of the file.
            chunked = chunked or (len(chunk) >= _CHUNK_BYTES and not chunk.endswith(b"\n"))
            data = carry + chunk
            if data.endswith(b"\n"):
                data, carry, in_line = _strip_eol(data), b"", False
            elif len(chunk) < _CHUNK_BYTES:  # the last line, without a newline (or a leftover carry)
                carry, in_line = b"", False
            else:  # a line longer than one chunk: hold back a UTF-8 character cut at the edge
                cut = _utf8_safe_cut(data)
                data, carry, in_line = data[:cut], data[cut:], True
            text, bad = _decode(data, label, line, report if bad_line != line else None)
            if bad:
                bad_line = line
            if continuation and not text.strip():
                continue  # whitespace at a chunk edge of a huge line: not an empty line
            yield label, line, text, chunked


def _iter_whole_lines(fh: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes without line end), or ``None`` for a line over the JSON size limit."""
    line = 0
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = fh.readline(_CHUNK_BYTES)
        if not chunk:
            if parts or size:
                yield line + 1, (b"".join(parts) if size <= _MAX_JSON_LINE_BYTES else None)
            return
        size += len(chunk)
        if size <= _MAX_JSON_LINE_BYTES:
            parts.append(chunk)
        else:
            parts.clear()  # keep reading to find the line end, but stop holding the bytes
        if chunk.endswith(b"\n"):
            line += 1
            yield line, (_strip_eol(b"".join(parts)) if size <= _MAX_JSON_LINE_BYTES else None)
            parts, size = [], 0


def _field_value(value: Any, fld: str, label: str, line: int, report: DataReport) -> str | None:
    """The document text in a JSON object / row, or ``None`` after reporting why there is none."""
    if value is None:
        report.add_problem(label, line, "missing_field", f"field {fld!r} is missing or null")
        return None
    if not isinstance(value, str):
        report.add_problem(
            label, line, "not_string", f"field {fld!r} is {type(value).__name__}, not a string"
        )
        return None
    if _SURROGATES.search(value):
        # JSON can escape lone surrogates ("\ud800"); they cannot be encoded as UTF-8 and would
        # crash the tokenizer much later, far from the line that caused it.
        report.add_problem(label, line, "undecodable", "lone UTF-16 surrogate; kept with U+FFFD replacements")
        value = _SURROGATES.sub("\ufffd", value)
    return value


def _read_jsonl(path: Path, report: DataReport, fld: str) -> _Records:
    label = str(path)
    report.sources.append(label)
    with _open_binary(path) as fh:
        for line, data in _iter_whole_lines(fh):
            report.records += 1
            if data is None:
                report.add_problem(label, line, "bad_json", f"line longer than {_MAX_JSON_LINE_BYTES} bytes")
                continue
            text, _ = _decode(data, label, line, report)
            if not text.strip():
                report.add_problem(label, line, "empty", "blank line")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                report.add_problem(label, line, "bad_json", f"{exc.msg} at column {exc.colno}")
                continue
            if not isinstance(obj, dict):
                report.add_problem(
                    label, line, "bad_json", f"expected a JSON object, got {type(obj).__name__}"
                )
                continue
            value = _field_value(obj.get(fld), fld, label, line, report)
            if value is not None:
                yield label, line, value, False


def _check_parquet_column(path: Path, fld: str) -> None:
    import pyarrow.parquet as pq

    try:
        names = pq.ParquetFile(path).schema_arrow.names
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from exc
    if fld not in names:
        raise ValueError(f"{path} has no column {fld!r}; columns: {names}")


def _read_parquet(path: Path, report: DataReport, fld: str) -> _Records:
    import pyarrow.parquet as pq

    label = str(path)
    report.sources.append(label)
    row = 0
    pf = pq.ParquetFile(path)
    # iter_batches walks the file row group by row group and reads only the one column.
    for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[fld]):
        for value in batch.column(0).to_pylist():
            row += 1
            report.records += 1
            text = _field_value(value, fld, label, row, report)
            if text is not None:
                yield label, row, text, False


def _read_hub(
    dataset_id: str, name: str | None, split: str, revision: str | None, fld: str, report: DataReport
) -> _Records:
    label = f"hub:{dataset_id}" + (f"/{name}" if name else "") + f"[{split}]"
    # Imported here: datasets takes seconds to import and most runs read local files.
    import datasets

    ds = datasets.load_dataset(dataset_id, name, split=split, streaming=True, revision=revision)
    report.sources.append(label)
    for i, example in enumerate(ds, start=1):
        report.records += 1
        text = _field_value(example.get(fld), fld, label, i, report)
        if text is not None:
            yield label, i, text, False


def embedded_corpus(spec: str) -> Iterator[str]:
    """The documents of ``"embedded"`` / ``"embedded:<name>"`` as the corpus reader yields them."""
    name = spec.partition(":")[2] or "ataturk"
    if not (spec == "embedded" or spec.startswith("embedded:")) or name not in _EMBEDDED:
        raise ValueError(f"unknown embedded corpus {spec!r}; available: {sorted(_EMBEDDED)}")
    return _EMBEDDED[name]()


def _read_embedded(name: str, report: DataReport) -> _Records:
    label = f"embedded:{name}"
    docs = _EMBEDDED[name]()
    report.sources.append(label)
    for i, text in enumerate(docs, start=1):
        report.records += 1
        yield label, i, text, False


def _embedded_ataturk() -> Iterator[str]:
    from diffutron.data.corpus import embedded_documents

    return embedded_documents()


def _embedded_estonian(split: str) -> Callable[[], Iterator[str]]:
    def read() -> Iterator[str]:
        from diffutron.data.corpus import estonian_documents

        return estonian_documents(split)

    return read


_EMBEDDED: dict[str, Callable[[], Iterator[str]]] = {
    "ataturk": _embedded_ataturk,
    "koondkorpus": _embedded_estonian("train"),
    "koondkorpus-heldout": _embedded_estonian("heldout"),
}

_READERS: dict[str, Callable[[Path, DataReport, str], _Records]] = {
    ".txt": _read_txt,
    ".txt.gz": _read_txt,
    ".jsonl": _read_jsonl,
    ".jsonl.gz": _read_jsonl,
    ".parquet": _read_parquet,
}


# ---------------------------------------------------------------------------------------------
# Shared last step: normalise, skip empty, split over-long, count
# ---------------------------------------------------------------------------------------------


def _cut_point(text: str, max_chars: int) -> int:
    """Where to end a piece of at most ``max_chars``: after whitespace if any in the second half."""
    window = text[max_chars // 2 : max_chars]
    for i in range(len(window) - 1, -1, -1):
        if window[i].isspace():
            return max_chars // 2 + i + 1
    cut = max_chars
    # No whitespace: a hard cut, but not between a letter and its combining accent.
    while cut > 1 and unicodedata.combining(text[cut]):
        cut -= 1
    return cut


def _split(text: str, max_chars: int) -> Iterator[str]:
    start = 0
    while len(text) - start > max_chars:
        cut = _cut_point(text[start : start + max_chars + 1], max_chars)
        yield text[start : start + cut]
        start += cut
    yield text[start:]


def _finish(records: _Records, report: DataReport, max_chars: int) -> Iterator[str]:
    long_line: tuple[str, int] | None = None  # a huge text line arrives in chunks: report it once
    for label, line, raw, chunked in records:
        text = normalize(raw)
        if not text.strip():
            report.add_problem(label, line, "empty", "empty or whitespace only")
            continue
        if (chunked or len(text) > max_chars) and long_line != (label, line):
            long_line = (label, line)
            reason = (
                f"over {_CHUNK_BYTES:,} bytes; read in chunks" if chunked else f"{len(text):,} characters"
            )
            report.add_problem(
                label, line, "too_long", f"{reason}; split into pieces of at most {max_chars:,}"
            )
        for piece in _split(text, max_chars):
            if not piece.strip():
                continue
            report.documents += 1
            report.characters += len(piece)
            yield piece
