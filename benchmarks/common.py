"""Shared helpers for the benchmarks: machine description, demo data at a chosen size, result output."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH_DATA = ROOT / "outputs" / "bench_data"


def machine() -> str:
    """One line describing where the figures were measured."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def demo_root(name: str, scale: float, size_range: tuple[int, int]) -> Path:
    """A demo dataset for benchmarks (generated once under outputs/bench_data/)."""
    from fh_utils.prep.demo import ensure_demo_dataset

    return ensure_demo_dataset(BENCH_DATA / name, seed=0, scale=scale, size_range=size_range)


def report(name: str, figures: dict, json_path: str | None) -> None:
    """Print the figures with the command and machine; optionally write them as JSON."""
    figures = {"benchmark": name, "command": " ".join([Path(sys.executable).name, *sys.argv]),
               "machine": machine(), "date": date.today().isoformat(), **figures}  # fmt: skip
    print(json.dumps(figures, indent=2))
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2) + "\n")
