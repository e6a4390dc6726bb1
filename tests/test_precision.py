"""``--dtype auto`` and ``training.precision: auto`` on CPUs with and without bf16 units (issue 22).

The hardware helper (``diffutron.hardware.cpu_bf16_units``) is checked on both branches on any CPU: by
its environment override and by monkeypatched detection (torch's CPU capabilities, oneDNN's ISA cap).
Then what ``auto`` picks from it, and that the pick and its reason are logged: the weights' dtype of the
inference commands and autocast in the training loop's loss step. A command's greedy tokens in the
dtype ``auto`` chose, against fp32 on a model with clear margins: tests/test_device_dtype.py.
"""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import MICRO

from diffutron import hardware
from diffutron.hardware import ENV_OVERRIDE, cpu_bf16_units
from diffutron.models.checkpoint import resolve_device_dtype
from diffutron.training.loop import resolve_precision

pytestmark = pytest.mark.usefixtures("one_thread")
ON_GPU = torch.cuda.is_available()


@pytest.fixture
def detected(monkeypatch):
    """Set what torch reports about the CPU (AMX tiles, AVX512-BF16), with no override and no cap."""
    monkeypatch.delenv(ENV_OVERRIDE, raising=False)
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)

    def set_units(amx: bool, avx512_bf16: bool) -> None:
        monkeypatch.setattr(hardware.torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(hardware.torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)

    return set_units


# -- the hardware helper ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amx, avx512_bf16, kind", [(True, True, "amx"), (False, True, "avx512_bf16"), (False, False, "")]
)
def test_detection_prefers_amx_then_avx512_bf16(detected, amx, avx512_bf16, kind):
    detected(amx, avx512_bf16)
    units = cpu_bf16_units()
    assert units.kind == kind and bool(units) == bool(kind)
    assert (kind or "neither AMX nor AVX512-BF16") in units.why


@pytest.mark.parametrize(
    "cap, kind",
    [
        ("AVX2", ""),  # what the dispatch matrix sets: emulated bf16, ~20x slower than fp32 here
        ("avx512_core_vnni", ""),
        ("AVX512_CORE_BF16", "avx512_bf16"),  # bf16 dot products without the tiles
        ("AVX512_CORE_AMX", "amx"),
        ("ALL", "amx"),
    ],
)
def test_a_onednn_isa_cap_hides_units_the_cpu_has(detected, monkeypatch, cap, kind):
    detected(True, True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    units = cpu_bf16_units()
    assert units.kind == kind
    if not kind:
        assert f"ONEDNN_MAX_CPU_ISA={cap.upper()}" in units.why


@pytest.mark.parametrize("forced, kind", [("amx", "amx"), ("AVX512_BF16", "avx512_bf16"), ("none", "")])
def test_the_environment_override_wins_over_detection(detected, monkeypatch, forced, kind):
    detected(amx=not kind, avx512_bf16=not kind)  # the opposite of what is forced
    monkeypatch.setenv(ENV_OVERRIDE, forced)
    units = cpu_bf16_units()
    assert units.kind == kind and f"forced by {ENV_OVERRIDE}" in units.why


def test_a_bad_override_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(ENV_OVERRIDE, "yes")
    with pytest.raises(ValueError, match=f"{ENV_OVERRIDE}='yes': expected one of amx, avx512_bf16, none"):
        cpu_bf16_units()


# -- what auto picks, logged ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "forced, dtype, word", [("avx512_bf16", torch.bfloat16, "bf16"), ("none", torch.float32, "fp32")]
)
def test_dtype_auto_on_a_cpu_follows_the_units_and_says_why(monkeypatch, caplog, forced, dtype, word):
    monkeypatch.setenv(ENV_OVERRIDE, forced)
    with caplog.at_level(logging.INFO, logger="diffutron.models.checkpoint"):
        assert resolve_device_dtype("cpu", "auto") == (torch.device("cpu"), dtype)
    assert f"--dtype auto: {word} weights on the CPU (forced by {ENV_OVERRIDE}={forced})" in caplog.text
    assert resolve_device_dtype("cpu", "fp32")[1] == torch.float32  # an explicit dtype is kept


@pytest.mark.skipif(ON_GPU, reason="auto follows the GPU where there is one")
@pytest.mark.parametrize("forced, chosen, word", [("amx", "bf16", "bf16 autocast"), ("none", "no", "fp32")])
def test_training_precision_auto_follows_the_units_and_says_why(monkeypatch, caplog, forced, chosen, word):
    monkeypatch.setenv(ENV_OVERRIDE, forced)
    with caplog.at_level(logging.INFO, logger="diffutron.training.loop"):
        assert resolve_precision("auto") == chosen
    assert f"precision auto: {word} (forced by {ENV_OVERRIDE}={forced})" in caplog.text
    assert resolve_precision("no") == "no" and resolve_precision("bf16") == "bf16"


@pytest.mark.skipif(ON_GPU, reason="auto follows the GPU where there is one")
@pytest.mark.parametrize("forced, autocast", [("avx512_bf16", True), ("none", False)])
def test_the_training_loop_runs_its_loss_under_the_precision_auto_chose(
    tmp_path, tr_corpus, monkeypatch, forced, autocast
):
    from diffutron.config import DataConfig, ModelConfig, RunConfig, TokenizerConfig, TrainingConfig
    from diffutron.training import loop, train

    monkeypatch.setenv(ENV_OVERRIDE, forced)
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(tr_corpus), encoding="utf-8")
    seen = []
    real = loop.mdlm_loss

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "mdlm_loss", spy)
    cfg = RunConfig(
        model=ModelConfig(preset="tiny", overrides=dict(MICRO)),
        tokenizer=TokenizerConfig(vocab_size=500),
        data=DataConfig(sources=[str(corpus)], block_size=32, val_fraction=0.1),
        training=TrainingConfig(max_steps=2, batch_size=2, eval_every=0, save_every=0, precision="auto"),
    )
    result = train(cfg, tmp_path / "run")
    assert seen and set(seen) == {autocast}
    assert 0 < result.summary["val_nelbo_per_token"] < 20  # the float32 evaluation after bf16 steps is finite
