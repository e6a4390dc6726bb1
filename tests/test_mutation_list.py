"""The mutation list of tools/mutation_check.py stays applicable: every snippet is found exactly once,
and every test it names exists (so moved code or a renamed test fails here, not silently there)."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutation_check():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "tools" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_the_list_parses_with_unique_names_and_real_tests(mutation_check):
    mutations = mutation_check.MUTATIONS
    assert len(mutations) >= 7
    names = [m.name for m in mutations]
    assert len(set(names)) == len(names) and all(re.fullmatch(r"[a-z0-9-]+", n) for n in names)
    for m in mutations:
        assert m.tests and m.why and m.original != m.replacement, m.name
        for node in m.tests:
            file, _, test = node.partition("::")
            source = ROOT / file
            assert source.is_file(), f"{m.name}: {file} does not exist"
            name = test.split("[")[0]
            assert re.search(rf"^def {re.escape(name)}\(", source.read_text(encoding="utf-8"), re.M), (
                f"{m.name}: no test {name} in {file}"
            )


def test_each_original_snippet_occurs_exactly_once(mutation_check):
    problems = {m.name: mutation_check.find_problems(m) for m in mutation_check.MUTATIONS}
    assert {k: v for k, v in problems.items() if v} == {}


def test_a_snippet_found_twice_or_not_at_all_is_reported(mutation_check, tmp_path):
    (tmp_path / "m.py").write_text("x = 1\nx = 1\n", encoding="utf-8")
    twice = mutation_check.Mutation("t", "m.py", "x = 1", "x = 2", ("tests/t.py::test",), "why")
    missing = mutation_check.Mutation("t", "m.py", "y = 1", "y = 2", ("tests/t.py::test",), "why")
    assert "occurs 2 times" in mutation_check.find_problems(twice, tmp_path)[0]
    assert "occurs 0 times" in mutation_check.find_problems(missing, tmp_path)[0]
