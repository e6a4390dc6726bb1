"""The recipes and configs that ship inside the package, found by name.

    available()                          # every shipped file: name, kind, one-line description
    resolve("diffutron-0.3b", "recipe")  # -> the file's path; an existing path is returned as given
    read_text("pretrain-tiny")           # the YAML, comments included, to copy and edit

``configs/`` holds single-run training configs (``diffutron train NAME``), ``recipes/`` staged recipes
(``diffutron run NAME``). These folders are the only copy in the repository, so a checkout, an
editable install and a wheel all read the same files. The first comment line of each file is its
one-line description (``diffutron recipe list``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLDERS = {"recipe": "recipes", "config": "configs"}  # kind -> folder beside this file
COMMANDS = {"recipe": "diffutron run", "config": "diffutron train"}  # what runs each kind


@dataclass(frozen=True)
class Shipped:
    name: str  # the file name without .yaml: what users type
    kind: str  # "recipe" | "config"
    path: Path

    @property
    def description(self) -> str:
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
            if line.strip():
                break
        return ""


def available(kind: str | None = None) -> list[Shipped]:
    """Shipped files of one kind (or all), recipes first, each kind sorted by name."""
    kinds = [kind] if kind else list(FOLDERS)
    return [Shipped(p.stem, k, p) for k in kinds for p in sorted((HERE / FOLDERS[k]).glob("*.yaml"))]


def find(name: str) -> Shipped | None:
    """The shipped file called ``name`` (``.yaml`` optional), of any kind."""
    name = name.removesuffix(".yaml")
    return next((s for s in available() if s.name == name), None)


def resolve(name_or_path: str | Path, kind: str | None = None) -> Path:
    """A path to read: ``name_or_path`` itself when that file exists, else the shipped file of that name.

    ``kind`` ("recipe" or "config") restricts names to that kind; asking for the wrong kind, or for a
    name that is neither a file nor shipped, is an error that lists what is shipped.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    item = find(path.name)
    what = kind or "recipe or config"
    shipped = ", ".join(s.name for s in available(kind))
    if len(path.parts) > 1 or path.suffix in (".yaml", ".yml"):  # meant as a file
        hint = f"; the shipped {item.kind} of that name is `{item.name}`" if item else ""
        raise FileNotFoundError(f"{what} file {path} does not exist{hint} (shipped: {shipped})")
    if item is None:
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a file nor a shipped {what}; shipped: {shipped} "
            "(see `diffutron recipe list`)"
        )
    if kind is not None and item.kind != kind:
        raise ValueError(
            f"{item.name!r} is a shipped {item.kind}, not a {kind}: use `{COMMANDS[item.kind]} {item.name}`"
        )
    return item.path


def read_text(name_or_path: str | Path) -> str:
    """The YAML text of a shipped recipe or config (or of a file), comments included."""
    return resolve(name_or_path).read_text(encoding="utf-8")
