"""FSDP on two CPU processes (gloo), through ``accelerate launch`` and the shipped
``launch/fsdp-cpu-2proc.yaml``: a micro run trains, is resumed from its checkpoint by two new
processes, logs every step once, and leaves full (unsharded) weights that load on one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "fsdp-cpu-2proc.yaml"
DOCS = [
    "Ankara, Türkiye Cumhuriyeti'nin başkentidir ve İç Anadolu Bölgesi'nde yer alır.",
    "Iğdır'dan İstanbul'a giden otobüs sabah erkenden yola çıktı.",
    "Öğretmenimiz bugün bize ılık bir sonbahar gününde şiir okudu.",
    "Çocuklar bahçede top oynarken yaşlı adam gazetesini okuyordu.",
]

pytestmark = pytest.mark.skipif(not dist.is_gloo_available(), reason="this PyTorch has no gloo backend")


def _launch(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(LAUNCH),
           "-m", "diffutron.cli", "train", "train.yaml", "--out", "run", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)


def test_fsdp_on_two_cpu_processes_trains_and_resumes(tmp_path):
    (tmp_path / "corpus.txt").write_text("\n".join(DOCS * 20) + "\n", encoding="utf-8")
    (tmp_path / "train.yaml").write_text(
        "model: {preset: tiny, overrides: {hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, "
        "intermediate_size: 128}}\n"
        "tokenizer: {vocab_size: 300}\n"
        "data: {sources: [corpus.txt], block_size: 32, val_fraction: 0.05}\n"
        "training: {max_steps: 2, batch_size: 4, eval_every: 0, eval_blocks: 2, eval_t_samples: 1, save_every: 1, "
        "keep_last: 2, log_every: 1, warmup_steps: 1, precision: 'no'}\n",
        encoding="utf-8",
    )
    first = _launch(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = _launch(tmp_path, "--resume", "--max-steps", "3")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from run/checkpoints/step-000002 at step 2/3" in second.stdout + second.stderr

    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3]  # each step once, across the resume
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000003"]

    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(run / "model")  # one process reads what two wrote
    emb = model.get_input_embeddings().weight
    assert emb.shape[1] == 64 and emb.shape[0] >= 300  # the full tensor, not one process's shard
    assert all(p.isfinite().all() for p in model.parameters())
