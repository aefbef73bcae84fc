"""The one atomic writer: every result file (checkpoints, JSON, CSV, figures, images, submissions) goes through it.

The content is written to a temporary file in the target folder, flushed to disk (``fsync``) and renamed over
the target, so a reader or a killed process never leaves half a file; the temporary file ends in ``.tmp`` and
is removed on failure.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _process_umask() -> int:
    # /proc reads the umask without changing it; os.umask can only read by setting, which would race with
    # other threads creating files (data-loader threads, the kernel's own).
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the existing file's, else 0o666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_process_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, fsync it and move it over ``path`` only once it is complete.

    Args:
        path: Target file.
        write: Writes the whole content to the temporary path it is given (any writer that takes a path:
            ``torch.save``, ``DataFrame.to_csv``, ``fig.savefig`` ...).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(Path(tmp))
        _fsync_file(Path(tmp))  # the rename must not reach the disk before the data
        # mkstemp creates the file 0600: without this every run file would be unreadable to teammates.
        os.chmod(tmp, _final_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically (paths and numpy scalars converted, NaN as null)."""
    return write_text(path, json.dumps(_jsonable(data), indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> dict:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
