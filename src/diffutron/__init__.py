"""Diffutron: masked diffusion language models (MDLMs) for Turkish.

    import diffutron

    m = diffutron.load_checkpoint("runs/quickstart/model")
    out = diffutron.generate(m.model, m.tokenizer, ["Ankara"], diffutron.GenerationConfig(steps=32),
                             schedule=m.settings.make_schedule())
    cfg = diffutron.load_config(diffutron.shipped_path("pretrain-tiny"))
    result = diffutron.train(cfg, "runs/tiny")

The names below are imported on first use, so ``import diffutron`` (and the ``diffutron`` command's
start) does not pay for torch and transformers until something needs them. Each name's home module is
the place to read about it; the README's "Python API" table lists the subpackages.
"""

from __future__ import annotations

import importlib
from typing import Any


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("diffutron")
    except PackageNotFoundError:  # a source checkout on the path, never installed: read pyproject.toml
        import re
        from pathlib import Path

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        if pyproject.is_file():
            found = re.search(r'(?m)^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"))
            if found:
                return found.group(1)
        return "0+unknown"


__version__ = _version()

# public name -> the module that defines it
_API = {
    "load_config": "diffutron.config",
    "load_recipe": "diffutron.config",
    "RunConfig": "diffutron.config",
    "RecipeConfig": "diffutron.config",
    "train": "diffutron.training",
    "run_recipe": "diffutron.training",
    "check_recipe": "diffutron.training",
    "load_checkpoint": "diffutron.models",
    "save_checkpoint": "diffutron.models",
    "GenerationConfig": "diffutron.sampling",
    "PRESETS": "diffutron.sampling",
    "generate": "diffutron.sampling",
    "infill": "diffutron.sampling",
    "stream": "diffutron.sampling",
    "evaluate": "diffutron.evaluation",
    "text_perplexity": "diffutron.evaluation",
    "normalize": "diffutron.text",
}
# shipped recipes and configs: name -> attribute of diffutron.shipped
_SHIPPED = {"shipped_path": "resolve", "list_shipped": "available"}

__all__ = ["__version__", *_API, *_SHIPPED]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif name in _SHIPPED:
        value = getattr(importlib.import_module("diffutron.shipped"), _SHIPPED[name])
    else:
        raise AttributeError(f"module 'diffutron' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
