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
