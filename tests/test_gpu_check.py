"""The prepared GPU check runs its code paths at toy size on the CPU (``--cpu-smoke``): the same
generator, compile, precision and cache logic as on a GPU, with ``device="cpu"``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import load_script

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_check_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")], check=True)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    mod = load_script("benchmarks/gpu_check.py")
    out = tmp_path_factory.mktemp("gpu") / "check.json"
    returned = mod.main(["--cpu-smoke", "--out", str(out)])
    return returned, json.loads(out.read_text())


def test_gpu_check_cpu_smoke_writes_every_number(smoke):
    returned, report = smoke
    assert report == json.loads(json.dumps(returned))  # the file holds the final report
    assert report["mode"] == "cpu-smoke" and report["complete"] and report["errors"] == {}
    assert [(r["lora"], r["compile"]) for r in report["train"]] == [
        (False, False),
        (True, False),
        (False, True),
        (True, True),
    ]
    for r in report["train"]:
        assert r["tokens_per_second"] > 0 and 0 < r["mfu"] < 1.5
        assert r["max_memory_bytes"] is None and r["sync_warnings"] is None  # CUDA only
    assert {(r["dtype"], r["preset"], r["cache"], r["batch"]) for r in report["sampler"]} == {
        (d, p, c, b)
        for d in ("float32", "bfloat16")
        for p in ("diffutron", "fast")
        for c in ("none", "dual")
        for b in (1, 4)
    }
    assert all(r["forward_passes"] >= 1 and r["tokens_per_second"] > 0 for r in report["sampler"])
    assert report["eval"]["error"] is None and report["eval"]["items"] > 0


def test_a_failing_section_keeps_what_ran_and_the_rest_still_runs(tmp_path, monkeypatch):
    mod = load_script("benchmarks/gpu_check.py")

    def broken(*args, **kwargs):
        raise RuntimeError("Expected a 'cpu' device type for generator")  # as the first GPU run

    monkeypatch.setattr(mod, "train_step_rate", broken)
    out = tmp_path / "check.json"
    mod.main(["--cpu-smoke", "--out", str(out), "--compile", "off"])
    report = json.loads(out.read_text())
    assert not report["complete"]
    assert set(report["errors"]) == {"train lora=False compile=False", "train lora=True compile=False"}
    assert "device type for generator" in report["errors"]["train lora=True compile=False"]
    assert report["train"] == [] and len(report["sampler"]) == 16 and report["eval"]["items"] > 0
