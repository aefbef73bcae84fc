"""The FASHION-HOW data layer: find the files, read and validate a split, serve it as a Dataset.

Validation never drops anything silently: every problem is collected with its file, CSV line and what is
wrong. By default :func:`read_split` raises :class:`DataValidationError` listing them all; with
``on_error="skip"`` it drops the bad rows, logs a report and keeps it in ``df.attrs["skipped"]``.
"""

from __future__ import annotations

import csv
import difflib
import io
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from fh_utils.data.images import ImageLoadError, image_size
from fh_utils.tasks import Task, find_classes_file, get_task

log = logging.getLogger(__name__)

BOX_COLUMNS = ["BBox_xmin", "BBox_ymin", "BBox_xmax", "BBox_ymax"]
SPLITS = ("train", "val", "test")
_MISSING = {"", "nan", "na", "n/a", "null", "none"}
_INT = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() would also take '١', '1_000' or ' 1 '


@dataclass(frozen=True)
class DataProblem:
    """One thing wrong with the data.

    Attributes:
        file: The CSV (or image) concerned.
        row: CSV line number (the header is line 1), or None for a problem with the whole file.
        message: What is wrong.
    """

    file: str
    row: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.row}" if self.row is not None else self.file
        return f"{where}: {self.message}"


class DataValidationError(ValueError):
    """The data has problems; ``problems`` lists each with file, row and message."""

    def __init__(self, problems: list[DataProblem], max_lines: int = 30):
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:max_lines]]
        if len(self.problems) > max_lines:
            lines.append(f"... and {len(self.problems) - max_lines} more problems")
        hint = (
            "\nFix the data, or pass on_error='skip' to drop the bad rows (they are reported)."
            if any(p.row is not None for p in self.problems)
            else ""
        )
        super().__init__(f"{len(self.problems)} data problem(s):\n" + "\n".join(lines) + hint)


def find_data_dir(root: str | Path) -> Path:
    """Return the folder that holds the CSVs: ``root`` itself, or ``root/Dataset`` (the official archive).

    Raises:
        DataValidationError: No FASHION-HOW CSV is found in either place.
    """
    root = Path(root)
    for candidate in (root, root / "Dataset"):
        if candidate.is_dir() and any(candidate.glob("Fashion-How24_sub*_*.csv")):
            return candidate
    if not root.exists():
        raise DataValidationError([DataProblem(str(root), None, "data root does not exist")])
    raise DataValidationError(
        [
            DataProblem(
                str(root),
                None,
                "no Fashion-How24_sub{1,2}_{train,val}.csv here or in Dataset/; unpack the FASHION-HOW "
                "archive here, or run `python -m fh_utils demo-data DIR` for the synthetic demo data",
            )
        ]
    )


def csv_path(root: str | Path, task: str | Task, split: str) -> Path:
    """Path of the CSV of ``task`` and ``split`` under ``root`` (which may hold a ``Dataset/`` folder)."""
    task = get_task(task)
    return find_data_dir(root) / task.csv_name(split)


def images_dir(root: str | Path, split: str) -> Path:
    """Folder of the images of ``split`` (``image_name`` is relative to it)."""
    return find_data_dir(root) / split


def _decode_csv(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    if raw.startswith(b"PK\x03\x04"):
        msg = "a zip file (an Excel .xlsx?), not CSV text; export it from the spreadsheet as 'CSV UTF-8'"
        raise DataValidationError([DataProblem(str(path), None, msg)])
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            hint = "the file is UTF-16: re-save it as UTF-8 or pass encoding='utf-16'"
        else:
            hint = "re-save the file as UTF-8 (e.g. `iconv -f cp949 -t utf-8`) or pass encoding='cp949'"
        msg = f"not valid {encoding} text (byte 0x{raw[err.start]:02x} at offset {err.start}); {hint}"
        raise DataValidationError([DataProblem(str(path), None, msg)]) from err
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DataValidationError([DataProblem(str(path), None, "empty CSV (no header, no rows)")])
    return text


def _read_csv_lines(path: Path, encoding: str) -> tuple[pd.DataFrame, list[int], list[DataProblem]]:
    """Read the CSV as text; return it, the CSV line number of each row, and the problems of malformed lines.

    Everything stays text: labels and boxes are parsed later so each bad cell is reported, not coerced.
    Blank lines are skipped (line numbers stay those of the file); a line with more or fewer fields than
    the header is reported, not read.
    """
    reader = csv.reader(io.StringIO(_decode_csv(path, encoding), newline=""), skipinitialspace=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    problems: list[DataProblem] = []
    end = 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if len(record) <= 1 and not "".join(record).strip():
                continue  # blank line
            if header is None:
                header = [c.strip() for c in record]
                dupes = sorted({c for c in header if header.count(c) > 1}, key=header.index)
                if dupes:
                    msgs = [f"column {c!r} appears {header.count(c)} times in the header" for c in dupes]
                    raise DataValidationError([DataProblem(str(path), None, m) for m in msgs])
            elif len(record) != len(header):
                msg = f"expected {len(header)} fields (as in the header), found {len(record)}"
                if end > start:
                    msg += f" (the record runs on to line {end}: an unclosed quote?)"
                problems.append(DataProblem(str(path), start, msg))
            else:
                rows.append(record)
                lines.append(start)
    except csv.Error as err:  # e.g. a field over csv.field_size_limit()
        raise DataValidationError([DataProblem(str(path), end + 1, f"unreadable CSV line ({err})")]) from err
    assert header is not None  # the text is not blank
    return pd.DataFrame(rows, columns=header), lines, problems  # csv yields str cells only


def _parse_int(value: str) -> int | None:
    text = value.strip()
    return int(text) if _INT.fullmatch(text) else None


def _not_an_int(column: str, text: str, what: str) -> str:
    """Message for a cell that should hold an integer ``what`` and does not parse."""
    if text.strip().lower() in _MISSING:
        return f"{column} is missing"
    hint = ""
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if number.is_integer():
            hint = f" (a float: write {int(number)})"
    return f"{column} must be an integer {what}, got {text!r}{hint}"


def _column_problems(path: Path, columns: list[str], expected: list[str], optional: list[str]) -> list[DataProblem]:
    problems = []
    present = set(columns)
    for col in expected:
        if col in present:
            continue
        close = difflib.get_close_matches(col, [c for c in columns if c not in expected])  # best first
        renamed = [c for c in columns if c.strip().lower() == col.lower()]
        hint = f" (found {(renamed or close)[0]!r}: renamed?)" if (renamed or close) else ""
        problems.append(DataProblem(str(path), None, f"missing column {col!r}{hint}; expected {expected}"))
    extra = [c for c in columns if c not in expected and c not in optional]
    if extra and not problems:
        msg = f"{path}: extra column(s) {extra} kept but not used"
        log.warning(msg)
        warnings.warn(msg, stacklevel=3)
    return problems


def _unsafe_name(name: str) -> str | None:
    """Why ``image_name`` would reach outside the images folder (absolute or ``..``), or None if it stays inside."""
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        return f"image_name {name!r} is an absolute path; it must be relative to the images folder"
    if ".." in re.split(r"[/\\]", name):
        return f"image_name {name!r} escapes the images folder ('..'); it must stay inside it"
    return None


def _row_problems(
    df: pd.DataFrame, task: Task, has_labels: bool, img_dir: Path, check_images: bool
) -> tuple[dict[int, list[str]], list[tuple[int, int] | None]]:
    """Check every row; return {row index: [messages]} and the (width, height) of each image."""
    bad: dict[int, list[str]] = {}
    sizes: list[tuple[int, int] | None] = []
    heads = task.heads if has_labels else ()
    for i, row in enumerate(df.to_dict("records")):
        msgs: list[str] = []
        name = str(row["image_name"]).strip()
        if name.lower() in _MISSING:
            msgs.append("image_name is empty")
        for head in heads:
            text = str(row[head.column])
            value = _parse_int(text)
            if value is None:
                msgs.append(_not_an_int(head.column, text, "class id"))
            elif not 0 <= value < head.num_classes:
                n = head.num_classes
                msgs.append(f"{head.column}={value} out of range 0..{n - 1} ({n} classes)")
        box = []
        for col in BOX_COLUMNS:
            text = str(row[col])
            value = _parse_int(text)
            if value is None:
                msgs.append(_not_an_int(col, text, "pixel coordinate"))
            box.append(value)
        size = None
        unsafe = _unsafe_name(name)  # None for an empty name too
        if unsafe is not None:  # never looked up: the file it names is not ours to read
            msgs.append(unsafe)
        elif name.lower() not in _MISSING and check_images:
            img_path = img_dir / name
            if not img_path.is_file():
                msgs.append(f"image not found: {img_path}")
            else:
                try:
                    size = image_size(img_path)
                except ImageLoadError as err:
                    msgs.append(str(err))
        if None not in box:
            x0, y0, x1, y1 = box
            if x0 < 0 or y0 < 0:
                msgs.append(f"box {tuple(box)} has negative coordinates")
            if x0 >= x1 or y0 >= y1:
                kind = "inverted" if x0 > x1 or y0 > y1 else "zero-area"
                msgs.append(f"{kind} box {tuple(box)}: need xmin < xmax and ymin < ymax")
            if size is not None and (x1 > size[0] or y1 > size[1]):
                msgs.append(f"box {tuple(box)} outside the image ({size[0]} x {size[1]} px)")
        if msgs:
            bad[i] = msgs
        sizes.append(size)
    return bad, sizes


def _duplicate_problems(df: pd.DataFrame, has_labels: bool, task: Task, lines: list[int]) -> dict[int, list[str]]:
    """Repeated rows and images; ``lines``: CSV line number of each row."""
    bad: dict[int, list[str]] = {}
    key_cols = ["image_name"] + BOX_COLUMNS + (task.label_columns if has_labels else [])
    first_full: dict[tuple, int] = {}
    first_name: dict[str, int] = {}
    for i, values in enumerate(df[key_cols].itertuples(index=False, name=None)):
        name = values[0]
        if values in first_full:
            bad.setdefault(i, []).append(f"duplicate of line {lines[first_full[values]]}")
        elif name in first_name:
            bad.setdefault(i, []).append(
                f"image {name!r} already listed on line {lines[first_name[name]]} with other values"
            )
        first_full.setdefault(values, i)
        first_name.setdefault(name, i)
    return bad


def _task_with_classes(task: str | Task, root: str | Path) -> Task:
    """``get_task(task, root)``, raising every problem of ``classes.json`` as a DataValidationError."""
    try:
        return get_task(task, root)
    except ValueError as err:
        classes_file = find_classes_file(root)
        if classes_file is None:
            raise
        message = str(err).removeprefix(f"{classes_file}: ")
        raise DataValidationError([DataProblem(str(classes_file), None, message)]) from err


def _classes_file_problems(task: Task, df: pd.DataFrame) -> list[DataProblem]:
    """Blame the task's ``classes.json`` when it sets fewer classes for a head than the CSV labels use."""
    if not task.classes_file:
        return []
    msgs = []
    for head in task.heads:
        values = [v for v in map(_parse_int, df[head.column]) if v is not None]
        if head.column in task.classes_columns and values and max(values) >= head.num_classes:
            n, top = head.num_classes, max(values)
            msgs.append(f"{head.column} has {n} classes there but the CSV uses labels up to {top}")
    if not msgs:
        return []
    msg = "class count disagrees with the CSV labels: " + "; ".join(msgs)
    return [DataProblem(task.classes_file, None, msg)]


def read_split(
    root: str | Path,
    task: str | Task,
    split: str,
    on_error: str = "raise",
    check_images: bool = True,
    images_root: str | Path | None = None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read and validate the CSV of one split.

    Args:
        root: Data root (holding the CSVs, or a ``Dataset/`` folder that does).
        task: ``"st1"``, ``"st2"`` or a :class:`Task`; class counts come from ``classes.json`` when present.
        split: ``"train"``, ``"val"`` or ``"test"``. A test CSV may lack every label column.
        on_error: ``"raise"`` (default) raises on any problem; ``"skip"`` drops bad rows and logs them.
        check_images: Check that each image exists and read its size from its header (needed to check that
            boxes lie inside the image).
        images_root: Folder the ``image_name`` paths are relative to (default ``<data dir>/<split>``); used
            for background-removed copies.
        encoding: CSV text encoding.

    Returns:
        DataFrame with the CSV columns (boxes and labels as int), plus ``path`` (image file), ``line`` (CSV
        line number), ``width`` and ``height`` (stored image size, when ``check_images``). ``df.attrs``
        holds ``has_labels``, ``csv`` and ``skipped`` (the problems of dropped rows).

    Raises:
        DataValidationError: Listing every problem with file, line and message.
    """
    task = _task_with_classes(task, root)
    path = csv_path(root, task, split)
    img_dir = Path(images_root) / split if images_root is not None else path.parent / split
    return read_csv(path, task, img_dir, labels_optional=split == "test", on_error=on_error,
                    check_images=check_images, encoding=encoding, classes_root=root)  # fmt: skip


def read_csv(
    path: str | Path,
    task: Task,
    images_dir: str | Path,
    labels_optional: bool = False,
    on_error: str = "raise",
    check_images: bool = True,
    encoding: str = "utf-8",
    classes_root: str | Path | None = None,
) -> pd.DataFrame:
    """Read and validate a CSV in the FASHION-HOW layout at any path (see :func:`read_split`).

    Args:
        path: The CSV.
        task: Task description (class counts already resolved).
        images_dir: Folder the ``image_name`` paths are relative to.
        labels_optional: Accept a CSV without any label column (a test CSV, for prediction).
        on_error: ``"raise"`` or ``"skip"`` bad rows (reported).
        check_images: Check each image's existence and header.
        encoding: CSV text encoding.
        classes_root: Data root whose ``classes.json`` is named when labels exceed its class counts (not read
            again when ``task`` came from it: :func:`fh_utils.tasks.get_task`).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(path)
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob("*.csv"))  # none when the folder is missing
        raise DataValidationError([DataProblem(str(path), None, f"CSV not found; CSVs present: {found}")])
    df, lines, line_problems = _read_csv_lines(path, encoding)
    labels_present = [c for c in task.label_columns if c in df.columns]
    has_labels = not labels_optional or bool(labels_present)
    expected = ["image_name"] + BOX_COLUMNS + (task.label_columns if has_labels else [])
    problems = _column_problems(path, list(df.columns), expected, optional=[])
    if problems:
        raise DataValidationError(problems)
    if df.empty and not line_problems:
        raise DataValidationError([DataProblem(str(path), None, "CSV has a header but no data rows")])

    img_dir = Path(images_dir)
    bad, sizes = _row_problems(df, task, has_labels, img_dir, check_images)
    for i, msgs in _duplicate_problems(df, has_labels, task, lines).items():
        bad.setdefault(i, []).extend(msgs)
    row_problems = line_problems + [DataProblem(str(path), lines[i], "; ".join(m)) for i, m in bad.items()]
    row_problems.sort(key=lambda p: p.row)
    n_bad = len(row_problems)
    if has_labels and classes_root is not None:
        row_problems.extend(_classes_file_problems(_task_with_classes(task, classes_root), df))
    if row_problems and on_error == "raise":
        raise DataValidationError(row_problems)

    df = df.copy()
    df["line"] = lines  # int64 whatever the platform
    df["width"] = [s[0] if s else -1 for s in sizes]
    df["height"] = [s[1] if s else -1 for s in sizes]
    df = df.drop(index=df.index[sorted(bad)]).reset_index(drop=True)
    if n_bad:
        report = "\n".join(str(p) for p in row_problems)
        log.warning("skipped %d bad row(s) of %s:\n%s", n_bad, path, report)
    if df.empty:
        raise DataValidationError(row_problems + [DataProblem(str(path), None, "no valid rows left")])
    df["image_name"] = df["image_name"].str.strip()
    int_cols = BOX_COLUMNS + (task.label_columns if has_labels else [])
    df[int_cols] = df[int_cols].apply(lambda s: s.str.strip().astype(np.int64))
    df["path"] = [str(img_dir / n) for n in df["image_name"]]
    df.attrs.update(has_labels=has_labels, csv=str(path), skipped=[str(p) for p in row_problems])
    return df


def class_counts(df: pd.DataFrame, task: Task) -> dict[str, np.ndarray]:
    """Number of rows per class for every head (classes absent from ``df`` count 0)."""
    return {h.column: np.bincount(df[h.column].to_numpy(), minlength=h.num_classes) for h in task.heads}


def validate_root(root: str | Path, tasks: tuple[str, ...] = ("st1", "st2")) -> list[DataProblem]:
    """Validate every split present under ``root`` for ``tasks``; return all problems (empty if clean)."""
    problems: list[DataProblem] = []
    try:
        data_dir = find_data_dir(root)
    except DataValidationError as err:
        return err.problems
    for name in tasks:
        try:
            task = _task_with_classes(name, root)
        except DataValidationError as err:  # one bad classes.json: reported once, not once per task
            problems.extend(p for p in err.problems if p not in problems)
            continue
        for split in SPLITS:
            path = data_dir / task.csv_name(split)
            if not path.exists():
                if split != "test":
                    problems.append(DataProblem(str(path), None, "CSV not found"))
                continue
            try:
                read_split(root, task, split)
            except DataValidationError as err:
                problems.extend(err.problems)
    return problems
