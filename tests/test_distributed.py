"""Training on several processes: two CPU processes (gloo) started by ``torchrun``, a micro model,
a few steps. The LR schedule on two processes is the one on one process; a time budget is sized
once for all processes (one of them slowed down on purpose); a run resumed on another number of
processes is refused with a clear error. FSDP is in tests/test_fsdp.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from diffutron.config import load_config
from diffutron.training import train

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    "Ankara, Türkiye Cumhuriyeti'nin başkentidir ve İç Anadolu Bölgesi'nde yer alır.",
    "Iğdır'dan İstanbul'a giden otobüs sabah erkenden yola çıktı.",
    "Öğretmenimiz bugün bize ılık bir sonbahar gününde şiir okudu.",
    "Çocuklar bahçede top oynarken yaşlı adam gazetesini okuyordu.",
]
MODEL = (
    "model: {preset: tiny, overrides: {hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, "
    "intermediate_size: 128}}\ntokenizer: {vocab_size: 300}\n"
    "data: {sources: [corpus.txt], block_size: 32, val_fraction: 0.05}\n"
)

pytestmark = pytest.mark.skipif(
    not dist.is_gloo_available() or shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
    reason="needs torchrun and a PyTorch with gloo",
)


def _setup(folder: Path, training: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.txt").write_text("\n".join(DOCS * 20) + "\n", encoding="utf-8")
    (folder / "train.yaml").write_text(MODEL + f"training: {{{training}}}\n", encoding="utf-8")
    return folder / "train.yaml"


def _torchrun(cwd: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TQDM_DISABLE="1",
    )
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", *args]  # standalone: a free port
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _lrs(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["lr"] for r in rows if r["kind"] == "train"]


TRAINING = (
    "max_steps: 12, batch_size: 2, lr: 0.001, warmup_steps: 3, min_lr_ratio: 0.1, eval_every: 0, "
    "eval_blocks: 2, eval_t_samples: 1, save_every: 6, keep_last: 1, log_every: 1, precision: 'no'"
)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    """A 12-step run of ``diffutron train`` on two processes (checkpoints at steps 6 and 12)."""
    folder = tmp_path_factory.mktemp("two")
    _setup(folder, TRAINING)
    done = _torchrun(folder, "-m", "diffutron.cli", "train", "train.yaml", "--out", "run")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "run"


def test_the_lr_schedule_on_two_processes_is_the_one_on_one(two_process_run, tmp_path, monkeypatch):
    """accelerate steps a prepared scheduler once per process per step() by default: on two processes
    the warmup ended at step 2 and the LR sat at its floor from step 6 (issue 21.1)."""
    monkeypatch.chdir(tmp_path)
    one = train(load_config(_setup(tmp_path, TRAINING)), tmp_path / "one", progress=False)
    assert one.state.step == 12
    expected = _lrs(tmp_path / "one")
    assert expected[:3] == pytest.approx([1e-3 / 1.5, 1e-3, 1e-3])  # 3-step warmup reaches the peak at step 2
    assert expected[-1] == pytest.approx(1e-4)  # the floor only at the last step
    assert _lrs(two_process_run) == pytest.approx(expected, rel=1e-9)


def test_resuming_on_another_number_of_processes_is_a_clear_error(two_process_run, tmp_path, monkeypatch):
    """Per-process RNG files and data slices follow the world size: resuming on another one fell back,
    process by process, to older checkpoints (or silently cut the batches differently) (issue 21.6)."""
    recorded = json.loads(
        (two_process_run / "checkpoints" / "step-000012" / "trainer_state.json").read_text()
    )
    assert recorded["processes"] == 2
    # two processes -> one
    monkeypatch.chdir(two_process_run.parent)
    cfg = load_config(two_process_run.parent / "train.yaml")
    with pytest.raises(ValueError, match=r"trained on 2 process\(es\) and this launch has 1"):
        train(cfg, two_process_run, resume=True, max_steps=14, progress=False)
    # one process -> two: both processes stop with the same clear error, before any collective
    monkeypatch.chdir(tmp_path)
    train(
        load_config(_setup(tmp_path, TRAINING.replace("max_steps: 12", "max_steps: 6"))),
        tmp_path / "one",
        progress=False,
    )
    done = _torchrun(
        tmp_path,
        "-m",
        "diffutron.cli",
        "train",
        "train.yaml",
        "--out",
        "one",
        "--resume",
        "--max-steps",
        "8",
        timeout=120,
    )
    assert done.returncode != 0
    # each process ends with the CLI's one-line error (torchrun then reports the failed launch)
    assert done.stderr.count("trained on 1 process(es) and this launch has 2") == 2
    assert done.stderr.count("diffutron: error: cannot resume") == 2


def test_a_time_budget_is_sized_once_for_all_processes(tmp_path):
    """Each process timed itself: a slower process settled on fewer steps, stopped early and left the
    other waiting in a collective (issue 21.5). Virtual clocks: process 1's steps take twice as long;
    the main process's total (30 s: 5 steps of 4 s, then 0.25 s each, ~45 steps) is everyone's."""
    _setup(
        tmp_path,
        "max_steps: 10000, max_minutes: 0.5, batch_size: 2, warmup_ratio: 0.2, eval_every: 0, "
        "eval_blocks: 2, eval_t_samples: 1, save_every: 0, log_every: 10, precision: 'no'",
    )
    done = _torchrun(
        tmp_path,
        str(ROOT / "tests" / "fixtures" / "torchrun_train.py"),
        "train.yaml",
        "run",
        "--slow-rank",
        "1",
        timeout=200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    main, slow = (json.loads((tmp_path / "run" / f"rank-{i}.json").read_text()) for i in (0, 1))
    assert 40 <= main["total"] <= 50 and main["step"] == main["total"]
    assert slow["total"] == main["total"] and slow["step"] == main["step"]
    assert slow["lrs"] == main["lrs"]  # the same schedule, step by step (its warmup follows the total)
    assert slow["clock"] > 1.5 * main["clock"]  # the slowdown did happen
