"""The generate / infill / chat / denoise-plot commands on a micro checkpoint (no training needed)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from diffutron.cli import main


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models gain nothing from a second thread, and on a busy machine thread hand-offs cost
    more than the work: one thread keeps these tests fast and their timing steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FAST = ["--max-new-tokens", "8", "--steps", "8", "--block-size", "4", "--no-stop-at-eos"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tokenizer):
    from transformers import ModernBertForMaskedLM

    from diffutron.models.checkpoint import DiffusionSettings, save_checkpoint
    from diffutron.models.presets import preset_config

    torch.manual_seed(0)
    micro = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    model = ModernBertForMaskedLM(preset_config("tiny", tokenizer, max_position_embeddings=256, **micro))
    out = tmp_path_factory.mktemp("micro") / "model"
    save_checkpoint(out, model, tokenizer, DiffusionSettings(mask_token_id=tokenizer.mask_token_id))
    return str(out)


def test_generate_json_reads_a_prompts_file_and_batches_it(ckpt, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Ankara\n\nİzmir'in havası\nBugün\n", encoding="utf-8")
    code = main(["generate", ckpt, "--prompts-file", str(prompts), "--batch-size", "2", "--json", *FAST])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in rows] == ["Ankara", "İzmir'in havası", "Bugün"]
    for r in rows:
        assert r["text"] and r["forward_passes"] == 8 and r["tokens_per_second"] > 0 and r["new_tokens"] == 8


def test_generate_flags_reach_the_engine(ckpt, capsys):
    args = ["generate", ckpt, "--prompt", "Ankara", "--json", *FAST]
    assert main([*args, "--remasking", "threshold", "--threshold", "0.0001"]) == 0
    assert json.loads(capsys.readouterr().out)["forward_passes"] < 8  # several commits per pass
    assert main([*args, "--steps", "16"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] > 8  # --steps overrides the preset's 64


def test_bad_flag_values_are_clear_errors(ckpt, capsys):
    assert main(["generate", ckpt, "--prompt", "x", "--top-p", "0", *FAST]) == 2
    assert "top_p" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", ckpt, "--prompt", "x", "--remasking", "sometimes"])


def test_infill_keeps_the_text_around_the_holes(ckpt, capsys):
    text = "Ankara Türkiye'nin <mask> şehridir."
    assert main(["infill", ckpt, "--text", text, "--span", "3", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["text"].startswith("Ankara Türkiye'nin") and row["text"].endswith(" şehridir.")
    assert len(row["fills"]) == 1 and row["text"] == "Ankara Türkiye'nin" + row["fills"][0] + " şehridir."


def test_chat_reads_turns_from_stdin_and_keeps_the_history(ckpt, capsys, monkeypatch):
    import diffutron.sampling as sampling

    prompts = []
    real_stream = sampling.stream

    def spy(model, tok, batch, *a, **kw):
        prompts.append(batch[0])
        return real_stream(model, tok, batch, *a, **kw)

    monkeypatch.setattr(sampling, "stream", spy)
    monkeypatch.setattr("sys.stdin", io.StringIO("Merhaba\nNasılsın?\n/exit\nunused\n"))
    assert main(["chat", ckpt, "--no-live", "--system", "Kısa cevap ver.", *FAST]) == 0
    answers = capsys.readouterr().out.splitlines()
    assert len(prompts) == 2 and len(answers) >= 2
    assert prompts[0] == "[SYS]\nKısa cevap ver.\n[/SYS]\n\n[Question]\nMerhaba\n[/Question]\n\n[Answer]\n"
    assert prompts[1].startswith(prompts[0]) and prompts[1].endswith(
        "[Question]\nNasılsın?\n[/Question]\n\n[Answer]\n"
    )


def test_denoise_plot_writes_a_png(ckpt, tmp_path, capsys):
    out = tmp_path / "steps.png"
    assert main(["denoise-plot", ckpt, "--prompt", "Ankara", "--out", str(out), *FAST]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
