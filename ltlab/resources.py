"""Files ltlab ships besides its code: the demo set, the benchmark split lists, the notebooks.

In a checkout (and an editable install) they are the repository's top-level ``data/`` and
``notebooks/``; a wheel carries copies of them inside the package, under ``ltlab/_shipped/``
(pyproject.toml maps those folders there as package data), so ``pip install .`` runs the demo.
"""
from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from ltlab.config import ConfigError


def _shipped() -> Path | None:
    p = Path(str(resources.files(__package__) / "_shipped"))
    return p if p.is_dir() else None


def repo_root() -> Path:
    """The checkout holding this package (meaningful only when not installed from a wheel)."""
    return Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """Folder holding ``demo/`` and ``splits/``."""
    s = _shipped()
    return s / "data" if s else repo_root() / "data"


def notebooks_dir() -> Path:
    s = _shipped()
    return s / "notebooks" if s else repo_root() / "notebooks"


def copy_notebooks(dest, force: bool = False) -> list[Path]:
    """Copy the analysis and training notebooks (*.ipynb, no outputs) into ``dest``; an
    existing file is kept unless ``force``, and then nothing is copied."""

    src = sorted(notebooks_dir().glob("*.ipynb"))
    if not src:
        raise FileNotFoundError(f"no notebooks found in '{notebooks_dir()}'")
    dest = Path(dest).expanduser()
    if any(p.exists() and not p.is_dir() for p in (dest, *dest.parents)):
        raise ConfigError(f"notebooks: '{dest}' is (inside) a file; allowed: a folder, new or existing")
    clash = [dest / f.name for f in src if (dest / f.name).exists()]
    if clash and not force:
        raise ConfigError(f"notebooks: '{clash[0]}' exists; allowed: an empty or new folder, or --force to overwrite")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copyfile(f, dest / f.name)) for f in src]
    except OSError as e:
        raise ConfigError(f"notebooks: cannot write into '{dest}' ({e.strerror or type(e).__name__}); "
                          "allowed: a folder you can write to") from None
