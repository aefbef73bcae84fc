"""Where things live: the project root, the outputs folder and the folders for derived images."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
OUTPUTS_ENV = "FH_OUTPUTS"
DATA_ENV = "FH_DATA"


def outputs_dir() -> Path:
    """Root of everything runs write: ``$FH_OUTPUTS`` if set (tests point it at a temp folder), else ``outputs/``."""
    return Path(os.environ.get(OUTPUTS_ENV) or PROJECT_ROOT / "outputs")


def runs_dir() -> Path:
    """Folder holding one sub-folder per run."""
    return outputs_dir() / "runs"


def default_data_root() -> Path:
    """The real data root when present (``$FH_DATA`` or ``data/fashion-how``), else the demo data root."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    real = PROJECT_ROOT / "data" / "fashion-how"
    return real if real.exists() else PROJECT_ROOT / "data" / "demo"


def _writable(folder: Path) -> bool:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    # root passes os.access on a folder without write bits: honour the bits too (a read-only data share).
    return os.access(probe, os.W_OK) and bool(probe.stat().st_mode & 0o222)


def derived_dir(data_root: str | Path, kind: str) -> Path:
    """Folder for images derived from ``data_root`` (e.g. ``kind="nobg"`` or ``"cache"``).

    Derived images never go inside the raw data root. They go beside it, as ``<root>_<kind>``; when that
    folder cannot be written (a read-only data mount), under ``outputs/derived/<root name>_<kind>``.
    """
    root = Path(data_root).resolve()
    beside = root.parent / f"{root.name}_{kind}"
    if _writable(beside.parent):
        return beside
    return outputs_dir() / "derived" / f"{root.name}_{kind}"
