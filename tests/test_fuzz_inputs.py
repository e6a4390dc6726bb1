"""Hostile inputs, reduced: generated cases from every family (corpora, configs and recipes, prompts and
infill texts, evaluation files, checkpoints) end in a clean named error or a success — never a traceback,
an unnamed error or a half-written output. The full suite (1,000+ cases) is ``benchmarks/fuzz_inputs.py``."""

from __future__ import annotations

from conftest import load_script


def _fuzz():
    return load_script("benchmarks/fuzz_inputs.py")


def test_generated_hostile_inputs_end_in_clean_errors_or_success(tmp_path):
    mod = _fuzz()
    outcomes = mod.fuzz(15, seed=11, scratch=tmp_path, progress=False, quick=True)
    failures = [f"{o.kind} [{o.case.family}] {o.case.name}: {o.message[-400:]}" for o in outcomes if o.kind.startswith("FAIL")]
    assert failures == []
    assert {o.case.family for o in outcomes} == set(mod.FAMILIES)
    errors = [o for o in outcomes if o.kind == "error"]
    assert len(errors) >= 5  # most hostile inputs are refused ...
    for o in errors:  # ... each in one line naming what was wrong
        assert o.message.startswith("diffutron: error:") or "error:" in o.message
        assert "\n" not in o.message


def test_the_bugs_the_full_suite_found_stay_fixed(tmp_path):
    import pytest

    from diffutron.config import ConfigError, RunConfig, from_dict

    for section, key, value in [("training", "batch_size", -1), ("training", "grad_accum", 0),
                                ("training", "epochs", float("inf")), ("data", "sources", [])]:
        with pytest.raises(ConfigError, match=f"{section}.{key}"):
            from_dict(RunConfig, {section: {key: value}})

    # an evaluation whose only task cannot run: one error line with the reason, not a silent exit 1
    mod = _fuzz()
    fx = mod.build_fixture(tmp_path / "fixture")
    folder = tmp_path / "evaldata" / "ironytr"
    folder.mkdir(parents=True)
    (folder / "ironic.txt").write_text("Harika, yine yağmur yağıyor.\n", encoding="utf-8")  # no non-ironic.txt
    case = mod.Case("evaldata", "ironytr without non-ironic.txt",
                    ["eval", str(fx["model"]), "--tasks", "ironytr", "--data-dir", str(tmp_path / "evaldata"),
                     "--samples", "2", "--quiet"], ["ironytr", "non-ironic"])
    outcome = mod.run_case(case)
    assert outcome.kind == "error", outcome.message
    assert outcome.message.startswith("diffutron: error: no task could be evaluated (ironytr:")
