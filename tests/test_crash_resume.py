"""Crash torture, reduced: kill -9 ``diffutron train`` inside a checkpoint write and at a step, resume,
and demand bit-identical weights; disk-full and unwritable folders end in a clear error with the last
good checkpoint intact. The full torture (10 kills, recipes too) is ``benchmarks/crash_resume.py``."""

from __future__ import annotations

import errno
from pathlib import Path

import accelerate
from conftest import load_script

from diffutron.cli import main as cli
from diffutron.training.state import checkpoint_dirs


def _bench():
    return load_script("benchmarks/crash_resume.py")


def test_kill_9_inside_a_checkpoint_write_and_at_a_step_then_resume_is_bit_identical(tmp_path):
    # seed 0 orders the checkpoint kill first: on an idle machine a toy step takes ~25 ms, so a kill
    # at a late step can come after the last checkpoint write, leaving none for a later attempt
    report = _bench().torture(
        tmp_path, kills=2, steps=6, seed=0, kinds=("checkpoint", "step"), verbose=False, reference_in_process=True
    )
    assert report["problems"] == []
    assert report["kills"] == 2
    assert report["kills_in_checkpoint_write"] == 1
    assert report["ok"]


def _setup(tmp_path: Path, steps: int = 4) -> Path:
    config, _ = _bench().write_setup(tmp_path, steps)
    return config


def test_disk_full_during_a_checkpoint_is_a_clear_error_and_keeps_the_last_good_one(tmp_path, monkeypatch, capsys):
    config = _setup(tmp_path)
    real, calls = accelerate.Accelerator.save_state, {"n": 0}

    def full_disk(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of step 4 (the first, step 2, was written)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(accelerate.Accelerator, "save_state", full_disk)
    out = tmp_path / "run"
    assert cli(["train", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "disk is full" in err and "step-000002" in err and "Traceback" not in err
    assert [p.name for p in checkpoint_dirs(out / "checkpoints")] == ["step-000002"]
    assert not list((out / "checkpoints").glob(".*"))  # the half-written folder is gone
    assert not (out / "model").exists()
    monkeypatch.setattr(accelerate.Accelerator, "save_state", real)
    assert cli(["train", str(config), "--out", str(out), "--resume"]) == 0  # space freed: it continues
    assert (out / "model" / "model.safetensors").exists()


def test_an_unwritable_output_folder_is_a_clear_error(tmp_path, monkeypatch, capsys):
    config = _setup(tmp_path)

    def denied(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(args[0] if args else ""))

    monkeypatch.setattr(accelerate.Accelerator, "save_state", denied)
    assert cli(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot write checkpoint step-000002" in err and "Permission denied" in err
    assert "Traceback" not in err
    # a folder that cannot even be created (/proc refuses new entries, even for root)
    assert cli(["train", str(config), "--out", "/proc/diffutron-run"]) == 2
    err = capsys.readouterr().err
    assert "diffutron: error:" in err and "/proc/diffutron-run" in err and "Traceback" not in err


def test_resume_skips_a_newest_checkpoint_that_does_not_load(tmp_path, caplog):
    config = _setup(tmp_path, steps=6)
    out = tmp_path / "run"
    assert cli(["train", str(config), "--out", str(out), "--max-steps", "4"]) == 0
    newest = checkpoint_dirs(out / "checkpoints")[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:7])  # a disk failure truncated it
    assert cli(["train", str(config), "--out", str(out), "--resume"]) == 0
    assert f"ignoring checkpoint {newest}" in caplog.text


def test_keep_last_keeps_the_newest_checkpoints_and_removes_the_rest(tmp_path):
    """Single process, a checkpoint at every step: with ``keep_last: 3`` the three newest stay, whole,
    and nothing of the older ones is left behind (``test_fsdp.py`` covers two processes, where gloo is)."""
    config = _setup(tmp_path, steps=5)
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "save_every: 2, keep_last: 2", "save_every: 1, keep_last: 3"
        ),
        encoding="utf-8",
    )
    assert "keep_last: 3" in config.read_text(encoding="utf-8")
    out = tmp_path / "run"
    assert cli(["train", str(config), "--out", str(out)]) == 0
    root = out / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-000003", "step-000004", "step-000005"]
    assert [p.name for p in checkpoint_dirs(root)] == ["step-000003", "step-000004", "step-000005"]
    # resumed and trained on, the window moves with the newest step
    assert cli(["train", str(config), "--out", str(out), "--resume", "--max-steps", "7"]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["step-000005", "step-000006", "step-000007"]
