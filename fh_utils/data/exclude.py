"""Exclusion lists: rows a team reviewed and decided to train without (``DataConfig.exclude``), raw data untouched.

An exclusion list is a CSV with an ``image_name`` column (notebook 08's ``label_issues.csv`` is one). Every row of
a listed image leaves the *training* rows; validation rows never change, so a run without them is scored on
exactly the rows its predecessor was. With a ``source`` column (``train`` / ``val``, as ``label_issues.csv``
writes it) only the image of that CSV is meant; with an ``exclude`` column only the rows marked ``1``, ``true``,
``yes``, ``y`` or ``x`` are excluded, so a reviewer sets ``0`` on the rows whose label was right after all.

:func:`exclude_train_rows` is applied once, where the split's rows are chosen
(:func:`fh_utils.data.datasets.split_rows`), after folds are dealt: the fold of every row stays what it was
without the list, and the run's ``config.json`` records what was removed (``split.excluded``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fh_utils.runs import run_candidates

MARKED = {"1", "true", "yes", "y", "x"}
_EXAMPLES = 10


def resolve_exclusion(value: str | Path) -> Path:
    """The file an ``exclude`` setting names.

    A path (absolute or from the working folder), relative to the repository root, or under ``outputs/runs``
    (``<run or sweep>/label_issues.csv``).

    Raises:
        FileNotFoundError: None of those exists; each place looked in is named.
    """
    candidates = run_candidates(value)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"exclude={str(value)!r}: no such file; looked in "
                            + ", ".join(str(c) for c in candidates))  # fmt: skip


def read_exclusion(path: str | Path) -> pd.DataFrame:
    """The rows an exclusion list excludes: ``image_name`` and, when the file has it, ``source``.

    Raises:
        ValueError: Not a readable CSV, or no ``image_name`` column (the columns found are named).
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV ({err}); an exclusion list has an image_name column") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    if "image_name" not in frame.columns:
        raise ValueError(f"{path}: no image_name column (columns: {list(frame.columns)}); an exclusion list is a CSV "
                         "with one image_name per row to leave out of training")  # fmt: skip
    if "exclude" in frame.columns:
        frame = frame[frame["exclude"].str.strip().str.lower().isin(MARKED)]
    keep = ["image_name", "source"] if "source" in frame.columns else ["image_name"]
    frame = frame[keep].apply(lambda s: s.str.strip())
    return frame[frame["image_name"] != ""].drop_duplicates().reset_index(drop=True)


def exclude_train_rows(exclude: str, rows: dict[str, pd.DataFrame], record: dict[str, Any]
                       ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:  # fmt: skip
    """``rows`` with the listed images left out of ``rows["train"]`` (other splits untouched), and the record.

    Args:
        exclude: ``DataConfig.exclude`` (empty: nothing excluded, ``rows`` returned as they are).
        rows: ``{split: rows}`` as :func:`fh_utils.data.datasets.split_rows` chose them.
        record: The split's record; gets ``excluded`` (file, rows listed, rows removed, names not found among
            the training rows) and the new ``train_rows``.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: It has no ``image_name`` column.
    """
    if not exclude or "train" not in rows:
        return rows, record
    path = resolve_exclusion(exclude)
    listed = read_exclusion(path)
    train = rows["train"]
    names = train["image_name"].astype(str)
    if "source" in listed.columns:
        source = train["source"].astype(str) if "source" in train.columns else pd.Series("train", index=train.index)
        keys = set(zip(listed["source"], listed["image_name"]))
        drop = pd.Series([k in keys for k in zip(source, names)], index=train.index, dtype=bool)
        found = set(zip(source[drop], names[drop]))
        missing = [f"{s}:{n}" for s, n in zip(listed["source"], listed["image_name"]) if (s, n) not in found]
    else:
        drop = names.isin(set(listed["image_name"]))
        missing = sorted(set(listed["image_name"]) - set(names[drop]))
    kept = train[~drop].reset_index(drop=True)
    kept.attrs = dict(train.attrs)
    rows = {**rows, "train": kept}
    excluded = {"file": str(path.resolve()), "listed": len(listed), "rows_removed": int(drop.sum()),
                "not_found": len(missing), "not_found_examples": missing[:_EXAMPLES]}  # fmt: skip
    record = {**record, "excluded": excluded}
    if "train_rows" in record:
        record["train_rows"] = len(kept)
    return rows, record
