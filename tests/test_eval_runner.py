"""End to end: evaluate, results file, report, the CLI, ELBO perplexity, sample quality."""

import json
import math
from pathlib import Path

import pytest
import torch

from diffutron.cli import main
from diffutron.evaluation import (
    EvalConfig,
    LikelihoodResult,
    evaluate,
    get_task,
    resolve_tasks,
    text_perplexity,
)
from diffutron.evaluation import runner as runner_module
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


# --- metrics from known log-likelihoods ------------------------------------------------------------

# news_cat items (folder, article) and the log-likelihood of each choice, in NEWS_CHOICES order:
#   spor (4 characters), magazin (7), siyaset (7), sağlık (6), ekonomi (7).
# pred = argmax of the log-likelihood, pred_norm = argmax of log-likelihood per character.
NEWS_ITEMS = [
    # folder, article, log-likelihoods, pred, pred_norm
    ("spor", "Takım son dakikada attığı golle kazandı.", [-4, -14, -21, -18, -28], 0, 0),
    ("magazin", "Ünlü şarkıcı yeni albümünü tanıttı.", [-8, -7, -21, -30, -35], 1, 1),
    ("siyasi", "Meclis yeni yasayı kabul etti.", [-6, -35, -7, -30, -35], 0, 2),
    ("saglik", "Uzmanlar kışın bol su içmeyi öneriyor.", [-12, -35, -35, -9, -35], 3, 3),
    ("ekonomi", "Merkez bankası faizi sabit bıraktı.", [-5, -35, -35, -30, -7], 0, 4),
    ("ekonomi", "İhracat geçen yıla göre arttı.", [-20, -3, -35, -30, -14], 1, 1),
]
NEWS_GOLD = {"spor": 0, "magazin": 1, "siyasi": 2, "saglik": 3, "ekonomi": 4}


class KnownScores:
    """Stands in for the Monte-Carlo scorer: the log-likelihoods of NEWS_ITEMS, looked up by the
    article in the prompt and the choice; every request is answered, in order."""

    def __init__(self, *args, **kwargs):
        self.requests = []

    def score(self, requests):
        out = []
        for prompt, continuation in requests:
            (lls,) = [lls for _, text, lls, _, _ in NEWS_ITEMS if text in prompt]
            out.append(float(lls[get_task("news_cat").choices.index(continuation.strip())]))
            self.requests.append((prompt, continuation))
        n = len(out)
        return LikelihoodResult(out, [0.0] * n, [1] * n, [True] * n, forward_passes=1, rows=n)


def test_multiple_choice_metrics_follow_the_log_likelihoods_exactly(loaded, tmp_path, monkeypatch):
    for i, (folder, text, *_rest) in enumerate(NEWS_ITEMS):
        (tmp_path / "news_cat" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "news_cat" / folder / f"{i}.txt").write_text(text, encoding="utf-8")
    monkeypatch.setattr(runner_module, "ContinuationScorer", KnownScores)
    out = evaluate(loaded, resolve_tasks("news_cat"), EvalConfig(data_dir=str(tmp_path), bootstrap_iters=50))
    m = out.tasks["news_cat"].metrics
    golds = [NEWS_GOLD[folder] for folder, *_ in NEWS_ITEMS]
    preds = [pred for *_, pred, _ in NEWS_ITEMS]
    norms = [norm for *_, norm in NEWS_ITEMS]
    assert (preds, norms) == ([0, 1, 0, 3, 0, 1], [0, 1, 2, 3, 4, 1])  # the table above, spelt out
    assert [p == g for p, g in zip(preds, golds, strict=True)] == [True, True, False, True, False, False]
    assert [p == g for p, g in zip(norms, golds, strict=True)] == [True] * 5 + [False]
    # acc: items 1, 2, 4 right; acc_norm: all but the last (per character, "ekonomi" beats "spor")
    assert m["acc"].value == pytest.approx(3 / 6) and m["acc"].n == 6
    assert m["acc_norm"].value == pytest.approx(5 / 6)
    assert m["acc"].stderr == pytest.approx(math.sqrt(0.25 * 6 / 5 / 6))  # sample sd / sqrt(n)
    # macro-F1 over the 5 classes of the acc predictions: F1 per class 1/2, 2/3, 0, 1, 0
    assert m["macro_f1"].value == pytest.approx((1 / 2 + 2 / 3 + 0 + 1 + 0) / 5)
    assert out.tasks["news_cat"].chance == pytest.approx(1 / 5)


def test_irony_f1_is_the_f1_of_the_ironic_class(loaded, tmp_path, monkeypatch):
    # ironic sentences (gold 1) and plain ones (gold 0); the model says "Evet" (1) when it scores higher
    ironic = ["Harika, yine yağmur yağıyor!", "Ne güzel, otobüs yine gecikti.", "Bayıldım bu kuyruğa."]
    plain = ["Bugün hava güneşli.", "Otobüs zamanında geldi."]
    (tmp_path / "ironytr").mkdir()
    (tmp_path / "ironytr" / "ironic.txt").write_text("\n".join(ironic) + "\n", encoding="utf-8")
    (tmp_path / "ironytr" / "non-ironic.txt").write_text("\n".join(plain) + "\n", encoding="utf-8")
    says_yes = {ironic[0], ironic[1], plain[0]}  # tp 2, fn 1, fp 1 -> F1 = 4 / 6

    class Scores(KnownScores):
        def score(self, requests):
            out = []
            for prompt, continuation in requests:
                yes = any(s in prompt for s in says_yes)
                out.append(-1.0 if (continuation.strip() == "Evet") == yes else -2.0)
            n = len(out)
            return LikelihoodResult(out, [0.0] * n, [1] * n, [True] * n, forward_passes=1, rows=n)

    monkeypatch.setattr(runner_module, "ContinuationScorer", Scores)
    out = evaluate(loaded, resolve_tasks("ironytr"), EvalConfig(data_dir=str(tmp_path), bootstrap_iters=20))
    m = out.tasks["ironytr"].metrics
    assert m["f1"].value == pytest.approx(4 / 6) and m["acc"].value == pytest.approx(3 / 5)


def test_a_long_passage_is_cut_from_its_end_and_the_question_is_kept(loaded, tmp_path):
    from conftest import TURKISH_SENTENCES

    context = " ".join(TURKISH_SENTENCES)
    question = "Iğdır'dan İstanbul'a giden otobüs ne zaman yola çıktı?"
    qa = {"id": "q0", "question": question, "answers": [{"text": "sabah erkenden", "answer_start": 85}]}
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [qa]}]}]}
    path = tmp_path / "dev-v0.1.json"
    path.write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    log = tmp_path / "items.jsonl"
    cfg = EvalConfig(data_files={"tquad": str(path)}, max_length=128, max_new_tokens=4, log_items=str(log))
    result = evaluate(loaded, resolve_tasks("tquad"), cfg).tasks["tquad"]
    assert result.error is None and result.n == 1 and result.truncated == 1
    (item,) = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    prompt = item["prompt"]
    assert prompt.startswith("Kaynak: ") and prompt.endswith(f"\n\nSoru: {question}\n\nCevap:")  # all kept
    kept = prompt[len("Kaynak: ") : prompt.index("\n\nSoru:")]
    assert context.startswith(kept) and 40 < len(kept) < len(context) / 2  # the passage's start
    n_tokens = len(loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    budget = 128 - 4 - 1  # the model's positions - new tokens - <bos>
    assert budget - 6 <= n_tokens <= budget  # as much of the passage as fits
