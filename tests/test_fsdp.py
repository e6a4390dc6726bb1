"""Several CPU processes (gloo) through ``accelerate launch`` and FSDP's final save.

accelerate selects FSDP only for GPU-type devices: an FSDP launch config with ``use_cpu: true``
ran as DDP, so the old "FSDP on 2 CPU processes" test tested DDP. Now: such a launch is refused
with a clear error; the shipped ``launch/ddp-cpu-2proc.yaml`` trains, resumes and leaves a model
that loads on one process; and the final save of a model that is really sharded (torch's FSDP2
``fully_shard`` on gloo, asserted) gathers the full weights on every process, so the main process
saves the whole model with LoRA merged (tests/fixtures/fsdp_save.py). What has not run here: the
training loop itself under FSDP (it needs a GPU-type device), see docs/distributed.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "ddp-cpu-2proc.yaml"
DOCS = [
    "Ankara, Türkiye Cumhuriyeti'nin başkentidir ve İç Anadolu Bölgesi'nde yer alır.",
    "Iğdır'dan İstanbul'a giden otobüs sabah erkenden yola çıktı.",
    "Öğretmenimiz bugün bize ılık bir sonbahar gününde şiir okudu.",
    "Çocuklar bahçede top oynarken yaşlı adam gazetesini okuyordu.",
]
FSDP_ON_CPU = """compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_machines: 1
num_processes: 2
mixed_precision: 'no'
use_cpu: true
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: ModernBertEncoderLayer
  fsdp_state_dict_type: FULL_STATE_DICT
"""

pytestmark = pytest.mark.skipif(not dist.is_gloo_available(), reason="this PyTorch has no gloo backend")


def _env() -> dict:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TQDM_DISABLE="1",
    )


def _launch(cwd: Path, *args: str, config: Path = LAUNCH) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "-m", "diffutron.cli", "train", "train.yaml", "--out", "run", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=400)


def _setup(tmp_path: Path) -> None:
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


def test_two_cpu_processes_train_and_resume_through_the_shipped_launch_config(tmp_path):
    _setup(tmp_path)
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
    assert emb.shape[1] == 64 and emb.shape[0] >= 300
    assert all(p.isfinite().all() for p in model.parameters())


def test_an_fsdp_launch_on_cpu_is_refused_instead_of_running_as_ddp(tmp_path):
    """Issue 21.2: accelerate ran this config as DDP and the run called itself FSDP."""
    _setup(tmp_path)
    (tmp_path / "fsdp.yaml").write_text(FSDP_ON_CPU, encoding="utf-8")
    done = _launch(tmp_path, config=tmp_path / "fsdp.yaml")
    assert done.returncode != 0
    assert done.stderr.count("accelerate runs FSDP only on GPU-type devices") == 2  # both processes
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_sharded_model_is_gathered_on_every_process_and_saved_whole_with_lora_merged(tmp_path):
    """Issue 21.3: only the main process gathered, a collective, so it waited on the others at their
    barrier; a state dict taken on each process held the root unit's weights as shards."""
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(ROOT / "tests" / "fixtures" / "fsdp_save.py"),
           str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{i}.json").read_text()) for i in (0, 1)]
    assert all(r["sharded"] and r["parameters"] > 10 for r in ranks)  # each process held half of each tensor
    assert [r["got_model"] for r in ranks] == [True, False]
    assert ranks[0]["merge_moves"]  # the adapters are not zero: a merge that drops them would show

    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM

    saved = load_file(tmp_path / "model" / "model.safetensors")
    assert not any("lora" in k for k in saved)
    expected = torch.load(tmp_path / "expected.pt")  # merged on one process, before sharding
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "model")
    got = model.state_dict()
    assert set(expected) <= set(got)
    for key, value in expected.items():
        assert got[key].shape == value.shape, key  # whole tensors, not one process's shard
        assert torch.allclose(got[key], value, atol=1e-6), key
