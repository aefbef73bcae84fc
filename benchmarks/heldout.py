"""A data root whose val split is cut in two: a part to choose on (the new val) and a part nobody sees (test).

    python -m benchmarks.heldout --src ../shared/data/products_b --dest outputs/bench_data/products_b-heldout

The new root links the source's ``train/`` and ``val/`` image folders (``test/`` links ``val/`` too), copies its
``classes.json`` and train CSV, and writes the two halves of the val CSV: ``*_val.csv`` (the choosing part) and
``*_test.csv`` (the held-out part, labels kept, images under ``test/``). Every class is halved (a shuffled class
of n rows gives ceil(n/2) to val), so both halves keep the val split's class balance. The source is only read.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from fh_utils.tasks import get_task

SEED = 2026


def halve(labels: np.ndarray, seed: int = SEED) -> np.ndarray:
    """A boolean mask of the rows that stay in val: every class shuffled from ``seed``, its first ceil(n/2) kept."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        keep[rows[: (len(rows) + 1) // 2]] = True
    return keep


def build(src: Path, dest: Path, tasks: tuple[str, ...] = ("st2",), seed: int = SEED) -> dict:
    """Write the held-out root (see the module docstring); returns the rows per split and task."""
    src, dest = Path(src).resolve(), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for folder, target in (("train", "train"), ("val", "val"), ("test", "val")):
        link = dest / folder
        if not link.exists():
            link.symlink_to(src / target, target_is_directory=True)
    if (src / "classes.json").exists():
        shutil.copyfile(src / "classes.json", dest / "classes.json")
    counts = {}
    for name in tasks:
        task = get_task(name, src)
        train = pd.read_csv(src / task.csv_name("train"), dtype=str, keep_default_na=False)
        val = pd.read_csv(src / task.csv_name("val"), dtype=str, keep_default_na=False)
        keep = halve(val[task.heads[0].column].astype(int).to_numpy(), seed)
        train.to_csv(dest / task.csv_name("train"), index=False)
        val[keep].to_csv(dest / task.csv_name("val"), index=False)
        val[~keep].to_csv(dest / task.csv_name("test"), index=False)
        counts[name] = {"train": len(train), "val": int(keep.sum()), "test": int((~keep).sum())}
    (dest / "HELDOUT.json").write_text(json.dumps({"source": str(src), "seed": seed, "rows": counts}, indent=2) + "\n")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--tasks", nargs="+", default=["st2"])
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    print(json.dumps(build(args.src, args.dest, tuple(args.tasks), args.seed), indent=2))


if __name__ == "__main__":
    main()
