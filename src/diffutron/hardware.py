"""Which bf16 units this CPU has and can use: the one place ``--dtype auto`` and ``precision: auto`` ask.

    units = cpu_bf16_units()   # -> Bf16Units(kind="amx" | "avx512_bf16" | "", why="...")
    if units: ...              # true when bf16 matrix multiplies run on native units

bf16 pays on a CPU only with native units: AMX tiles (Intel Sapphire Rapids and later) or AVX512-BF16
(Intel Cooper Lake, AMD Zen 4 and later). Without them oneDNN emulates bf16 and a matrix multiply runs
about 20x slower than fp32 (measured on this project's Zen 4 VM with ``ONEDNN_MAX_CPU_ISA=AVX2``:
1.65 s against 0.075 s), so the answer must also follow what oneDNN is *allowed* to use:
``ONEDNN_MAX_CPU_ISA`` below ``AVX512_CORE_BF16`` hides the units even where the CPU has them.

``DIFFUTRON_CPU_BF16`` forces the answer (``amx``, ``avx512_bf16`` or ``none``): for tests of both
branches on any CPU, and for a user whose measurements disagree with the default.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

ENV_OVERRIDE = "DIFFUTRON_CPU_BF16"
KINDS = ("amx", "avx512_bf16", "none")
# oneDNN's ISA names in increasing order (docs: "CPU Dispatcher Control"); the prefixes of this list up to
# AVX512_CORE_VNNI have no bf16 dot products, so bf16 there is emulated.
_ONEDNN_ISAS = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX10_1_512",
    "AVX512_CORE_FP16",
    "AVX512_CORE_AMX",
    "AVX10_1_512_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512_AMX_FP16",
    "AVX10_2_512",
    "AVX10_2_512_AMX_2",
)


class Bf16Units(NamedTuple):
    kind: str  # "amx", "avx512_bf16" or "" (none usable)
    why: str  # one line for the log: what was detected, or what hid it

    def __bool__(self) -> bool:
        return bool(self.kind)


def _onednn_cap() -> str | None:
    """The oneDNN ISA cap from ``ONEDNN_MAX_CPU_ISA`` (``DNNL_MAX_CPU_ISA`` is its older name), upper case."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = os.environ.get(name, "").strip().upper()
        if value and value not in ("ALL", "DEFAULT"):
            return value
    return None


def cpu_bf16_units() -> Bf16Units:
    """The CPU's usable bf16 units: AMX before AVX512-BF16, none where absent or capped by oneDNN."""
    forced = os.environ.get(ENV_OVERRIDE, "").strip().lower()
    if forced:
        if forced not in KINDS:
            raise ValueError(f"{ENV_OVERRIDE}={forced!r}: expected one of {', '.join(KINDS)}")
        return Bf16Units("" if forced == "none" else forced, f"forced by {ENV_OVERRIDE}={forced}")
    if torch.cpu._is_amx_tile_supported():
        kind = "amx"
    elif torch.cpu._is_avx512_bf16_supported():
        kind = "avx512_bf16"
    else:
        return Bf16Units("", "the CPU has neither AMX nor AVX512-BF16")
    cap = _onednn_cap()
    if cap is not None and cap in _ONEDNN_ISAS:
        level = _ONEDNN_ISAS.index(cap)
        if level < _ONEDNN_ISAS.index("AVX512_CORE_BF16"):
            return Bf16Units("", f"the CPU has {kind} but ONEDNN_MAX_CPU_ISA={cap} keeps oneDNN off it")
        if kind == "amx" and level < _ONEDNN_ISAS.index("AVX512_CORE_AMX"):
            kind = "avx512_bf16"
    return Bf16Units(kind, f"the CPU has {kind} (torch.cpu capabilities)")
