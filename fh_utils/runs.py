"""Run folders: ``outputs/runs/<run_name>/`` holds everything one run writes.

``config.json`` (resolved configuration), ``history.csv`` (a row per epoch), ``metrics.json`` (the best
epoch), ``best.pt`` / ``last.pt`` (checkpoints), ``figures/``, ``train.log`` and the executed notebook. All
files are written atomically (temporary file, then rename): an interruption leaves the previous version.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fh_utils.paths import runs_dir

CONFIG_FILE, HISTORY_FILE, METRICS_FILE = "config.json", "history.csv", "metrics.json"
BEST_CKPT, LAST_CKPT = "best.pt", "last.pt"


def default_run_name(task: str | None = None, backbone: str | None = None, img_size: int | None = None) -> str:
    """``<timestamp>-<task>-<backbone>-<img size>``, as timm names its runs."""
    parts = [datetime.now().strftime("%Y%m%d-%H%M%S"), task, backbone.split(".")[0] if backbone else None,
             str(img_size) if img_size else None]  # fmt: skip
    return "-".join(p for p in parts if p)


def create_run_dir(
    run_name: str | None = None,
    task: str | None = None,
    backbone: str | None = None,
    img_size: int | None = None,
    root: str | Path | None = None,
) -> Path:
    """Create (or reuse) ``<root>/<run_name>/`` with its ``figures/`` folder and return it.

    Args:
        run_name: Folder name; empty or None gives :func:`default_run_name`.
        task: Task name (for the default name).
        backbone: Backbone name (for the default name).
        img_size: Input size (for the default name).
        root: Parent folder (default ``outputs/runs``, or ``$FH_OUTPUTS/runs``).
    """
    name = run_name or default_run_name(task, backbone, img_size)
    if not re.fullmatch(r"[\w.\-]+", name):
        raise ValueError(f"run_name {name!r} may only hold letters, digits, '_', '-' and '.'")
    run_dir = Path(root) if root is not None else runs_dir()
    run_dir = run_dir / name
    (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    return run_dir


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result over ``path`` only once it is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically (paths and numpy scalars converted)."""
    text = json.dumps(_jsonable(data), indent=2, sort_keys=False)
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def read_json(path: str | Path) -> dict:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_history(run_dir: str | Path, rows: list[dict]) -> None:
    """Rewrite ``history.csv`` from all epoch rows (kept in the checkpoint, so both always agree)."""
    frame = pd.DataFrame(rows)
    atomic_write(Path(run_dir) / HISTORY_FILE, lambda tmp: frame.to_csv(tmp, index=False))


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """The per-epoch history of a run."""
    return pd.read_csv(Path(run_dir) / HISTORY_FILE)


def save_figure(fig: Any, run_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` of the run folder and return the path."""
    path = Path(run_dir) / "figures" / f"{name}.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
    return path


def list_runs(root: str | Path | None = None) -> pd.DataFrame:
    """One row per run folder that has a ``metrics.json``: name, task, backbone, score, baseline score."""
    root = Path(root) if root is not None else runs_dir()
    rows = []
    for metrics_path in sorted(root.glob(f"*/{METRICS_FILE}")):
        metrics = read_json(metrics_path)
        config_path = metrics_path.parent / CONFIG_FILE
        config = read_json(config_path) if config_path.exists() else {}
        rows.append(
            dict(run=metrics_path.parent.name, task=metrics.get("task"), backbone=config.get("backbone"),
                 img_size=config.get("img_size"), epoch=metrics.get("epoch"), score=metrics.get("score"),
                 baseline_score=metrics.get("baseline_score"))  # fmt: skip
        )
    return pd.DataFrame(rows)
