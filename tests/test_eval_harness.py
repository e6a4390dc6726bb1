"""The lm-eval adapter runs stock lm-eval task YAMLs offline (skipped when lm-eval is not installed)."""

import math
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")

from diffutron.models.checkpoint import DiffusionSettings, save_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tests" / "fixtures" / "eval" / "lm_eval"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def checkpoint(micro_model, tokenizer, tmp_path):
    return save_checkpoint(tmp_path / "model", micro_model, tokenizer, DiffusionSettings())


def test_importing_the_adapter_registers_diffutron_next_to_the_stock_models():
    from lm_eval.api.registry import get_model

    from diffutron.evaluation.harness import DiffutronLM

    assert get_model("diffutron") is DiffutronLM
    assert "hf" in lm_eval.api.registry.model_registry  # lm-eval's own models were not crowded out


def test_a_local_task_folder_runs_offline_through_simple_evaluate(checkpoint, monkeypatch):
    from lm_eval.tasks import TaskManager

    import diffutron.evaluation.harness  # noqa: F401 - registers "diffutron"

    monkeypatch.chdir(ROOT)  # the YAMLs name their data relative to the repository
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = lm_eval.simple_evaluate(
        model="diffutron",
        model_args=f"pretrained={checkpoint},mc_samples=4,device=cpu,max_new_tokens=4",
        tasks=["diffutron_toy_mc", "diffutron_toy_gen", "diffutron_toy_ppl"],
        task_manager=TaskManager(include_path=str(TASKS), include_defaults=False),
        bootstrap_iters=0,
        log_samples=True,
    )
    res = out["results"]
    assert 0.0 <= res["diffutron_toy_mc"]["acc,none"] <= 1.0
    assert 0.0 <= res["diffutron_toy_gen"]["exact_match,none"] <= 1.0
    assert math.isfinite(res["diffutron_toy_ppl"]["word_perplexity,none"])
    mc = out["samples"]["diffutron_toy_mc"][0]
    assert len(mc["resps"]) == 2 and all(r[0][0] < 0 for r in mc["resps"])  # one ELBO per choice


def test_adapter_loglikelihood_matches_the_diffutron_scorer(checkpoint):
    from lm_eval.api.instance import Instance

    from diffutron.evaluation.harness import DiffutronLM

    lm = DiffutronLM(pretrained=str(checkpoint), mc_samples=4, device="cpu")
    reqs = [("Soru: Bir hafta kaç gündür?\nCevap:", " yedi"), ("Soru: Bir hafta kaç gündür?\nCevap:", " beş")]
    instances = [Instance("loglikelihood", {}, r, i) for i, r in enumerate(reqs)]
    got = lm.loglikelihood(instances, disable_tqdm=True)
    expected = lm.scorer.score(reqs).loglikelihoods
    assert [g[0] for g in got] == pytest.approx(expected) and all(isinstance(g[1], bool) for g in got)


def test_the_lm_eval_command_hands_every_option_to_lm_eval_unparsed():
    from diffutron.cli import build_parser

    args = ["--model", "diffutron", "--model_args", "pretrained=m,mc_samples=2", "--tasks", "x", "-h"]
    parsed = build_parser().parse_args(["lm-eval", *args])
    assert (
        parsed.args == args
    )  # running it is the simple_evaluate test above (the CLI indexes every stock task)


def test_rolling_loglikelihood_scores_every_token_once_after_as_much_context_as_fits(checkpoint, tokenizer):
    from lm_eval.api.instance import Instance

    from diffutron.evaluation.harness import DiffutronLM

    lm = DiffutronLM(pretrained=str(checkpoint), mc_samples=4, device="cpu", max_length=24)
    text = "Iğdır'dan İstanbul'a giden otobüs sabah erkenden yola çıktı. " * 4
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 3 * 24  # several windows
    seen, real = [], lm.scorer.score_encoded

    def spy(pairs):
        out = real(pairs)
        seen.append((list(pairs), out.loglikelihoods))
        return out

    lm.scorer.score_encoded = spy
    (total,) = lm.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True
    )
    ((pairs, lls),) = seen
    assert [t for p in pairs for t in p.answer] == ids  # every token scored once, in order
    room = 24 - sum(len(a) for a in lm.scorer.affixes)  # <bos> ... <eos> around every window
    start = 0
    for p in pairs:
        assert len(p.ids) <= 24
        assert list(p.context) == ids[start - len(p.context) : start]  # the text right before it
        assert len(p.context) == min(start, room - len(p.answer))  # as much of it as fits
        start += len(p.answer)
    assert total == pytest.approx(sum(lls))
