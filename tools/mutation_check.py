"""Mutation check: do the tests notice when the code is wrong?

Each entry of ``MUTATIONS`` is a plausible bug — a real regression seen in this project or one like
it: a file, an exact snippet of it, what to put instead, and the tests that must then fail. The
script copies the repository to a temporary folder, checks that those tests pass there, then applies
one mutation at a time to the copy, runs its tests with a timeout and reports each mutation as
``killed`` (a test failed: good), ``survived`` (every test passed: the suite misses this bug) or
``error`` (the snippet is gone, or the tests could not run). The working tree is never written to,
so an interrupted run (Ctrl-C) leaves nothing behind but the temporary folder, which is removed.

    python tools/mutation_check.py                      # every mutation; exit 1 if any survives
    python tools/mutation_check.py --list               # names, files and tests
    python tools/mutation_check.py --only eos-ends-batch,elbo-sums-t-samples
    python tools/mutation_check.py --report mutation-report.md

Run it before resolving an issue that touches a mutated module, and record the survivors (target:
none) in docs/testing.md. When code moves and a snippet is no longer found, update the entry:
``tests/test_mutation_list.py`` fails as soon as a snippet is missing or found twice.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "runs",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
    "build",
    "dist",
)


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    replacement: str
    tests: tuple[str, ...]  # pytest node ids that must fail once the mutation is in (each one does)
    why: str  # the bug it stands for


MUTATIONS: list[Mutation] = [
    # --- checkable skills (issue 25) ----------------------------------------------------------
    Mutation(
        name="suffix-harmony-ignores-last-vowel",
        file="src/diffutron/data/skills.py",
        original="    for ch in reversed(turkish_lower(word)):",
        replacement="    for ch in turkish_lower(word):",
        tests=("tests/test_skills.py::test_plural_locative_follows_the_last_vowel",),
        why="the suffix follows the first vowel, not the last: kitap -> kitaplerde (right for ev, okul)",
    ),
    Mutation(
        name="heldout-items-repeat",
        file="src/diffutron/data/skills.py",
        original="        if heldout_items and item in seen:",
        replacement="        if False:",
        tests=(
            "tests/test_skills.py::test_number_words_of_any_length_come_as_often_and_held_out_items_count_once",
        ),
        why="the one held-out one-digit number is scored a dozen times: a skill's exact match leans on it",
    ),
    Mutation(
        name="basamak-lengths-unbalanced",
        file="src/diffutron/data/skills.py",
        original='            if kind == "number-words-any":',
        replacement='            if False:',
        tests=(
            "tests/test_skills.py::test_number_words_of_any_length_come_as_often_and_held_out_items_count_once",
        ),
        why="basamak draws 1..9,999 uniformly: 90 % of its answers are 4, the majority answer scores 90 %",
    ),
    Mutation(
        name="demo-answers-may-coincide",
        file="src/diffutron/recipes/quickstart.py",
        original='        rows.append(next((r for r in candidates if r["output"] not in taken), candidates[0]))',
        replacement="        rows.append(candidates[0])",
        tests=("tests/test_skills.py::test_demo_questions_have_distinct_right_answers",),
        why="two demo questions with the same right answer: equal answers no longer mean a wrong one",
    ),
    Mutation(
        name="replay-share-of-own-rows",
        file="src/diffutron/data/sft.py",
        original="    n = round(share / (1.0 - share) * n_own)",
        replacement="    n = round(share * n_own)",
        tests=("tests/test_skills.py::test_replay_mixes_the_previous_stage_rows_at_the_asked_share",),
        why="replay: 0.3 gives 30 % of the task rows on top (23 % of the mixture), not 30 % of the mixture",
    ),
    Mutation(
        name="skill-item-after-newline",
        file="src/diffutron/data/skills.py",
        original='    return {"instruction": f"{skill.instruction} {item}", "output": skill.answer(item), "item": item}',
        replacement='    return {"instruction": skill.instruction, "input": item, "output": skill.answer(item), "item": item}',
        tests=(
            "tests/test_skills.py::test_a_skill_item_is_spelled_in_the_question_as_in_the_answer_next_to_it",
        ),
        why="the item in alpaca's input lands after a newline: its first word gets other tokens than in the answer",
    ),
    Mutation(
        name="compact-answer-glued-to-marker",
        file="src/diffutron/text/chat.py",
        original='    "assistant": ("[Answer] ", "[/Answer]"),',
        replacement='    "assistant": ("[Answer]", "[/Answer]"),',
        tests=(
            "tests/test_chat.py::test_compact_template_in_jinja_and_python_agree_and_split_prompt_from_answer",
            "tests/test_chat.py::test_chat_markers_are_one_token_each_round_trip_and_let_a_word_keep_its_tokens",
        ),
        why="the answer's first word loses its leading space: spelled unlike the same word in the question",
    ),
    Mutation(
        name="chat-markers-not-added",
        file="src/diffutron/training/prepare.py",
        original="    if tok.chat_markers:  # for sft.chat_template: compact (text/chat.py)",
        replacement="    if False:  # for sft.chat_template: compact (text/chat.py)",
        tests=("tests/test_skills.py::test_a_run_trained_tokenizer_gets_the_chat_markers_when_asked",),
        why="tokenizer.chat_markers ignored: the compact template's markers cost several BPE tokens each",
    ),
    Mutation(
        name="digits-merged-by-bpe",
        file="src/diffutron/text/tokenizer.py",
        original=r'''_SPLIT_PATTERN = r" ?[\p{L}\p{M}]+|\p{N}| ?''',
        replacement=r'''_SPLIT_PATTERN = r" ?[\p{L}\p{M}]+|\p{N}+| ?''',
        tests=("tests/test_tokenizer.py::test_digits_are_one_token_each_whatever_the_corpus_repeats",),
        why="a number's digits go to BPE whole: 1923 becomes one token, 347 is 3 + 47, places are spelled unlike",
    ),
    Mutation(
        name="space-glued-to-first-digit",
        file="src/diffutron/text/tokenizer.py",
        original=r'''_SPLIT_PATTERN = r" ?[\p{L}\p{M}]+|\p{N}| ?''',
        replacement=r'''_SPLIT_PATTERN = r" ?[\p{L}\p{M}]+| ?\p{N}| ?''',
        tests=("tests/test_tokenizer.py::test_digits_are_one_token_each_whatever_the_corpus_repeats",),
        why="' 7' and '7' are two tokens: a number's first digit is spelled unlike its others (the answer's first)",
    ),
    Mutation(
        name="number-words-keep-bir-before-yuz",
        file="src/diffutron/data/skills.py",
        original="    words += ([] if hundreds in (0, 1) else [_ONES[hundreds]]) + ([\"yüz\"] if hundreds else [])",
        replacement="    words += ([] if hundreds == 0 else [_ONES[hundreds]]) + ([\"yüz\"] if hundreds else [])",
        tests=(
            "tests/test_skills.py::test_number_words_writes_turkish_numbers_apart",
            "tests/test_skills.py::test_number_words_agrees_with_num2words_up_to_its_first_error",
        ),
        why="100 is written 'bir yüz': Turkish drops the 'bir' before yüz (and bin)",
    ),
    Mutation(
        name="skill-source-never-stops",
        file="src/diffutron/data/skills.py",
        original="    for item in itertools.islice(items, ROWS_ALONE):",
        replacement="    for item in items:",
        tests=("tests/test_skills.py::test_a_skill_source_of_endless_items_stops",),
        why="a skill-<name> source without max_rows reads its endless items until memory runs out",
    ),
    Mutation(
        name="quickstart-task-stage-full-range",
        file="src/diffutron/recipes/quickstart.py",
        original='''                    **({"diffusion": {"t_clip": task_clip}} if turkish else {}),''',
        replacement='''                    **({"diffusion": {}} if turkish else {}),''',
        tests=("tests/test_pipeline.py::test_shipped_recipes_are_valid_and_the_quickstart_recipe_matches_its_yaml",),
        why="the task stage trains on the full range of levels: the number skill stays at 0 % (docs/benchmarks.md)",
    ),
    # --- block diffusion (issue 23) -----------------------------------------------------------
    Mutation(
        name="block-noise-one-level-per-row",
        file="src/diffutron/diffusion/loss.py",
        original='    block_noise: str = "block",\n',
        replacement='    block_noise: str = "row",\n',
        tests=[
            "tests/test_block_diffusion.py::test_per_block_noise_levels_differ_between_blocks_and_estimate_the_exact_bound",
        ],
        why="block diffusion draws one noise level per row again (BD3-LM draws one per block)",
    ),
    Mutation(
        name="noised-copies-see-each-other",
        file="src/diffutron/diffusion/block.py",
        original="    own = torch.eye(copies, dtype=torch.bool, device=blocks.device)",
        replacement="    own = torch.ones(copies, copies, dtype=torch.bool, device=blocks.device)",
        tests=(
            "tests/test_block_diffusion.py::test_noised_copies_see_their_own_block_and_the_clean_copy_never_each_other",
            "tests/test_block_diffusion.py::test_each_noised_copy_is_scored_as_in_its_own_two_copy_pass",
        ),
        why="k noised copies in one pass attend to each other's block: a copy sees another draw's unmasked tokens",
    ),
    Mutation(
        name="noised-copies-scored-in-the-wrong-rows",
        file="src/diffutron/diffusion/loss.py",
        original="        ce = ce[:, : copies * length].reshape(batch, copies, length).transpose(0, 1).reshape(-1, length)",
        replacement="        ce = ce[:, : copies * length].reshape(copies, batch, length).reshape(-1, length)",
        tests=("tests/test_block_diffusion.py::test_each_noised_copy_is_scored_as_in_its_own_two_copy_pass",),
        why="the head's CE of k copies is put back row-major instead of copy-major: losses land on other rows' masks",
    ),
    Mutation(
        name="block-noise-neighbouring-strata",
        file="src/diffutron/diffusion/loss.py",
        original="                .view(n_blocks, batch)\n                .T\n",
        replacement="                .view(batch, n_blocks)\n",
        tests=[
            "tests/test_block_diffusion.py::test_per_block_noise_levels_differ_between_blocks_and_estimate_the_exact_bound",
        ],
        why="per-block levels take neighbouring strata, so a row's blocks get nearly the same level",
    ),
    Mutation(
        name="block-counts-ranked-over-the-row",
        file="src/diffutron/diffusion/masking.py",
        original="    rank = rank - start.gather(1, seg)\n",
        replacement="",
        tests=[
            "tests/test_block_diffusion.py::test_per_block_noise_levels_differ_between_blocks_and_estimate_the_exact_bound",
        ],
        why="the per-block count draw ranks positions over the whole row, so later blocks are never masked",
    ),
    Mutation(
        name="block-training-runs-the-mdlm",
        file="src/diffutron/training/loop.py",
        original="                block_size=run.settings.diffusion_block,\n                clip=",
        replacement="                clip=",
        tests=(
            "tests/test_block_diffusion.py::test_an_sft_run_in_block_mode_trains_with_the_prompt_clean_and_saves_the_mode",
        ),
        why="diffusion.mode: block is saved with the model but the training loop trains an MDLM",
    ),
    Mutation(
        name="block-cache-keeps-noisy-keys",
        file="src/diffutron/models/kv_cache.py",
        original="        self.upto[rows] = start\n",
        replacement="        self.upto[rows] = end\n",
        tests=(
            "tests/test_block_diffusion.py::test_the_one_pass_training_forward_equals_a_block_by_block_forward_with_the_exact_cache",
            "tests/test_block_diffusion.py::test_block_sampling_decodes_block_by_block_and_matches_the_model_conditional",
        ),
        why="the exact block cache keeps a block's keys/values from its last noisy step instead of recomputing them clean",
    ),
    Mutation(
        name="block-cache-ignores-the-block-rule",
        file="src/diffutron/models/kv_cache.py",
        original="out = self._run(ids, attention, idx, rows=rows, store=None, allowed=allowed, write_back=True)",
        replacement="out = self._run(ids, attention, idx, rows=rows, store=None, allowed=None, write_back=True)",
        tests=(
            "tests/test_block_diffusion.py::test_the_one_pass_training_forward_equals_a_block_by_block_forward_with_the_exact_cache",
        ),
        why="the exact block cache lets the prompt and a finished block see the current block (bidirectional)",
    ),
    Mutation(
        name="block-xt-sees-its-own-clean-block",
        file="src/diffutron/diffusion/block.py",
        original="    xt_x0 = bk < bq\n",
        replacement="    xt_x0 = bk <= bq\n",
        tests=(
            "tests/test_block_diffusion.py::test_the_training_mask_is_the_bd3lm_table",
            "tests/test_block_diffusion.py::test_the_one_pass_training_forward_equals_a_block_by_block_forward",
        ),
        why="block diffusion: the noisy copy sees the clean copy of its own block (the answer leaks into training)",
    ),
    Mutation(
        name="block-window-on-2l-indices",
        file="src/diffutron/diffusion/block.py",
        original="    near = (pos[:, :, None] - pos[:, None, :]).abs() <= int(config.sliding_window)\n",
        replacement="    idx = torch.arange(width, device=allowed.device)\n    near = ((idx[:, None] - idx[None, :]).abs() <= int(config.sliding_window))[None]\n",
        tests=(
            "tests/test_block_diffusion.py::test_the_sliding_window_applies_to_shared_positions_in_both_copies",
            "tests/test_block_diffusion.py::test_the_one_pass_training_forward_equals_a_block_by_block_forward",
        ),
        why="block diffusion: the sliding window is measured on the 2L indices (transformers' own sliding mask), not the shared positions",
    ),
    Mutation(
        name="block-sliding-layers-unwindowed",
        file="src/diffutron/diffusion/block.py",
        original='return {"full_attention": full, "sliding_attention": build(allowed & near)}',
        replacement='return {"full_attention": full, "sliding_attention": full}',
        tests=(
            "tests/test_block_diffusion.py::test_the_sliding_window_applies_to_shared_positions_in_both_copies",
            "tests/test_block_diffusion.py::test_block_size_one_is_an_autoregressive_nll_of_the_same_tokens",
        ),
        why="block diffusion: ModernBERT's sliding-window layers attend globally under the block mask",
    ),
    Mutation(
        name="block-positions-not-shared",
        file="src/diffutron/diffusion/block.py",
        original="positions = torch.arange(length, device=noisy.device).repeat(copies + 1)",
        replacement="positions = torch.arange((copies + 1) * length, device=noisy.device)",
        tests=(
            "tests/test_block_diffusion.py::test_the_training_mask_is_the_bd3lm_table",
            "tests/test_block_diffusion.py::test_block_size_of_the_whole_row_is_the_mdlm_loss_on_the_same_masks",
            "tests/test_block_diffusion.py::test_the_one_pass_training_forward_equals_a_block_by_block_forward",
        ),
        why="block diffusion: the clean copy gets positions L..2L-1, so rotary positions differ between the copies",
    ),
    Mutation(
        name="block-prompt-cut-into-blocks",
        file="src/diffutron/diffusion/block.py",
        original='return torch.where(rel >= 0, torch.div(rel, block_size, rounding_mode="floor"), -1)',
        replacement='return torch.div(pos[None, :].expand_as(rel), block_size, rounding_mode="floor")',
        tests=(
            "tests/test_block_diffusion.py::test_the_training_mask_is_the_bd3lm_table",
            "tests/test_block_diffusion.py::test_multiple_choice_scoring_of_a_block_model_is_its_exact_bound_and_greedy_its_block_argmax",
        ),
        why="block diffusion: blocks are cut from position 0, not from the answer's start (an SFT prompt shares a block with the answer)",
    ),
    Mutation(
        name="block-clip-ignored",
        file="src/diffutron/diffusion/masking.py",
        original="low, high = check_clip(clip) if clip is not None else (eps, 1.0)",
        replacement="low, high = (eps, 1.0)",
        tests=(
            "tests/test_block_diffusion.py::test_clipped_noise_levels_stay_in_their_range_and_bad_ranges_are_refused",
        ),
        why="diffusion.t_clip is accepted but training still draws t over [eps, 1)",
    ),
    Mutation(
        name="block-elbo-ignores-the-mode",
        file="src/diffutron/diffusion/elbo.py",
        original="                parts, ids, noisy, masked, am, weights, suppress_id=mask_id, block_size=block_size, maskable=mk\n",
        replacement="                parts, ids, noisy, masked, am, weights, suppress_id=mask_id, maskable=mk\n",
        tests=(
            "tests/test_block_diffusion.py::test_block_elbo_perplexity_estimates_the_exact_bound_summed_over_blocks",
        ),
        why="ELBO perplexity scores a block model as an MDLM (another model's bound)",
    ),
    Mutation(
        name="block-mode-not-loaded",
        file="src/diffutron/models/checkpoint.py",
        original="attach_block_size(model, settings.diffusion_block)",
        replacement="attach_block_size(model, None)",
        tests=("tests/test_block_diffusion.py::test_the_mode_is_saved_with_the_checkpoint_and_read_back",),
        why="a saved block model loads as an MDLM: it samples and scores in the wrong mode without a flag",
    ),
    Mutation(
        name="block-scorer-ignores-the-mode",
        file="src/diffutron/evaluation/likelihood.py",
        original="                block_size=self.block_size,\n",
        replacement="",
        tests=(
            "tests/test_block_diffusion.py::test_multiple_choice_scoring_of_a_block_model_is_its_exact_bound_and_greedy_its_block_argmax",
        ),
        why="multiple-choice scoring and lm-eval score a block model by the MDLM estimator",
    ),
    Mutation(
        name="block-sampler-sees-the-whole-canvas",
        file="src/diffutron/sampling/engine.py",
        original="encode = functools.partial(self._encode_blocks, blocks)",
        replacement="encode = None",
        tests=(
            "tests/test_block_diffusion.py::test_block_sampling_decodes_block_by_block_and_matches_the_model_conditional",
        ),
        why="a block model samples with full bidirectional attention: the prompt and finished blocks see the current block's masks, never so in training",
    ),
    # --- evaluation ---------------------------------------------------------------------------
    Mutation(
        name="mc-picks-lowest",
        file="src/diffutron/evaluation/runner.py",
        original="preds.append(argmax(lls))",
        replacement="preds.append(min(range(len(lls)), key=lls.__getitem__))",
        tests=(
            "tests/test_eval_runner.py::test_multiple_choice_metrics_follow_the_log_likelihoods_exactly",
            "tests/test_eval_runner.py::test_irony_f1_is_the_f1_of_the_ironic_class",
        ),
        why="multiple choice picks the lowest log-likelihood (argmax -> argmin)",
    ),
    Mutation(
        name="acc-norm-always-first",
        file="src/diffutron/evaluation/runner.py",
        original="preds_norm.append(argmax(per_char))",
        replacement="preds_norm.append(0)",
        tests=("tests/test_eval_runner.py::test_multiple_choice_metrics_follow_the_log_likelihoods_exactly",),
        why="acc_norm always predicts choice 0",
    ),
    Mutation(
        name="context-cut-from-the-right",
        file="src/diffutron/evaluation/likelihood.py",
        original="return EncodedPair(pair.context[excess:], pair.answer, pair.prefix, pair.suffix), True",
        replacement="return EncodedPair(pair.context[:-excess], pair.answer, pair.prefix, pair.suffix), True",
        tests=("tests/test_eval_likelihood.py::test_the_context_kept_is_its_last_tokens",),
        why="a long context loses its end (next to the answer) instead of its start",
    ),
    Mutation(
        name="passage-cut-from-its-start",
        file="src/diffutron/evaluation/runner.py",
        original="return render(task, {**item, key: full[:lo]}), True",
        replacement="return render(task, {**item, key: full[len(full) - lo :]}), True",
        tests=(
            "tests/test_eval_runner.py::test_a_long_passage_is_cut_from_its_end_and_the_question_is_kept",
        ),
        why="a generation prompt that is too long keeps the end of its passage, not the start",
    ),
    Mutation(
        name="rolling-windows-overlap",
        file="src/diffutron/evaluation/harness.py",
        original="for i in range(0, len(ids), window)",
        replacement="for i in range(0, len(ids), max(1, window - 1))",
        tests=(
            "tests/test_eval_harness.py::test_rolling_loglikelihood_scores_every_token_once_after_as_much_context_as_fits",
        ),
        why="lm-eval's rolling log-likelihood scores some tokens twice",
    ),
    Mutation(
        name="elbo-sums-t-samples",
        file="src/diffutron/diffusion/elbo.py",
        original="total *= 1.0 / t_samples",
        replacement="total *= 1.0",
        tests=(
            "tests/test_diffusion.py::test_elbo_perplexity_estimates_the_exact_elbo_within_its_standard_error",
        ),
        why="elbo_perplexity sums its t-samples instead of averaging them",
    ),
    Mutation(
        name="mc-stderr-counts-merged-rows-once",
        file="src/diffutron/evaluation/likelihood.py",
        original="per_sample[row.request] += [-value * cfg.samples / row.count] * row.count",
        replacement="per_sample[row.request] += [-value * cfg.samples / row.count]",
        tests=(
            "tests/test_eval_likelihood.py::test_reported_standard_error_matches_the_spread_over_seeds_when_rows_are_merged",
        ),
        why="samples merged into one row count as one Monte-Carlo sample: the standard error is ~1.9x too large",
    ),
    # --- training -----------------------------------------------------------------------------
    Mutation(
        name="lora-dropped-not-merged",
        file="src/diffutron/training/loop.py",
        original="if cfg.lora.enabled and cfg.lora.merge:\n            net = merge_lora(net)",
        replacement="if cfg.lora.enabled and cfg.lora.merge:\n            net = net.unload()",
        tests=(
            "tests/test_training.py::test_lora_training_changes_only_adapters_and_saves_a_merged_model",
            "tests/test_pipeline.py::test_a_stage_starts_from_the_previous_stages_merged_weights",
        ),
        why="the saved model drops the LoRA adapters instead of merging them: continual pre-training lost",
    ),
    Mutation(
        name="resume-refuses-older-runs",
        file="src/diffutron/training/loop.py",
        original="    defaults = to_dict(type(section)())\n    return {**{k: v for k, v in defaults.items() if k not in saved}, **saved}",
        replacement="    return saved",
        tests=(
            "tests/test_pipeline.py::test_a_run_saved_before_an_option_existed_resumes_at_that_options_default",
        ),
        why="a run saved before an option existed is refused on resume as another model (the testbed's live bug)",
    ),
    Mutation(
        name="resume-takes-new-values-as-old",
        file="src/diffutron/training/loop.py",
        original="    defaults = to_dict(type(section)())\n",
        replacement="    defaults = to_dict(section)\n",
        tests=(
            "tests/test_pipeline.py::test_a_run_saved_before_an_option_existed_resumes_at_that_options_default",
        ),
        why="an option missing from an old run takes this config's value, so a changed option resumes silently",
    ),
    Mutation(
        name="sft-prompts-maskable",
        file="src/diffutron/training/loop.py",
        original="        if self.prompt_lengths is None:\n            return ids, torch.ones_like(ids, dtype=torch.bool)",
        replacement="        if True:  # mutated\n            return ids, torch.ones_like(ids, dtype=torch.bool)",
        tests=("tests/test_sft.py::test_prompt_tokens_are_never_masked_across_many_random_draws",),
        why="every position of an SFT batch is maskable: prompts are masked and scored",
    ),
    Mutation(
        name="keep-last-keeps-the-oldest",
        file="src/diffutron/training/state.py",
        original="for old in checkpoint_dirs(root)[:-keep_last]:",
        replacement="for old in checkpoint_dirs(root)[keep_last:]:",
        tests=(
            "tests/test_crash_resume.py::test_keep_last_keeps_the_newest_checkpoints_and_removes_the_rest",
        ),
        why="checkpoint pruning keeps the oldest checkpoints and deletes the newest",
    ),
    Mutation(
        name="keep-last-prunes-nothing",
        file="src/diffutron/training/state.py",
        original="if accelerator.is_main_process and keep_last > 0:",
        replacement="if accelerator.is_main_process and keep_last < 0:",
        tests=(
            "tests/test_crash_resume.py::test_keep_last_keeps_the_newest_checkpoints_and_removes_the_rest",
        ),
        why="keep_last is ignored: every checkpoint stays and the disk fills",
    ),
    # --- config -------------------------------------------------------------------------------
    Mutation(
        name="yaml-no-rejected-as-text",
        file="src/diffutron/config.py",
        original="    if tp is str and isinstance(value, int):\n",
        replacement="    if False:  # mutated\n",
        tests=("tests/test_cli.py::test_precision_takes_its_documented_values_from_set_and_from_yaml",),
        why="a text key refuses what YAML read as a boolean or number: --set training.precision=no fails",
    ),
    Mutation(
        name="mapping-values-unchecked",
        file="src/diffutron/config.py",
        original='        return {_check(k, key_tp, where): _check(v, item_tp, f"{where}.{k}") for k, v in value.items()}',
        replacement="        return dict(value)",
        tests=("tests/test_cli.py::test_precision_takes_its_documented_values_from_set_and_from_yaml",),
        why="a mapping of text (sft fields) keeps what YAML read as a boolean: a column named no becomes False",
    ),
    Mutation(
        name="precision-unchecked",
        file="src/diffutron/config.py",
        original="        if self.precision not in PRECISIONS:",
        replacement="        if False:  # mutated",
        tests=("tests/test_cli.py::test_a_precision_nobody_documents_is_a_clear_error_before_training",),
        why="an unknown training.precision passes the config and fails inside accelerate at the run's start",
    ),
    Mutation(
        name="fp32-passed-to-accelerate",
        file="src/diffutron/config.py",
        original='            self.precision = "no"',
        replacement="            pass  # mutated",
        tests=("tests/test_cli.py::test_precision_takes_its_documented_values_from_set_and_from_yaml",),
        why="precision fp32 reaches accelerate, which knows it only as 'no'",
    ),
    # --- serving ------------------------------------------------------------------------------
    Mutation(
        name="infill-text-counted-as-generated",
        file="src/diffutron/serving/scheduler.py",
        original="tokens = editable if job.infill else len(out.token_ids[0])",
        replacement="tokens = len(out.token_ids[0])",
        tests=(
            "tests/serving/test_serving_api.py::test_infill_counts_the_filled_positions_as_generated_and_the_rest_once_as_prompt",
        ),
        why="infill's completion_tokens, tokens/s and /metrics count the text kept between the holes (issue 20)",
    ),
    Mutation(
        name="infill-holes-counted-as-prompt",
        file="src/diffutron/serving/scheduler.py",
        original='"prompt_tokens": int(row.start.attention.sum()) - editable,',
        replacement='"prompt_tokens": int(row.start.attention.sum()) - (0 if job.infill else editable),',
        tests=(
            "tests/serving/test_serving_api.py::test_infill_counts_the_filled_positions_as_generated_and_the_rest_once_as_prompt",
        ),
        why="infill's prompt_tokens include the holes the model filled (issue 20)",
    ),
    Mutation(
        name="usage-counts-prompt-per-choice",
        file="src/diffutron/serving/app.py",
        original="for i in range(0, len(job.rows), job.n) if i in outputs",
        replacement="for i in range(len(job.rows)) if i in outputs",
        tests=("tests/serving/test_serving_api.py::test_usage_counts_each_prompt_once_for_its_n_choices",),
        why="usage.prompt_tokens counts a prompt once per choice, not once as OpenAI does",
    ),
    Mutation(
        name="max-n-ignores-prompt-list",
        file="src/diffutron/serving/app.py",
        original="if len(prompts) * req.n > limits.max_n:",
        replacement="if req.n > limits.max_n:",
        tests=("tests/serving/test_serving_errors.py::test_a_list_of_prompts_times_n_above_max_n_is_a_400",),
        why="a list of prompts multiplies the rows past max_n unchecked",
    ),
    Mutation(
        name="wide-request-waits-forever",
        file="src/diffutron/serving/scheduler.py",
        original="if rows and rows + len(job.prompts) > self.max_batch:",
        replacement="if rows + len(job.prompts) > self.max_batch:",
        tests=(
            "tests/serving/test_serving_errors.py::test_a_request_with_more_rows_than_max_batch_runs_once_the_batch_is_empty",
        ),
        why="a request with more rows than max_batch waits for room that never comes (and blocks the queue)",
    ),
    # --- data ---------------------------------------------------------------------------------
    Mutation(
        name="sft-problems-at-row-not-line",
        file="src/diffutron/data/sft.py",
        original="    for n, row in numbered:\n        report.records += 1\n        yield n, row",
        replacement=(
            "    for n, (_, row) in enumerate(numbered, start=1):\n        report.records += 1\n        yield n, row"
        ),
        tests=(
            "tests/test_sft.py::test_bad_rows_are_reported_and_skipped_not_fatal",
            "tests/test_sft.py::test_problems_after_blank_lines_are_reported_at_their_file_line",
        ),
        why="SFT JSONL problems are reported at the row count, not the file line (issue 13's live bug)",
    ),
    Mutation(
        name="jsonl-last-line-reported-one-early",
        file="src/diffutron/data/sources.py",
        original='yield line + 1, (b"".join(parts) if size <= _MAX_JSON_LINE_BYTES else None)',
        replacement='yield line, (b"".join(parts) if size <= _MAX_JSON_LINE_BYTES else None)',
        tests=("tests/test_data.py::test_a_bad_last_line_without_a_newline_is_reported_at_its_own_line",),
        why="a JSONL file's last line without a newline is reported at the line before it",
    ),
    Mutation(
        name="recipe-check-misses-sft-file",
        file="src/diffutron/training/recipe_check.py",
        original="elif s.path and not Path(s.path).exists():",
        replacement="elif False:",
        tests=("tests/test_pipeline.py::test_recipe_check_names_each_problem_on_its_stage",),
        why="`recipe check` passes a recipe whose SFT file does not exist",
    ),
    # --- sampling -----------------------------------------------------------------------------
    Mutation(
        name="eos-ends-the-batch",
        file="src/diffutron/sampling/engine.py",
        original="ended |= self.stop_eos & _ended_by_eos(self.canvas, self.editable, mask_id, self.eos_id)",
        replacement=(
            "ended |= (self.stop_eos & _ended_by_eos(self.canvas, self.editable, mask_id, self.eos_id)).any()"
        ),
        tests=("tests/test_sampling_contracts.py::test_one_row_ending_early_leaves_the_other_rows_running",),
        why="one row's end token finishes the whole batch",
    ),
    Mutation(
        name="eos-stops-with-masks-before-it",
        file="src/diffutron/sampling/engine.py",
        original="return is_eos.any(1) & ~((canvas == mask_id) & before_first_eos).any(1)",
        replacement="return is_eos.any(1)",
        tests=(
            "tests/test_sampling_rules.py::test_end_token_stops_the_row_once_everything_before_it_is_filled",
            "tests/test_sampling_contracts.py::test_one_row_ending_early_leaves_the_other_rows_running",
        ),
        why="an end token committed before earlier positions are filled ends the row: the holes become end tokens",
    ),
    Mutation(
        name="kv-cache-recomputes-only-masks",
        file="src/diffutron/sampling/engine.py",
        original="current=self.block[sub, :w] == self.cur[sub, None],",
        replacement="current=(self.block[sub, :w] == self.cur[sub, None]) & (self.canvas[sub, :w] == mask_id),",
        tests=(
            "tests/test_kv_cache.py::test_between_refreshes_every_changed_position_of_the_block_is_recomputed",
        ),
        why="between refreshes the cache recomputes only the still-masked positions: committed tokens keep their mask-time keys",
    ),
    Mutation(
        name="sampler-attends-to-padding",
        file="src/diffutron/sampling/engine.py",
        original="hidden = parts.encode(ids, None if bool(attention.all()) else attention)",
        replacement="hidden = parts.encode(ids, None)",
        tests=(
            "tests/test_sampling_contracts.py::test_padding_is_never_attended_to",
            "tests/test_sampling_contracts.py::test_batched_generation_equals_one_by_one_on_a_model_that_reads_its_context",
            "tests/test_sampling.py::test_batched_generation_equals_one_by_one",
        ),
        why="the sampler attends to the padding of shorter rows",
    ),
    # --- adaptive commit rules (issue 26) ---------------------------------------------------------
    Mutation(
        name="page-ignores-server-preset",
        file="src/diffutron/serving/static/app.js",
        original="      applyPreset(info.preset);",
        replacement="",
        tests=("tests/serving/test_serving_page.py::test_a_question_unmasks_live_and_replays",),
        why="the page keeps its static sampler fields, so it decodes unlike the API's default preset",
    ),
    Mutation(
        name="entropy-budget-per-token",
        file="src/diffutron/sampling/commit.py",
        original="lambda s: (-s).cumsum(1) <= budget",
        replacement="lambda s: -s <= budget",
        tests=(
            "tests/test_sampling_rules.py::test_entropy_budget_rule_takes_lowest_entropy_first_while_the_sum_fits",
        ),
        why="the entropy budget bounds each token's entropy instead of their sum: a pass commits too much",
    ),
    Mutation(
        name="factor-rule-off-by-one",
        file="src/diffutron/sampling/commit.py",
        original="lambda p: (n + 1) * (1 - p) < factor",
        replacement="lambda p: n * (1 - p) < factor",
        tests=(
            "tests/test_sampling_rules.py::"
            "test_factor_rule_commits_the_confident_prefix_while_n_plus_one_times_error_is_below_f",
        ),
        why="Fast-dLLM's factor (n + 1) written as n: more tokens per pass than the rule allows",
    ),
    Mutation(
        name="threshold-commits-nothing",
        file="src/diffutron/sampling/commit.py",
        original="return candidates & ((scores >= tau) | (rank_in_row(scores) == 0))",
        replacement="return candidates & (scores >= tau)",
        tests=(
            "tests/test_sampling_rules.py::test_threshold_commits_every_confident_position_and_at_least_one_per_pass",
        ),
        why="threshold decoding drops 'at least one token per pass' (the loop used to spin forever)",
    ),
    Mutation(
        name="stop-strings-search-the-prompt",
        file="src/diffutron/sampling/engine.py",
        original='"stop_start": stop_start,',
        replacement='"stop_start": torch.zeros_like(stop_start),',
        tests=(
            "tests/test_sampling_contracts.py::test_a_stop_string_in_the_prompt_or_an_earlier_turn_does_not_end_the_answer",
            "tests/serving/test_serving_api.py::test_an_earlier_turns_answer_end_does_not_end_the_chat_answer",
        ),
        why="stop strings are searched in the prompt too: an earlier chat turn's [/Answer] ends the answer at once",
    ),
    Mutation(
        name="group-key-drops-temperature",
        file="src/diffutron/sampling/engine.py",
        original="    return (\n        cfg.temperature,\n",
        replacement="    return (\n",
        tests=(
            "tests/test_sampling_contracts.py::test_rows_that_differ_in_one_sampling_setting_each_get_their_alone_output",
        ),
        why="rows that differ only in temperature share one proposal call with the first row's settings",
    ),
    Mutation(
        name="group-key-drops-top-k",
        file="src/diffutron/sampling/engine.py",
        original="        cfg.top_k,\n        cfg.top_p,\n",
        replacement="        cfg.top_p,\n",
        tests=(
            "tests/test_sampling_contracts.py::test_rows_that_differ_in_one_sampling_setting_each_get_their_alone_output",
        ),
        why="rows that differ only in top_k share one proposal call with the first row's settings",
    ),
    Mutation(
        name="group-key-drops-top-p",
        file="src/diffutron/sampling/engine.py",
        original="        cfg.top_p,\n        cfg.repetition_penalty,\n",
        replacement="        cfg.repetition_penalty,\n",
        tests=(
            "tests/test_sampling_contracts.py::test_rows_that_differ_in_one_sampling_setting_each_get_their_alone_output",
        ),
        why="rows that differ only in top_p share one proposal call with the first row's settings",
    ),
    Mutation(
        name="group-key-drops-repetition-penalty",
        file="src/diffutron/sampling/engine.py",
        original="        cfg.repetition_penalty,\n        cfg.guidance_scale,\n",
        replacement="        cfg.guidance_scale,\n",
        tests=(
            "tests/test_sampling_contracts.py::test_rows_that_differ_in_one_sampling_setting_each_get_their_alone_output",
        ),
        why="rows that differ only in repetition_penalty share one proposal call with the first row's settings",
    ),
    # --- device and precision (issue 21) ---------------------------------------------------------
    Mutation(
        name="kv-cache-stores-in-the-embeddings-dtype",
        file="src/diffutron/models/kv_cache.py",
        original="self._storage(len(self.block), w, k)",
        replacement="self._storage(len(self.block), w, x)",
        tests=(
            "tests/test_device_dtype.py::test_the_cache_keeps_keys_in_their_dtype",
            "tests/test_device_dtype.py::test_the_cached_sampler_runs_in_bf16_and_agrees_with_fp32_greedy",
        ),
        why="the cache's storage takes the float32 embeddings' dtype: index_copy_ fails under bf16 autocast",
    ),
    Mutation(
        name="head-casts-the-decoder-per-chunk",
        file="src/diffutron/models/heads.py",
        original="weight, bias = weight.to(dtype), bias.to(dtype)",
        replacement="weight, bias = weight, bias",
        tests=(
            "tests/test_device_dtype.py::test_the_chunked_head_under_autocast_equals_the_unchunked_one_and_casts_a_frozen_decoder_once",
        ),
        why="a frozen 256k decoder is re-cast to bf16 in every chunk and recomputation (~75 GB per micro-batch)",
    ),
    Mutation(
        name="dtype-flag-never-reaches-the-model",
        file="src/diffutron/models/checkpoint.py",
        original="return load_checkpoint(name_or_path, device=dev, dtype=dt, revision=revision)",
        replacement="return load_checkpoint(name_or_path, device=dev, revision=revision)",
        tests=(
            "tests/test_device_dtype.py::test_generate_loads_the_weights_in_the_dtype_asked",
            "tests/test_device_dtype.py::test_eval_perplexity_serve_and_infill_take_device_and_dtype",
        ),
        why="--dtype parses but the weights load in float32: the GPU runs fp32 matmuls",
    ),
    Mutation(
        name="chunk-limit-key-not-passed-to-the-loss",
        file="src/diffutron/training/loop.py",
        original="max_logit_elements=tc.max_logit_elements,",
        replacement="",
        tests=("tests/test_device_dtype.py::test_the_training_config_sets_the_heads_chunk_limit",),
        why="training.max_logit_elements parses but the head keeps its built-in chunk limit",
    ),
    Mutation(
        name="gpu-check-stops-at-the-first-failure",
        file="benchmarks/gpu_check.py",
        original="except Exception as exc:  # noqa: BLE001 - any failure of a section is a result to keep",
        replacement="except KeyboardInterrupt as exc:  # noqa: BLE001",
        tests=("tests/test_gpu_check.py::test_a_failing_section_keeps_what_ran_and_the_rest_still_runs",),
        why="a crash in the first GPU section loses every later number (the first GPU run's fate)",
    ),
    Mutation(
        name="lr-steps-per-process",
        file="src/diffutron/training/loop.py",
        original="step_scheduler_with_optimizer=False,",
        replacement="step_scheduler_with_optimizer=True,",
        tests=("tests/test_distributed.py::test_the_lr_schedule_on_two_processes_is_the_one_on_one",),
        why="accelerate steps the LR once per process per step: on 2 processes the schedule runs twice as fast",
    ),
    Mutation(
        name="warmup-ratio-frozen-at-build",
        file="src/diffutron/training/loop.py",
        original="    def fn(step: int) -> float:\n        total = max(state.total_steps, 1)\n",
        replacement="    total = max(state.total_steps, 1)\n\n    def fn(step: int) -> float:\n",
        tests=(
            "tests/test_training.py::test_the_lr_schedule_follows_a_total_that_changes_after_it_is_built",
        ),
        why="the warmup ratio and cosine keep the total the schedule was built with, not the one a time budget sets",
    ),
    Mutation(
        name="lr-follows-configured-max-steps",
        file="src/diffutron/training/loop.py",
        original="_lr_lambda(state, tc.warmup_steps,",
        replacement="_lr_lambda(TrainState(total_steps=tc.max_steps), tc.warmup_steps,",
        tests=("tests/test_training.py::test_a_time_budget_is_spent_even_when_the_first_steps_are_slow",),
        why="under a time budget the LR schedule follows the configured max_steps: warmup never ends, no decay",
    ),
    Mutation(
        name="budget-passes-max-steps",
        file="src/diffutron/training/loop.py",
        original="total = max(state.step, min(self.cap, total))",
        replacement="total = max(state.step, total)",
        tests=("tests/test_training.py::test_a_time_budget_is_spent_even_when_the_first_steps_are_slow",),
        why="a time-budgeted run trains past the configured max_steps",
    ),
    Mutation(
        name="budget-sized-per-process",
        file="src/diffutron/training/loop.py",
        original="if self.accelerator is not None and self.accelerator.num_processes > 1:",
        replacement="if False:",
        tests=("tests/test_distributed.py::test_a_time_budget_is_sized_once_for_all_processes",),
        why="each process sizes the time budget from its own clock: they disagree and one waits forever",
    ),
    Mutation(
        name="resume-on-another-world-size",
        file="src/diffutron/training/state.py",
        original="        check_same_processes(dirs[-1], accelerator.num_processes)\n",
        replacement="        pass\n",
        tests=("tests/test_distributed.py::test_resuming_on_another_number_of_processes_is_a_clear_error",),
        why="a run resumes on another number of processes: batches cut differently, RNG files missing",
    ),
    Mutation(
        name="engine-steps-every-micro-batch",
        file="src/diffutron/training/loop.py",
        original="gradient_accumulation_steps=tc.grad_accum,",
        replacement="gradient_accumulation_steps=1,",
        tests=(
            "tests/test_training.py::test_accumulation_runs_through_accelerate_and_deepspeed_takes_its_settings",
        ),
        why="sync_gradients on every micro-batch: DeepSpeed steps its engine grad_accum times per step",
    ),
    Mutation(
        name="fsdp-launch-on-cpu-runs-as-ddp",
        file="src/diffutron/training/loop.py",
        original='os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"\n        and accelerator',
        replacement="False\n        and accelerator",
        tests=("tests/test_fsdp.py::test_an_fsdp_launch_on_cpu_is_refused_instead_of_running_as_ddp",),
        why="an FSDP launch config on CPU runs as DDP (accelerate's choice) and the run claims FSDP",
    ),
    Mutation(
        name="only-main-gathers-shards",
        file="src/diffutron/training/loop.py",
        original=(
            "    full = get_model_state_dict(parts, options=StateDictOptions(full_state_dict=True, cpu_offload=True))\n"
            "    if not main:\n        return None\n"
        ),
        replacement=(
            "    if not main:\n        return None\n"
            "    full = get_model_state_dict(parts, options=StateDictOptions(full_state_dict=True, cpu_offload=True))\n"
        ),
        tests=(
            "tests/test_fsdp.py::test_a_sharded_model_is_gathered_on_every_process_and_saved_whole_with_lora_merged",
        ),
        why="only the main process gathers a sharded model (a collective): it waits forever on the others",
    ),
    Mutation(
        name="deepspeed-clips-at-its-own-value",
        file="src/diffutron/training/loop.py",
        original='        "gradient_clipping": ("grad_clip", float(tc.grad_clip)),\n',
        replacement="",
        tests=(
            "tests/test_training.py::test_accumulation_runs_through_accelerate_and_deepspeed_takes_its_settings",
        ),
        why="DeepSpeed clips at its own default (1.0), not training.grad_clip",
    ),
    # --- language packs ---------------------------------------------------------------------
    Mutation(
        name="language-key-ignored",
        file="src/diffutron/config.py",
        original="localize(self.language, self.data, self.sft)",
        replacement='localize("tr", self.data, self.sft)',
        tests=(
            "tests/test_languages.py::test_the_language_key_points_embedded_and_builtin_sets_at_its_pack",
        ),
        why="`language: et` in a run config still trains on the Turkish corpus",
    ),
    Mutation(
        name="recipe-language-ignored",
        file="src/diffutron/config.py",
        original="localize(self.language, stage.data, stage.sft)",
        replacement='localize("tr", stage.data, stage.sft)',
        tests=(
            "tests/test_languages.py::test_recipe_check_names_the_estonian_download_when_the_archive_is_missing",
        ),
        why="a recipe's `language` is not applied to its stages: recipe check vets the wrong corpus",
    ),
    Mutation(
        name="turkish-corpus-respelled",
        file="src/diffutron/languages/tr.py",
        original='corpus="embedded",',
        replacement='corpus="embedded:ataturk",',
        tests=(
            "tests/test_languages.py::test_turkish_tokenizer_blocks_and_builtin_rows_are_byte_identical_to_before_the_packs",
        ),
        why="Turkish configs change spelling: saved runs refuse to resume and block caches are rebuilt",
    ),
    Mutation(
        name="estonian-dotless-i",
        file="src/diffutron/text/normalize.py",
        original="    if language in DOTTED_I_LANGUAGES:\n        return turkish_lower(s)",
        replacement="    if True:\n        return turkish_lower(s)",
        tests=("tests/test_languages.py::test_casing_is_turkish_for_tr_and_az_and_unicode_elsewhere",),
        why="Turkish I -> ı casing applied to every language",
    ),
    Mutation(
        name="estonian-punctuation-left-split",
        file="src/diffutron/data/corpus.py",
        original="attach = tok in _CLOSERS",
        replacement="attach = False",
        tests=(
            "tests/test_languages.py::test_detokenize_joins_the_corpus_punctuation_back",
            "tests/test_languages.py::test_the_estonian_reader_gives_articles_in_issue_order_and_holds_out_2005",
        ),
        why='the corpus\' "sõna , sõna ." reaches the tokenizer as written',
    ),
    Mutation(
        name="estonian-heldout-trained-on",
        file="src/diffutron/data/corpus.py",
        original='if split == "all" or (split == "heldout") == (year == ESTONIAN_HELDOUT_YEAR):',
        replacement='if split != "heldout" or year == ESTONIAN_HELDOUT_YEAR:',
        tests=(
            "tests/test_languages.py::test_the_estonian_reader_gives_articles_in_issue_order_and_holds_out_2005",
        ),
        why="the held-out 2005 issues are trained on: the held-out ELBO is not held out",
    ),
    Mutation(
        name="estonian-archive-hash-unchecked",
        file="src/diffutron/data/corpus.py",
        original="    if _verified[key] != expected:",
        replacement="    if False:",
        tests=(
            "tests/test_languages.py::test_the_archive_is_found_by_path_or_env_and_refused_when_its_hash_differs",
        ),
        why="any file named like the estnltk archive is read as the corpus",
    ),
    Mutation(
        name="sentence-starts-turkish-only",
        file="src/diffutron/data/sft.py",
        original="[A-Z{pack.sentence_starts}]",
        replacement="[A-ZÇĞİÖŞÜÂÎÛ]",
        tests=(
            "tests/test_languages.py::test_estonian_builtin_sets_are_built_from_the_corpus_with_estonian_instructions",
        ),
        why="Estonian sentences starting with Õ/Ä/Š/Ž are glued to the one before",
    ),
    Mutation(
        name="xcopa-et-turkish-connectives",
        file="src/diffutron/evaluation/tasks.py",
        original='prepare=xcopa_prepare("et")',
        replacement='prepare=xcopa_prepare("tr")',
        tests=(
            "tests/test_languages.py::test_xcopa_et_reads_the_release_files_with_lm_evals_estonian_connectives",
            "tests/test_languages.py::test_xcopa_et_from_the_hub_asks_for_the_et_config",
        ),
        why='XCOPA-et prompts with Turkish "çünkü" / "bu yüzden"',
    ),
    # --- precision auto (issue 22) ---------------------------------------------------------------
    Mutation(
        name="bf16-ignores-onednn-cap",
        file="src/diffutron/hardware.py",
        original='        if level < _ONEDNN_ISAS.index("AVX512_CORE_BF16"):',
        replacement="        if False:",
        tests=("tests/test_precision.py::test_a_onednn_isa_cap_hides_units_the_cpu_has[AVX2-]",),
        why="bf16 chosen where oneDNN may not use the units (ONEDNN_MAX_CPU_ISA=AVX2): ~20x slower than fp32",
    ),
    Mutation(
        name="bf16-override-ignored",
        file="src/diffutron/hardware.py",
        original="    if forced:\n",
        replacement="    if False:\n",
        tests=("tests/test_precision.py::test_the_environment_override_wins_over_detection[none-]",),
        why="DIFFUTRON_CPU_BF16 does not force the choice: tests and users cannot pick the other branch",
    ),
    Mutation(
        name="dtype-auto-fp32-on-bf16-cpu",
        file="src/diffutron/models/checkpoint.py",
        original="chosen = torch.bfloat16 if units else torch.float32",
        replacement="chosen = torch.float32",
        tests=(
            "tests/test_precision.py::test_dtype_auto_on_a_cpu_follows_the_units_and_says_why[avx512_bf16-dtype0-bf16]",
        ),
        why="--dtype auto keeps fp32 on a CPU with bf16 units (2-5x slower generation there)",
    ),
    Mutation(
        name="precision-auto-ignores-cpu-units",
        file="src/diffutron/training/loop.py",
        original='chosen, why = ("bf16" if units else "no"), units.why',
        replacement='chosen, why = "no", units.why',
        tests=(
            "tests/test_precision.py::test_training_precision_auto_follows_the_units_and_says_why[amx-bf16-bf16 autocast]",
        ),
        why="training.precision auto stays fp32 on a CPU with bf16 units (2.2x slower steps there)",
    ),
    Mutation(
        name="second-run-keeps-first-precision",
        file="src/diffutron/training/loop.py",
        original="    _forget_other_precision(precision)\n",
        replacement="",
        tests=(
            "tests/test_precision.py::test_the_training_loop_runs_its_loss_under_the_precision_auto_chose",
        ),
        why="a second training run in one process with another precision fails in accelerate",
    ),
]


# --- running ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # killed | survived | error
    detail: str
    seconds: float


def find_problems(mutation: Mutation, root: Path = ROOT) -> list[str]:
    """What keeps a mutation from being applied (missing file, snippet found 0 or 2+ times)."""
    path = root / mutation.file
    if not path.is_file():
        return [f"{mutation.file}: no such file"]
    count = path.read_text(encoding="utf-8").count(mutation.original)
    if count != 1:
        return [f"{mutation.file}: the original snippet occurs {count} times (expected once)"]
    if mutation.original == mutation.replacement:
        return ["the replacement equals the original"]
    return []


def copy_tree(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=COPY_IGNORE)
    return dest


def _environment(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree / "src")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no .pyc: a restored file is never shadowed by a stale one
    return env


def run_tests(
    tree: Path, tests: tuple[str, ...], timeout: float, per_test_timeout: int | None, stop_first: bool = True
) -> tuple[int | None, str]:
    """(pytest exit code or None on timeout, its output), run in the copy."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    if stop_first:
        cmd.insert(3, "-x")
    if per_test_timeout and importlib.util.find_spec("pytest_timeout") is not None:
        cmd.append(f"--timeout={per_test_timeout}")
    proc = subprocess.Popen(
        cmd,
        cwd=tree,
        env=_environment(tree),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout or Ctrl-C ends it and its children
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise


def _tail(text: str, lines: int = 3) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)[-300:]


def check_imports_from_copy(tree: Path) -> None:
    """The copy's source must be the one imported, not an installed diffutron."""
    out = subprocess.run(
        # a submodule: works whether diffutron is a regular or a namespace package (older trees have no
        # __init__.py; then an installed regular package elsewhere on sys.path would win)
        [sys.executable, "-c", "import diffutron.config as m; print(m.__file__)"],
        cwd=tree,
        env=_environment(tree),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"diffutron is imported from {out}, not from the copy in {tree}")


def run_mutation(
    tree: Path, mutation: Mutation, timeout: float, per_test_timeout: int | None, stop_first: bool = True
) -> Outcome:
    start = time.perf_counter()
    problems = find_problems(mutation, tree)
    if problems:
        return Outcome(mutation, "error", "; ".join(problems), 0.0)
    path = tree / mutation.file
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace(mutation.original, mutation.replacement), encoding="utf-8")
    try:
        code, out = run_tests(tree, mutation.tests, timeout, per_test_timeout, stop_first)
    finally:
        path.write_text(original, encoding="utf-8")
    seconds = time.perf_counter() - start
    if code is None:
        return Outcome(mutation, "killed", f"timed out after {timeout:.0f} s", seconds)
    if code == 0:
        return Outcome(mutation, "survived", _tail(out, 1), seconds)
    if code == 1:  # tests failed
        failed = [
            ln.split(" ", 1)[1].split(" - ")[0]
            for ln in out.splitlines()
            if ln.startswith(("FAILED ", "ERROR "))
        ]
        return Outcome(mutation, "killed", ", ".join(failed) if failed else _tail(out), seconds)
    return Outcome(mutation, "error", f"pytest exit code {code}: {_tail(out)}", seconds)


def markdown(outcomes: list[Outcome], baseline_seconds: float | None) -> str:
    lines = [
        "| mutation | file | the bug | result | caught by | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        m = o.mutation
        caught = (
            ", ".join(f"`{t.split('::')[-1]}`" for t in o.detail.split(", "))
            if o.status == "killed"
            else o.detail
        )
        if o.detail.startswith("timed out"):
            caught = o.detail
        lines.append(
            f"| `{m.name}` | `{m.file.removeprefix('src/diffutron/')}` | {m.why} | **{o.status}** | "
            f"{caught.replace('|', '/')} | {o.seconds:.0f} |"
        )
    survivors = [o.mutation.name for o in outcomes if o.status == "survived"]
    errors = [o.mutation.name for o in outcomes if o.status == "error"]
    lines.append("")
    lines.append(f"Survivors: {', '.join(survivors) if survivors else 'none'}.")
    if errors:
        lines.append(f"Errors (not checked): {', '.join(errors)}.")
    if baseline_seconds is not None:
        lines.append(f"Unmutated run of the same tests: passed in {baseline_seconds:.0f} s.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutation names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per mutation run (default 1200)")
    parser.add_argument(
        "--per-test-timeout", type=int, default=600, help="pytest-timeout limit per test (default 600)"
    )
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the unmutated tests first")
    parser.add_argument(
        "--each-test",
        action="store_true",
        help="run every named test (no -x): report all the tests that fail",
    )
    parser.add_argument("--report", type=Path, help="also write the markdown report to this file")
    args = parser.parse_args(argv)

    selected = MUTATIONS
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - {m.name for m in MUTATIONS})
        if unknown:
            parser.error(f"unknown mutations {unknown}; known: {[m.name for m in MUTATIONS]}")
        selected = [m for m in MUTATIONS if m.name in names]
    if args.list:
        for m in selected:
            print(f"{m.name}: {m.file}\n    {m.why}\n    tests: {', '.join(m.tests)}")
        return 0

    with tempfile.TemporaryDirectory(prefix="diffutron-mutation-") as tmp:
        tree = copy_tree(Path(tmp) / "repo")
        check_imports_from_copy(tree)
        baseline_seconds = None
        if not args.skip_baseline:
            tests = tuple(dict.fromkeys(t for m in selected for t in m.tests))
            print(f"unmutated: running {len(tests)} tests ...", flush=True)
            start = time.perf_counter()
            code, out = run_tests(tree, tests, args.timeout * 2, args.per_test_timeout)
            baseline_seconds = time.perf_counter() - start
            if code != 0:
                print(f"the unmutated tests do not pass (exit {code}); fix that first:\n{out[-3000:]}")
                return 2
            print(f"unmutated: passed in {baseline_seconds:.0f} s", flush=True)
        outcomes = []
        for i, m in enumerate(selected, start=1):
            print(f"[{i}/{len(selected)}] {m.name} ...", end=" ", flush=True)
            outcome = run_mutation(tree, m, args.timeout, args.per_test_timeout, not args.each_test)
            print(f"{outcome.status} ({outcome.seconds:.0f} s) {outcome.detail[:120]}", flush=True)
            outcomes.append(outcome)
    report = markdown(outcomes, baseline_seconds)
    print("\n" + report)
    if args.report:
        args.report.write_text(report, encoding="utf-8")
    return 0 if all(o.status == "killed" for o in outcomes) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the copy is gone by now, and the working tree was never touched
        print("\ninterrupted: nothing was changed in the working tree", file=sys.stderr)
        sys.exit(130)
