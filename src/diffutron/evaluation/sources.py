"""Where a task's items come from: local files, a Python package, or the Hugging Face hub.

    data = load_task_data(get_task("xcopa_tr"), data_dir="evaldata/", limit=100)
    data.items        # [Item(where="test.tr.jsonl:3", fields={...prepared...}), ...]
    data.problems     # every row that was skipped, with its file, line and reason
    data.source       # what was read, for the results file

Order of precedence: an explicit file (``data_file``), then ``data_dir``, then the task's package,
then the hub. In ``data_dir`` a task looks in ``DIR/<task name>/``, its group's folder
(``DIR/turkishmmlu/``, ``DIR/turkish_plu/``) and then ``DIR/`` for

1. the original public release's file names for the split (``Task.local``): ``test.tr.jsonl`` for
   XCOPA, ``ironic.txt`` + ``non-ironic.txt`` for IronyTR, one folder per category of Windows-1254
   articles for news_cat, ``sts-test-tr.csv``, ``<task>-test.csv`` for Turkish PLU,
   ``TurkishMMLU_<Subject>.json``, SQuAD JSON for the QA tasks, ...;
2. otherwise ``{split}.jsonl`` with the hub dataset's field names.

An explicit file may have any name (``--data-file turkish_plu_step_inference=val.csv``): it is read
by its extension (``.jsonl``, ``.csv``, ``.json`` list or SQuAD, a folder with the task's reader).

Real files are messy. A row that cannot be read (bad JSON, a CSV line with the wrong number of
cells, a blank line, undecodable bytes) or prepared (``tasks.BadItem``: placeholder cell, damaged
character, bad label) is skipped and recorded as a :class:`Problem`; nothing here stops a run for
one bad row, and nothing is dropped without a record. ``limit`` keeps the first N good items.

Hub datasets load with ``datasets.load_dataset`` (no remote code). A dataset that only exists as a
loading script is retried from the hub's Parquet conversion (``refs/convert/parquet``). Labels
stored as a ``ClassLabel`` are turned into their names before ``prepare`` sees them.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .tasks import BadItem, Task

log = logging.getLogger(__name__)
PARQUET_BRANCH = "refs/convert/parquet"

Raw = tuple[str, Any]  # (where, row dict or a BadItem saying why the row could not be read)


@dataclass(frozen=True)
class Problem:
    where: str  # "file:line", "hub:id[split]#row", "dir/7.txt"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Item:
    where: str
    fields: dict[str, Any]


@dataclass
class TaskData:
    task: str
    split: str
    source: str
    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    selection: str = "all"  # which items: "all", "first N" (--limit) or "random N of M, seed S" (--sample)

    @property
    def rows(self) -> int:
        return len(self.items) + len(self.problems)


# ---------------------------------------------------------------------------------------------
# Readers: a path -> (where, row) pairs. Rows keep the file's own field names.
# ---------------------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    # Undecodable bytes become U+FFFD, which tasks.text() then reports as a damaged character.
    return data.decode("utf-8-sig", errors="replace")


def read_jsonl(path: Path) -> Iterator[Raw]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path.name}:{lineno}"
            line = _decode(raw).strip()
            if not line:
                yield where, BadItem("blank line")
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, BadItem(f"bad JSON: {exc.msg}")
                continue
            yield where, row if isinstance(row, dict) else BadItem("not a JSON object")


def read_csv(path: Path) -> Iterator[Raw]:
    reader = csv.reader(io.StringIO(_decode(path.read_bytes()), newline=""))
    header = next(reader, None)
    if header is None:
        yield path.name, BadItem("empty CSV file")
        return
    for cells in reader:
        where = f"{path.name}:{reader.line_num}"
        if not any(c.strip() for c in cells):
            yield where, BadItem("blank line")
        elif len(cells) != len(header):
            yield where, BadItem(f"{len(cells)} cells for {len(header)} columns")
        else:
            yield where, dict(zip(header, cells, strict=True))


def read_json(path: Path) -> Iterator[Raw]:
    """A JSON list of objects (TurkishMMLU) or a SQuAD file ({"data": [...]})."""
    try:
        data = json.loads(_decode(path.read_bytes()))
    except json.JSONDecodeError as exc:
        yield path.name, BadItem(f"bad JSON file: {exc.msg} at line {exc.lineno}")
        return
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        yield from _squad_rows(path, data["data"])
    elif isinstance(data, list):
        for i, row in enumerate(data, start=1):
            yield f"{path.name}#{i}", row if isinstance(row, dict) else BadItem("not a JSON object")
    else:
        yield path.name, BadItem("expected a JSON list of objects or a SQuAD file")


def _squad_rows(path: Path, articles: list) -> Iterator[Raw]:
    for a, article in enumerate(articles, start=1):
        for p, paragraph in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else [], 1):
            context = paragraph.get("context")
            for q, qa in enumerate(paragraph.get("qas", []), start=1):
                where = f"{path.name}#{qa.get('id') or f'{a}.{p}.{q}'}"
                yield (
                    where,
                    {"context": context, "question": qa.get("question"), "answers": qa.get("answers")},
                )


def read_ironytr(files: list[Path]) -> Iterator[Raw]:
    """IronyTR release: one sentence per line in ironic.txt (label 1) and non-ironic.txt (label 0)."""
    for path in files:
        label = 0 if path.name.startswith("non") else 1
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                line = _decode(raw).strip()
                where = f"{path.name}:{lineno}"
                yield where, {"text": line, "label": label} if line else BadItem("blank line")


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def read_news_dirs(dirs: list[Path]) -> Iterator[Raw]:
    """The "1150 Haber" layout: DIR/<category>/<n>.txt, one article per file, Windows-1254."""
    for folder in dirs:
        for path in sorted((p for p in folder.iterdir() if p.is_file()), key=_natural):
            where = f"{folder.name}/{path.name}"
            data = path.read_bytes()
            for encoding in ("utf-8-sig", "cp1254"):  # a UTF-8 copy is read as such
                try:
                    article = data.decode(encoding).strip()
                    break
                except UnicodeDecodeError:
                    continue
            else:
                yield where, BadItem("bytes that are neither UTF-8 nor Windows-1254")
                continue
            yield where, {"text": article, "label": folder.name} if article else BadItem("empty file")


FILE_READERS: dict[str, Callable[[Path], Iterator[Raw]]] = {
    ".jsonl": read_jsonl,
    ".csv": read_csv,
    ".json": read_json,
}
# Readers that take all of a task's release files (or folders) at once.
READERS: dict[str, Callable[[list[Path]], Iterator[Raw]]] = {
    "ironytr_lines": read_ironytr,
    "news_cat_dirs": read_news_dirs,
}


def _read_files(paths: list[Path]) -> Iterator[Raw]:
    for path in paths:
        reader = FILE_READERS.get(path.suffix.lower())
        if reader is None:
            raise ValueError(f"{path}: no reader for {path.suffix!r} files; use .jsonl, .csv or .json")
        yield from reader(path)


def _read(task: Task, paths: list[Path]) -> Iterator[Raw]:
    if task.reader in READERS and not (len(paths) == 1 and paths[0].suffix.lower() in FILE_READERS):
        return READERS[task.reader](paths)
    return _read_files(paths)


# ---------------------------------------------------------------------------------------------
# Packages and the hub
# ---------------------------------------------------------------------------------------------


def _turkmorfbench_rows() -> Iterator[Raw]:
    try:
        ref = resources.files("turkmorfbench") / "veri" / "cekirdek.json"
    except ModuleNotFoundError:
        raise FileNotFoundError("turkmorfbench is not installed: pip install turkmorfbench") from None
    data = json.loads(ref.read_text(encoding="utf-8"))
    for i, row in enumerate(data["maddeler"], start=1):
        yield f"turkmorfbench:{row.get('kimlik', i)}", row


PACKAGES: dict[str, Callable[[], Iterator[Raw]]] = {"turkmorfbench": _turkmorfbench_rows}


def _load_hub_split(path: str, config: str | None, split: str, revision: str | None):
    import datasets

    try:
        return datasets.load_dataset(path, config, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001 - the hub raises many types; decide on the message
        message = str(exc).lower()
        scripted = "script" in message or "trust_remote_code" in message
        if not scripted or revision == PARQUET_BRANCH:
            raise RuntimeError(
                f"could not load {path}" + (f" ({config})" if config else "") + f" [{split}] from the hub: "
                f"{exc}. Download the data and pass --data-dir (see docs/evaluation.md)."
            ) from exc
        log.warning("%s is a loading script; reading the hub's Parquet conversion (%s)", path, PARQUET_BRANCH)
        return _load_hub_split(path, config, split, PARQUET_BRANCH)


def read_hub(task: Task, split: str, revision: str | None = None) -> Iterator[Raw]:
    hub = task.hub
    assert hub is not None
    for config in hub.configs:
        ds = _load_hub_split(hub.path, config, split, revision or hub.revision)
        # ClassLabel columns -> their names, so prepare() never has to guess a label order.
        names = {
            k: f.names
            for k, f in ds.features.items()
            if type(f).__name__ == "ClassLabel" and hasattr(f, "names")
        }
        label = f"hub:{hub.path}" + (f"/{config}" if config else "") + f"[{split}]"
        for i, row in enumerate(ds):
            for key, labels in names.items():
                value = row.get(key)
                if isinstance(value, int) and 0 <= value < len(labels):
                    row[key] = labels[value]
            yield f"{label}#{i}", row


# ---------------------------------------------------------------------------------------------
# Putting it together
# ---------------------------------------------------------------------------------------------


def _name_key(name: str) -> str:
    """A release file name as a key: case, spaces, underscores and hyphens do not matter
    (TurkishMMLU's release writes ``TurkishMMLU_Religion and Ethics.json``)."""
    return re.sub(r"[\s_-]+", "_", name).casefold()


def _find(folder: Path, name: str) -> Path | None:
    exact = folder / name
    if exact.exists():
        return exact
    if not folder.is_dir():
        return None
    matches = sorted(p for p in folder.iterdir() if _name_key(p.name) == _name_key(name))
    return matches[0] if matches else None


def local_files(task: Task, data_dir: str | Path, split: str) -> tuple[list[Path], list[str]]:
    """The files for ``task``/``split`` in ``data_dir`` and the release names that were missing.
    Names match whatever their spelling of spaces, underscores and case."""
    base = Path(data_dir)
    names = task.local.get(split) or task.local.get("*") or ()
    tried = []
    folders = [base / task.name, *([base / task.folder] if task.folder else []), base]
    for folder in folders:
        hits = {n: _find(folder, n) for n in names}
        found = [p for p in hits.values() if p is not None]
        if found:
            return found, [n for n, p in hits.items() if p is None]
        tried += [str(folder / n) for n in names]
        fallback = folder / f"{split}.jsonl"
        if fallback.exists():
            return [fallback], []
        tried.append(str(fallback))
    raise FileNotFoundError(f"{task.name}: no data for split {split!r}; looked for {', '.join(tried)}")


def load_task_data(
    task: Task,
    *,
    data_dir: str | Path | None = None,
    data_file: str | Path | None = None,
    split: str | None = None,
    revision: str | None = None,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> TaskData:
    """The good items of ``task`` (bad rows become ``problems``). ``limit``: the first N (lm-eval's
    ``--limit``); ``sample``: N items drawn at random (seeded by ``seed`` and the task), kept in file
    order: some release files are sorted by class, so the first N may hold one class only."""
    if limit is not None and sample is not None:
        raise ValueError("give --limit (the first N items) or --sample (N random items), not both")
    split = split or task.split
    problems: list[Problem] = []
    if data_file is not None and not Path(data_file).is_dir():
        path = Path(data_file)
        if not path.exists():
            raise FileNotFoundError(f"{task.name}: {path} does not exist")
        raw, source = _read(task, [path]), str(path)
    elif data_file is not None or (data_dir is not None and not (task.package and not task.local)):
        folder = Path(data_file if data_file is not None else data_dir)
        paths, missing = local_files(task, folder, split)
        if missing:  # a subject or class missing changes what the score means: not a footnote
            raise FileNotFoundError(
                f"{task.name}: {len(missing)} of {len(missing) + len(paths)} release files missing in "
                f"{paths[0].parent}: {', '.join(missing)} (run the task of each subject present, or add them)"
            )
        raw, source = _read(task, paths), ", ".join(str(p) for p in paths)
    elif task.package is not None:
        split = task.split  # a package ships one set
        raw, source = PACKAGES[task.package](), f"package:{task.package}"
    elif task.hub is not None:
        raw = read_hub(task, split, revision)
        rev = revision or task.hub.revision
        source = f"hub:{task.hub.path}" + (f"@{rev}" if rev else "")
    else:
        raise FileNotFoundError(f"{task.name}: no hub dataset or package; pass --data-dir or --data-file")

    data = TaskData(task=task.name, split=split, source=source, problems=problems)
    for where, row in raw:
        try:
            if isinstance(row, BadItem):
                raise row
            data.items.append(Item(where, task.prepare(row)))
        except BadItem as exc:
            data.problems.append(Problem(where, str(exc)))
        if limit is not None and len(data.items) >= limit:
            break
    if limit is not None:
        data.selection = f"first {len(data.items)}"
    if sample is not None and sample < len(data.items):
        total = len(data.items)
        keep = sorted(random.Random(f"{seed}|{task.name}").sample(range(total), sample))
        data.items = [data.items[i] for i in keep]
        data.selection = f"random {sample} of {total}, seed {seed}"
    for p in data.problems[:5]:
        log.warning("%s: skipped %s", task.name, p)
    if len(data.problems) > 5:
        log.warning(
            "%s: ... %d rows skipped in all (listed in the results file)", task.name, len(data.problems)
        )
    return data
