"""Where things live: the project root, the notebooks, the outputs, runs and submissions, the data and derived images.

The project root is found, not assumed: the nearest folder at or above the working directory that holds the
workbook (a ``pyproject.toml`` naming ``fh-utils``, or ``notebooks/`` beside ``fh_utils/``); else the source
checkout the package was imported from; else the working directory. The package's own location alone would
put ``outputs/`` beside site-packages on a non-editable install.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

OUTPUTS_ENV = "FH_OUTPUTS"
DATA_ENV = "FH_DATA"
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # the checkout on an editable install
_PROJECT_NAME = re.compile(r"""^name\s*=\s*["']fh[-_]utils["']""", re.MULTILINE)


def is_project_root(folder: str | Path) -> bool:
    """Whether ``folder`` holds the workbook (``pyproject.toml`` naming fh-utils, or notebooks/ + fh_utils/)."""
    folder = Path(folder)
    if (folder / "notebooks").is_dir() and (folder / "fh_utils").is_dir():
        return True
    try:
        return bool(_PROJECT_NAME.search((folder / "pyproject.toml").read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError):
        return False


def project_root(start: str | Path | None = None) -> Path:
    """The workbook folder: the nearest project root at or above ``start`` (default: the working directory).

    Falls back to the source checkout the package came from (an editable install), then to ``start`` itself.
    """
    here = Path(start if start is not None else os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if is_project_root(folder):
            return folder
    return _PACKAGE_PARENT if is_project_root(_PACKAGE_PARENT) else here


def __getattr__(name: str) -> Path:
    # ``PROJECT_ROOT`` stays importable, resolved when asked for (the working directory may change).
    if name == "PROJECT_ROOT":
        return project_root()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def outputs_dir() -> Path:
    """Root of everything runs write: ``$FH_OUTPUTS`` if set (tests point it at a temp folder), else ``outputs/``.

    ``outputs/`` is in the project root (see :func:`project_root`).
    """
    return Path(os.environ.get(OUTPUTS_ENV) or project_root() / "outputs")


def runs_dir() -> Path:
    """Folder holding one sub-folder per run."""
    return outputs_dir() / "runs"


def submissions_dir() -> Path:
    """Folder holding one sub-folder per packaged submission (``outputs/submissions``)."""
    return outputs_dir() / "submissions"


def notebooks_dir() -> Path:
    """The numbered notebooks: ``notebooks/`` in the project root (see :func:`project_root`)."""
    return project_root() / "notebooks"


def default_data_root() -> Path:
    """The real data root when present (``$FH_DATA`` or ``data/fashion-how``), else the demo data root."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    root = project_root()
    real = root / "data" / "fashion-how"
    return real if real.exists() else root / "data" / "demo"


def resolve_data_root(data_root: str | Path = "") -> Path:
    """``""`` gives :func:`default_data_root`; a relative path starts at the working folder."""
    return Path(data_root).expanduser().resolve() if str(data_root) else default_data_root().resolve()


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
