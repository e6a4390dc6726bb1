"""The prepared GPU check runs its code paths at toy size on the CPU (``--cpu-smoke``)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_check_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")], check=True)


def test_gpu_check_cpu_smoke_writes_every_number(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    out = tmp_path / "check.json"
    mod.main(["--cpu-smoke", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu-smoke"
    assert [r["lora"] for r in report["train"]] == [False, True]
    for r in report["train"]:
        assert r["tokens_per_second"] > 0 and 0 < r["mfu"] < 1.5
    assert {(r["preset"], r["batch"]) for r in report["sampler"]} == {
        ("diffutron", 1), ("diffutron", 4), ("fast", 1), ("fast", 4)
    }
    assert all(r["forward_passes"] >= 1 and r["tokens_per_second"] > 0 for r in report["sampler"])
    assert report["eval"]["error"] is None and report["eval"]["items"] > 0
