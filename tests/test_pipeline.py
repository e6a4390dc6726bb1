import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import MICRO
from safetensors.torch import load_file
from test_sft import toy_task_file

from diffutron.config import (
    ConfigError,
    ModelConfig,
    RunConfig,
    SftConfig,
    TokenizerConfig,
    TrainingConfig,
    load_recipe,
    recipe_from_dict,
)
from diffutron.diffusion import elbo_perplexity
from diffutron.models import MaskedLMParts, load_checkpoint
from diffutron.shipped import available, resolve
from diffutron.training import loop as loop_module
from diffutron.training import train
from diffutron.training.pipeline import run_recipe, stage_config
from diffutron.training.recipe_check import check_recipe

FAST = dict(batch_size=4, lr=2e-3, warmup_steps=1, eval_every=0, eval_blocks=8, eval_t_samples=2, log_every=1)


def _files(tmp_path, tokenizer, texts):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(t.replace("\n", " ") for t in texts[:8]) + "\n", encoding="utf-8")
    tokenizer.save_pretrained(tmp_path / "tok")
    return corpus, toy_task_file(tmp_path / "toy.jsonl", texts, 120), tmp_path / "tok"


def micro_recipe(tmp_path, tokenizer, texts, steps=(4, 0, 6)) -> dict:
    """CPT with LoRA -> an SFT stage of `steps[1]` steps -> another SFT stage: micro sizes, seconds."""
    corpus, toy, tok = _files(tmp_path, tokenizer, texts)
    sft = {"sources": [str(toy)], "max_length": 96, "val_fraction": 0.1}
    return {
        "name": "micro",
        "model": {"preset": "tiny", "overrides": dict(MICRO)},
        "tokenizer": {"path": str(tok)},
        "defaults": {"training": {**FAST, "save_every": 2, "keep_last": 2}},
        "stages": [
            {
                "name": "cpt",
                "data": {"sources": [str(corpus)], "block_size": 32, "val_fraction": 0.1},
                "lora": {"enabled": True, "r": 4, "alpha": 8},
                "training": {"max_steps": steps[0]},
            },
            {"name": "general", "sft": sft, "training": {"max_steps": steps[1]}},
            {
                "name": "task",
                "sft": sft,
                "diffusion": {"normalization": "sequence"},
                "training": {"max_steps": steps[2], "lr": 1e-3},
            },
        ],
    }


def _weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


def test_a_stage_starts_from_the_previous_stages_merged_weights(tmp_path, tokenizer, tr_corpus):
    spec = micro_recipe(tmp_path, tokenizer, tr_corpus, steps=(4, 0, 3))
    result = run_recipe(recipe_from_dict(spec), tmp_path / "run", progress=False)
    cpt, general, task = (_weights(tmp_path / "run" / s / "model") for s in ("cpt", "general", "task"))
    assert not any("lora" in k for k in cpt)  # LoRA was merged into the CPT model
    assert cpt.keys() == general.keys() == task.keys()
    # ... merged, not dropped: against the same stage run for 0 steps, the CPT model changed in the
    # LoRA-targeted linears and nowhere else
    (tmp_path / "start").mkdir()
    start = micro_recipe(tmp_path / "start", tokenizer, tr_corpus, steps=(0, 0, 0))
    start["stages"] = start["stages"][:1]
    run_recipe(recipe_from_dict(start), tmp_path / "start" / "run", progress=False)
    init = _weights(tmp_path / "start" / "run" / "cpt" / "model")
    targets = ("attn.Wqkv.weight", "attn.Wo.weight", "mlp.Wi.weight", "mlp.Wo.weight")
    for k in init:
        assert torch.equal(init[k], cpt[k]) != k.endswith(targets), f"{k}: changed only if LoRA-targeted"
    for k in cpt:  # a 0-step stage hands on exactly the weights it received
        assert torch.equal(cpt[k], general[k]), k
    assert any(not torch.equal(general[k], task[k]) for k in general)  # ... and a trained one changes them
    for stage in ("cpt", "general", "task"):
        folder = tmp_path / "run" / stage
        for name in ("loss.png", "metrics.jsonl", "summary.json", "model/README.md", "checkpoints"):
            assert (folder / name).exists(), f"{stage}/{name}"
    card = (tmp_path / "run" / "task" / "model" / "README.md").read_text()
    assert "stage `general` of this recipe" in card and "answer ELBO perplexity" in card
    assert load_checkpoint(result.final_model).tokenizer.chat_template  # the final model can chat
    record = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert [s["status"] for s in record["stages"]] == ["done"] * 3
    # a finished stage is only skipped on --resume while the recipe still describes it
    spec["stages"][1]["sft"] = {**spec["stages"][1]["sft"], "max_length": 80}
    with pytest.raises(ValueError, match="`sft` settings differ"):
        run_recipe(recipe_from_dict(spec), tmp_path / "run", resume=True, progress=False)


def test_resume_in_the_middle_of_stage_two_finishes_identically(tmp_path, tokenizer, tr_corpus, monkeypatch):
    recipe = recipe_from_dict(micro_recipe(tmp_path, tokenizer, tr_corpus, steps=(3, 5, 2)))
    run_recipe(recipe, tmp_path / "full", progress=False)

    real_loss, calls = loop_module.mdlm_loss, {"n": 0}

    def crashing_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3 + 4:  # stage 2 (general), step 4: after its checkpoint of step 2
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(loop_module, "mdlm_loss", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, tmp_path / "crash", progress=False)
    monkeypatch.setattr(loop_module, "mdlm_loss", real_loss)
    with pytest.raises(FileExistsError, match="--resume"):
        run_recipe(recipe, tmp_path / "crash", progress=False)
    assert (tmp_path / "crash" / "general" / "checkpoints" / "step-000002").exists()
    assert not (tmp_path / "crash" / "task").exists()
    run_recipe(recipe, tmp_path / "crash", resume=True, progress=False)
    for stage in ("cpt", "general", "task"):
        a, b = _weights(tmp_path / "full" / stage / "model"), _weights(tmp_path / "crash" / stage / "model")
        for k in a:
            assert torch.equal(a[k], b[k]), f"{stage}: {k}"
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "crash" / "general" / "metrics.jsonl").read_text().splitlines()
    ]
    assert sorted(set(steps)) == [0, 1, 2, 3, 4, 5] and steps.count(3) == 1  # each step logged once
    s_full = json.loads((tmp_path / "full" / "general" / "summary.json").read_text())
    s_crash = json.loads((tmp_path / "crash" / "general" / "summary.json").read_text())
    assert s_crash["val_answer_elbo_ppl_start"] == s_full["val_answer_elbo_ppl_start"]  # "before" survives


def test_instruction_tuning_lowers_the_answer_elbo_on_held_out_pairs_of_a_toy_task(
    tmp_path, tokenizer, tr_corpus
):
    _, toy, tok = _files(tmp_path, tokenizer, tr_corpus)

    def cfg(steps: int) -> RunConfig:
        training = {**FAST, "batch_size": 8, "lr": 3e-3, "warmup_steps": 10, "eval_blocks": 32}
        return RunConfig(
            model=ModelConfig(preset="tiny", overrides=dict(MICRO)),
            tokenizer=TokenizerConfig(path=str(tok)),
            sft=SftConfig(sources=[str(toy)], max_length=96, val_fraction=0.15),
            training=TrainingConfig(**training, max_steps=steps),
        )

    r = train(cfg(60), tmp_path / "sft", progress=False)
    start, end = r.summary["val_answer_elbo_ppl_start"], r.summary["val_answer_elbo_ppl"]
    assert end < 0.01 * start, (start, end)  # answer + end-token padding given the prompt, per answer token
    # Stricter, on the same held-out rows before (a 0-step run: the same initial weights) and after:
    # the answer tokens alone with the padding shown, so learning to pad does not count; and the
    # answer's first two tokens alone (the first word: the task itself, not the closing marker).
    init = train(cfg(0), tmp_path / "init", progress=False)
    data = np.load(next((tmp_path / "sft" / "data").glob("sft-*.npz")))
    val = np.sort(data["val_idx"][:32])
    ids = torch.from_numpy(data["ids"][val].astype(np.int64))
    p, a = data["prompt_lengths"][val][:, None], data["answer_lengths"][val][:, None]
    pos = np.arange(ids.shape[1])[None, :]
    answer, first_word = (pos >= p) & (pos < p + a), (pos >= p) & (pos < p + 2)

    def nelbo(model_dir: Path, maskable: np.ndarray) -> float:
        loaded = load_checkpoint(model_dir)
        parts, schedule = MaskedLMParts(loaded.model), loaded.settings.make_schedule()
        mk = torch.from_numpy(maskable)
        return elbo_perplexity(
            parts, ids, schedule=schedule, mask_id=loaded.mask_id, maskable=mk, t_samples=8, seed=1
        ).nelbo_per_token

    assert nelbo(r.model_dir, answer) < nelbo(init.model_dir, answer) - 1.5  # nats per token
    assert nelbo(r.model_dir, first_word) < nelbo(init.model_dir, first_word) - 0.3


def test_the_published_recipe_checks_offline_with_a_cpt_trainable_share_of_14_9_percent(capsys):
    from diffutron.cli import main

    report = check_recipe(load_recipe(resolve("diffutron-0.3b", "recipe")))
    assert report.ok, [s.problems for s in report.stages]
    cpt, stage1, stage2 = report.stages
    assert cpt.share == pytest.approx(0.1494, abs=0.0005) and cpt.method.startswith("LoRA r=256")
    assert stage1.share == stage2.share == 1.0 and (stage1.length, stage1.length_of_run) == (256, "20 epochs")
    assert 300e6 < stage1.total < 315e6  # the mmBERT-base shape, 307M
    assert main(["recipe", "check", "diffutron-0.3b"]) == 0
    out = capsys.readouterr().out
    assert "14.94%" in out and "mmbert-base" in out


def test_shipped_recipes_are_valid_and_the_quickstart_recipe_matches_its_yaml():
    from diffutron.data.corpus import missing_corpus
    from diffutron.languages import get_language
    from diffutron.recipes.quickstart import quickstart_recipe

    recipes = available("recipe")
    assert {r.name for r in recipes} >= {"diffutron-0.3b", "quickstart-tr"}
    for r in recipes:
        assert r.description  # the one-liner `diffutron recipe list` shows
        recipe = load_recipe(r.path)
        report = check_recipe(recipe)  # builds every stage's model (meta device)
        problems = [p for s in report.stages for p in s.problems]
        # the only thing a shipped recipe may lack offline is its language's embedded corpus
        install = missing_corpus(get_language(recipe.language).corpus)
        if install is None:
            assert report.ok, (r.name, problems)
        else:
            assert problems and all(install in p for p in problems), (r.name, problems)
    assert load_recipe(resolve("quickstart-tr", "recipe")) == quickstart_recipe()
    # --mode block: every stage (pre-training and both SFT stages) trains block diffusion, L' = 8;
    # the task stage on most of the answer masked (the digits are read only then), nearly whole blocks
    # in block mode
    block = quickstart_recipe(mode="block", block_size=8)
    assert block.name == "quickstart-tr-block8" and len(block.stages) == 3
    for i, clip in enumerate(([0.45, 0.95], [0.45, 0.95], [0.9, 1.0])):
        diffusion = stage_config(block, i, "runs/x").diffusion
        assert (diffusion.mode, diffusion.block_size, diffusion.t_clip) == ("block", 8, clip)
    task = stage_config(quickstart_recipe(), 2, "runs/x").diffusion
    assert task.mode == "mdlm" and task.t_clip == [0.7, 1.0]
    assert stage_config(quickstart_recipe(), 1, "runs/x").diffusion.t_clip is None
    assert stage_config(quickstart_recipe(), 0, "runs/x").diffusion.t_clip is None  # the MDLM: the bound
    # the quickstart's measured clipped levels per block size (docs/block-diffusion.md)
    from diffutron.recipes.quickstart import quickstart_config

    assert quickstart_config(5.0, mode="block", block_size=4).diffusion.t_clip == [0.5, 1.0]
    assert quickstart_config(5.0, mode="block", block_size=16).diffusion.t_clip == [0.45, 0.95]
    assert quickstart_config(5.0).diffusion.t_clip is None


def test_recipe_check_names_each_problem_on_its_stage(tmp_path, capsys):
    from diffutron.cli import main

    recipe = {
        "name": "broken",
        "model": {"preset": "tiny", "overrides": dict(MICRO)},
        "stages": [
            {
                "name": "cpt",
                "data": {"sources": [str(tmp_path / "missing.txt")], "block_size": 512},  # > 256 positions
                "diffusion": {"schedule": "quadratic"},
                "lora": {"enabled": True, "target_modules": ["q_proj"]},  # not a ModernBERT layer
            },
            {"name": "ok", "sft": {"sources": ["hub:someone/rows"], "max_length": 64}},
            {
                "name": "sft",
                "sft": {"sources": [str(tmp_path / "missing.jsonl")], "too_long": "cut", "val_fraction": 0.0},
                "diffusion": {"normalization": "batch", "estimator": "counts"},
            },
        ],
    }
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    report = check_recipe(load_recipe(path))
    assert not report.ok
    cpt, ok, sft = ([p.split(":")[0] for p in s.problems] for s in report.stages)
    assert ok == []
    assert cpt == [
        "diffusion.schedule",
        "length 512 exceeds the model's 256 positions",
        "data source not found",
        "LoRA",
    ]
    assert sft == [
        "diffusion.normalization must be one of ('token', 'sequence')",
        "diffusion.estimator must be one of ('time', 'count')",
        "sft.too_long must be one of ('drop', 'truncate'), got 'cut'",
        "sft.val_fraction must be in (0, 1) so the stage can be validated, got 0.0",
        "SFT source not found",
    ]
    assert main(["recipe", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM: data source not found" in out and "2 stage(s) have problems." in out


def test_recipe_mistakes_are_errors_naming_the_stage_and_key():
    base = {"stages": [{"name": "a", "data": {}}, {"name": "b", "sft": {"sources": ["x.jsonl"]}}]}
    recipe_from_dict(base)
    bad = {
        "stages": [
            {"name": "a", "data": {}},
            {"name": "b", "sft": {"sources": ["x"]}, "training": {"lrr": 1}},
        ]
    }
    with pytest.raises(ConfigError, match=r"stages\[1\]\.training\.lrr"):
        recipe_from_dict(bad)
    with pytest.raises(ConfigError, match="exactly one of `data`"):
        recipe_from_dict({"stages": [{"name": "a", "data": {}, "sft": {"sources": ["x"]}}]})
    with pytest.raises(ConfigError, match="used twice"):
        recipe_from_dict({"stages": [{"name": "a", "data": {}}, {"name": "a", "data": {}}]})
    with pytest.raises(ConfigError, match="defaults.optimizer"):
        recipe_from_dict({**base, "defaults": {"optimizer": {}}})
    with pytest.raises(ConfigError, match=r"stages\[0\]\.sft\.sources\[0\]\.wieght"):
        recipe_from_dict({"stages": [{"name": "b", "sft": {"sources": [{"path": "x", "wieght": 2}]}}]})


def test_cli_run_resume_and_quickstart_full_on_a_micro_recipe(
    tmp_path, tokenizer, tr_corpus, monkeypatch, capsys
):
    import yaml

    from diffutron.cli import main
    from diffutron.recipes import quickstart

    spec = micro_recipe(tmp_path, tokenizer, tr_corpus, steps=(1, 1, 1))
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    assert "answer ELBO ppl" in capsys.readouterr().out
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2  # started: needs --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--resume"]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 3
    # quickstart --full runs its recipe, then chats with the final model through the stored template
    asked = []
    monkeypatch.setattr(
        quickstart, "quickstart_recipe", lambda *args: (asked.append(args[3:]), recipe_from_dict(spec))[1]
    )
    assert main(["quickstart", "--full", "--out", str(tmp_path / "qs")]) == 0
    out = capsys.readouterr().out
    assert "Chat with the final model" in out and "Merhaba, nasılsın?" in out
    summary = json.loads((tmp_path / "qs" / "summary.json").read_text())
    assert len(summary["chats"]) == len(quickstart.CHAT_PROMPTS) and summary["model_dir"].endswith(
        "task/model"
    )
    # --mode block reaches the recipe (its stages are checked in the shipped-recipe test)
    assert (
        main(["quickstart", "--full", "--mode", "block", "--block-size", "8", "--out", str(tmp_path / "qb")])
        == 0
    )
    assert asked == [("mdlm", 16), ("block", 8)]


def test_a_run_saved_before_an_option_existed_resumes_at_that_options_default(tmp_path):
    """A stage finished by an older version (no ``diffusion.estimator`` in its run_config.json) is
    the same run as today's config with the option at its default, and another run with any other value."""
    from dataclasses import replace

    from diffutron.config import RunConfig, to_dict
    from diffutron.training.loop import check_same_run

    cfg = RunConfig()
    saved = to_dict(cfg)
    del saved["diffusion"]["estimator"]
    (tmp_path / "run_config.json").write_text(json.dumps(saved), encoding="utf-8")
    check_same_run(tmp_path, cfg, resuming=True)  # the default: the same run
    counted = replace(cfg, diffusion=replace(cfg.diffusion, estimator="count"))
    with pytest.raises(ValueError, match="`diffusion` settings differ"):
        check_same_run(tmp_path, counted, resuming=True)
    cosine = replace(cfg, diffusion=replace(cfg.diffusion, schedule="cosine"))
    with pytest.raises(ValueError, match="`diffusion` settings differ"):
        check_same_run(tmp_path, cosine, resuming=True)
