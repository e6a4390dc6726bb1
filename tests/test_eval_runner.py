"""End to end: evaluate, results file, report, the CLI, ELBO perplexity, sample quality."""

import json
import math
from pathlib import Path

import pytest
import torch

from diffutron.cli import main
from diffutron.evaluation import EvalConfig, evaluate, resolve_tasks, text_perplexity
from diffutron.evaluation.genquality import generative_perplexity, unigram_entropy
from diffutron.evaluation.report import PUBLISHED, markdown_report, plot_comparison
from diffutron.models.checkpoint import DiffusionSettings, Loaded, save_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Micro models: one thread is faster, and far faster on a busy machine (no OpenMP spin-waits)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def loaded(micro_model, tokenizer):
    settings = DiffusionSettings(mask_token_id=tokenizer.mask_token_id)
    return Loaded(micro_model.eval(), tokenizer, settings, source="micro")


def test_results_hold_each_metric_with_n_and_stderr_and_are_reproducible(loaded):
    tasks = resolve_tasks("xcopa_tr,news_cat,ironytr,tquad")
    cfg = EvalConfig(data_dir=str(FIXTURES), samples=4, max_new_tokens=4, seed=3)
    a, b = evaluate(loaded, tasks, cfg).to_dict(), evaluate(loaded, tasks, cfg).to_dict()
    assert a["tasks"] == {
        k: {**v, "seconds": a["tasks"][k]["seconds"], "items_per_second": a["tasks"][k]["items_per_second"]}
        for k, v in b["tasks"].items()
    }
    news = a["tasks"]["news_cat"]
    assert news["n"] == 7 and news["skipped"] == 1 and news["problems"] == ["spor/2.txt: empty file"]
    assert set(news["metrics"]) == {"acc", "acc_norm", "macro_f1"}
    assert all(m["n"] == 7 and m["stderr"] >= 0 for m in news["metrics"].values())
    assert news["chance"] == pytest.approx(0.2) and news["forward_passes"] >= 1
    assert set(a["tasks"]["tquad"]["metrics"]) == {"exact_match", "f1"}
    assert a["settings"]["seed"] == 3 and a["settings"]["samples"] == 4 and a["model"] == "micro"


def test_limit_scores_the_first_n_items(loaded):
    out = evaluate(loaded, resolve_tasks("xcopa_tr"), EvalConfig(data_dir=str(FIXTURES), limit=2, samples=2))
    assert out.tasks["xcopa_tr"].n == 2 and out.tasks["xcopa_tr"].metrics["acc"].n == 2


def test_a_task_without_data_is_reported_and_the_others_still_run(loaded, tmp_path):
    (tmp_path / "xcopa_tr").mkdir()
    (tmp_path / "xcopa_tr" / "test.tr.jsonl").write_text(
        (FIXTURES / "xcopa_tr" / "test.tr.jsonl").read_text(encoding="utf-8"), encoding="utf-8"
    )
    out = evaluate(loaded, resolve_tasks("sts_tr,xcopa_tr"), EvalConfig(data_dir=str(tmp_path), samples=2))
    assert "sts-test-tr.csv" in out.tasks["sts_tr"].error and out.tasks["xcopa_tr"].n == 3


def test_markdown_report_places_the_model_next_to_published_numbers_and_chance(loaded, tmp_path):
    out = evaluate(
        loaded, resolve_tasks("ironytr,xcopa_tr"), EvalConfig(data_dir=str(FIXTURES), samples=2)
    ).to_dict()
    md = markdown_report(out)
    assert "| ironytr | 4 |" in md and f"{PUBLISHED['ironytr']['Diffutron 2nd stage']:.2f}" in md
    header = next(line for line in md.splitlines() if line.startswith("| task |"))
    assert "| chance |" in header and "| Diffutron 2nd stage |" in header
    assert "blank line" in md  # skipped rows are listed, not hidden
    png = plot_comparison(out, tmp_path / "chart.png")
    assert png.stat().st_size > 5000


def test_eval_command_writes_results_markdown_and_chart(micro_model, tokenizer, tmp_path, capsys):
    model_dir = save_checkpoint(tmp_path / "model", micro_model, tokenizer, DiffusionSettings())
    out = tmp_path / "results.json"
    rc = main(
        [
            "eval",
            str(model_dir),
            "--tasks",
            "xcopa_tr,sts_tr",
            "--data-dir",
            str(FIXTURES),
            "--samples",
            "2",
            "--limit",
            "2",
            "--output",
            str(out),
            "--device",
            "cpu",
            "--quiet",
            "--log-items",
            str(tmp_path / "items.jsonl"),
        ]
    )
    assert rc == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["tasks"]["xcopa_tr"]["metrics"]["acc"]["n"] == 2 and results["settings"]["limit"] == 2
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").exists()
    items = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    assert (
        len(items) == 4
        and items[0]["prompt"] == "Kadın şemsiyesini açtı çünkü"
        and len(items[0]["loglikelihoods"]) == 2
    )
    assert "| xcopa_tr | 2 |" in capsys.readouterr().out


def test_eval_command_reads_an_explicit_file_for_one_task(micro_model, tokenizer, tmp_path):
    model_dir = save_checkpoint(tmp_path / "model", micro_model, tokenizer, DiffusionSettings())
    path = FIXTURES / "turkish_plu_step_ordering" / "step-ordering-test.csv"
    out = tmp_path / "r.json"
    rc = main(
        [
            "eval",
            str(model_dir),
            "--tasks",
            "turkish_plu_step_ordering",
            "--data-file",
            f"turkish_plu_step_ordering={path}",
            "--samples",
            "2",
            "--output",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0 and json.loads(out.read_text())["tasks"]["turkish_plu_step_ordering"]["n"] == 2


def test_elbo_perplexity_reports_bits_per_byte_consistent_with_nats_per_token(loaded):
    texts = ["Ankara, Türkiye'nin başkentidir.", "Iğdır'dan İstanbul'a giden otobüs sabah yola çıktı. " * 3]
    r = text_perplexity(
        loaded.model,
        loaded.tokenizer,
        texts,
        mask_id=loaded.mask_id,
        schedule=loaded.settings.make_schedule(),
        t_samples=4,
        max_length=24,
    )
    assert r.documents == 2 and r.windows >= 3 and r.bytes == sum(len(t.strip().encode()) for t in texts)
    assert r.perplexity == pytest.approx(math.exp(r.nelbo_per_token))
    assert r.bits_per_byte == pytest.approx(r.nelbo_per_token * r.tokens / math.log(2) / r.bytes)
    assert r.bits_per_char > r.bits_per_byte  # Turkish letters take two bytes in UTF-8
    again = text_perplexity(
        loaded.model,
        loaded.tokenizer,
        texts,
        mask_id=loaded.mask_id,
        schedule=loaded.settings.make_schedule(),
        t_samples=4,
        max_length=24,
    )
    assert again.nelbo_per_token == r.nelbo_per_token  # deterministic under the seed


def test_perplexity_command_prints_json(micro_model, tokenizer, tmp_path, capsys):
    model_dir = save_checkpoint(tmp_path / "model", micro_model, tokenizer, DiffusionSettings())
    text = tmp_path / "t.txt"
    text.write_text("Bugün hava güneşli.\n\nYarın yağmur bekleniyor.\n", encoding="utf-8")
    assert (
        main(["perplexity", str(model_dir), str(text), "--t-samples", "2", "--json", "--device", "cpu"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["documents"] == 2 and out["bits_per_byte"] > 0 and out["t_samples"] == 2


def test_unigram_entropy_by_hand():
    assert unigram_entropy([[7, 7, 7, 7]]) == 0.0
    assert unigram_entropy([[1, 2, 3, 4], [5, 5]]) == pytest.approx((math.log(4) + 0.0) / 2)


def test_generative_perplexity_under_a_reference_autoregressive_model(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    ref = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2)
    ).eval()
    out = generative_perplexity(["Bugün hava güzel.", "Ankara başkenttir."], (ref, tokenizer))
    n = sum(
        len(tokenizer(t, add_special_tokens=False)["input_ids"])
        for t in ["Bugün hava güzel.", "Ankara başkenttir."]
    )
    assert out["tokens"] == n  # every token after <bos> is scored once
    assert out["perplexity"] == pytest.approx(math.exp(out["nll_per_token"]))
    assert 0.5 * len(tokenizer) < out["perplexity"] < 2 * len(tokenizer)  # a random model: about uniform
