"""The prepared GPU check runs its code paths at toy size on the CPU (``--cpu-smoke``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import load_script

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_check_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")], check=True)


def test_gpu_check_cpu_smoke_writes_every_number(tmp_path):
    mod = load_script("benchmarks/gpu_check.py")
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
