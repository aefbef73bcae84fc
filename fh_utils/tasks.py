"""Task descriptions: what each FASHION-HOW sub-task predicts, how it is scored and what its rules allow.

A :class:`Task` drives the whole engine: the dataset reads its label columns, the model factory builds
one head per :class:`Head`, the metrics compute its score and the model factory enforces its rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

CLASSES_FILE = "classes.json"


@dataclass(frozen=True)
class Head:
    """One classification output of a task.

    Attributes:
        column: Label column in the competition CSV (e.g. ``"Daily"``).
        key: Column name in the official submission DataFrame (e.g. ``"daily"``).
        class_names: Human-readable class names, index = class id.
    """

    column: str
    key: str
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes of this head."""
        return len(self.class_names)


@dataclass(frozen=True)
class Rules:
    """Competition rules a submission must respect.

    Attributes:
        size_budget_mb: Largest allowed model file, in MB (10**6 bytes).
        pretrained_allowed: Whether outside pretrained weights may be used.
        ensembles_allowed: Whether several models may be combined.
        outside_data_allowed: Whether data beyond the official release may be used.
    """

    size_budget_mb: float = 25.0
    pretrained_allowed: bool = True
    ensembles_allowed: bool = False
    outside_data_allowed: bool = True


@dataclass(frozen=True)
class Task:
    """A FASHION-HOW sub-task.

    Attributes:
        name: ``"st1"`` or ``"st2"``.
        title: Human-readable title.
        csv_prefix: CSV file prefix, e.g. ``"Fashion-How24_sub1"``.
        heads: The classification heads, in submission order.
        metric: ``"mean_top1"`` (mean top-1 accuracy over heads) or ``"acsa"`` (mean per-class accuracy).
        rules: Competition rules.
        classes_file: The ``classes.json`` whose class names this task carries (``""``: none); set by
            :func:`get_task`, which then does not read that file again for this task.
        classes_columns: The label columns whose class names came from ``classes_file``.
    """

    name: str
    title: str
    csv_prefix: str
    heads: tuple[Head, ...]
    metric: str
    rules: Rules = field(default_factory=Rules)
    classes_file: str = field(default="", compare=False, repr=False)
    classes_columns: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def label_columns(self) -> list[str]:
        """CSV label columns, one per head."""
        return [h.column for h in self.heads]

    @property
    def submission_columns(self) -> list[str]:
        """Columns of the official submission DataFrame."""
        return ["image_name"] + [h.key for h in self.heads]

    def head(self, column_or_key: str) -> Head:
        """Return the head whose CSV column or submission key is ``column_or_key``."""
        for h in self.heads:
            if column_or_key in (h.column, h.key):
                return h
        raise KeyError(f"task {self.name} has no head {column_or_key!r}; heads: {self.label_columns}")

    def csv_name(self, split: str) -> str:
        """File name of the CSV of ``split`` (train, val or test)."""
        return f"{self.csv_prefix}_{split}.csv"

    def to_dict(self) -> dict:
        """JSON-serialisable description (stored in run configs)."""
        return {
            "name": self.name,
            "metric": self.metric,
            "heads": {h.column: list(h.class_names) for h in self.heads},
            "rules": vars(self.rules),
        }


DAILY = ("Loungewear", "Light going-out", "Office", "Formal", "Event", "Sportswear")
GENDER = ("Mannish", "Unisex", "Girlish", "Elegant", "Sexy")
EMBELLISHMENT = ("None", "Point", "Lots")
COLOR = (
    "Red", "Coral", "Orange", "Pink", "Purple", "Brown", "Beige", "Ivory", "Yellow",
    "Mustard", "Skyblue", "Royalblue", "Navy", "Green", "Khaki", "White", "Gray", "Black",
)  # fmt: skip

ST1 = Task(
    name="st1",
    title="Sub-task 1: Daily / Gender / Embellishment",
    csv_prefix="Fashion-How24_sub1",
    heads=(
        Head("Daily", "daily", DAILY),
        Head("Gender", "gender", GENDER),
        Head("Embellishment", "embel", EMBELLISHMENT),
    ),
    metric="mean_top1",
    rules=Rules(size_budget_mb=25.0, pretrained_allowed=True, ensembles_allowed=False, outside_data_allowed=True),
)

ST2 = Task(
    name="st2",
    title="Sub-task 2: Color",
    csv_prefix="Fashion-How24_sub2",
    heads=(Head("Color", "color", COLOR),),
    metric="acsa",
    rules=Rules(size_budget_mb=25.0, pretrained_allowed=False, ensembles_allowed=True, outside_data_allowed=False),
)

TASKS = {"st1": ST1, "st2": ST2}

# Real train class counts (reference), used to shape the demo data and as documentation.
REAL_TRAIN_COUNTS = {
    "Daily": (589, 6852, 1065, 1683, 572, 442),
    "Gender": (930, 2759, 2703, 4288, 523),
    "Embellishment": (6177, 3323, 1703),
    "Color": (401, 65, 66, 516, 277, 872, 816, 735, 103, 43, 468, 344, 901, 320, 301, 999, 1306, 2525),
}


def find_classes_file(data_root: str | Path | None) -> Path | None:
    """Return the ``classes.json`` beside the CSVs of ``data_root`` (or its ``Dataset/``), if any."""
    if data_root is None:
        return None
    root = Path(data_root)
    for candidate in (root / CLASSES_FILE, root / "Dataset" / CLASSES_FILE):
        if candidate.is_file():
            return candidate
    return None


def read_classes_file(path: Path) -> dict[str, Any]:
    """The object a ``classes.json`` holds (``{label column: [class names]}``), read once.

    Raises:
        ValueError: Not valid JSON, or not an object; the message starts with the file.
    """
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(names, dict):
        raise ValueError(f"{path}: expected an object mapping label column -> list of class names")
    return names


def apply_classes(task: Task, names: dict[str, Any], path: Path) -> Task:
    """``task`` with the class names of the ``classes.json`` at ``path`` (``names``: its content).

    Raises:
        ValueError: A head's entry is not a non-empty list of strings, or a key is no task's label column; the
            message starts with the file.
    """
    heads = []
    for h in task.heads:
        override = names.get(h.column)
        if override is None:
            heads.append(h)
            continue
        if not isinstance(override, list) or not override or not all(isinstance(n, str) for n in override):
            raise ValueError(f"{path}: {h.column!r} must be a non-empty list of class-name strings")
        heads.append(replace(h, class_names=tuple(override)))
    known = list(dict.fromkeys(c for t in (*TASKS.values(), task) for c in t.label_columns))
    unknown = [k for k in names if k not in known]
    if unknown:
        raise ValueError(f"{path}: unknown label column(s) {unknown}; expected some of {known}")
    columns = tuple(h.column for h in task.heads if h.column in names)
    return replace(task, heads=tuple(heads), classes_file=str(path), classes_columns=columns)


def get_task(task: str | Task, data_root: str | Path | None = None) -> Task:
    """Return the task description, with class names from ``classes.json`` when the data root has one.

    The file is read once per task: a task that already carries it (:attr:`Task.classes_file`) is returned as is.

    Args:
        task: ``"st1"``, ``"st2"`` or a :class:`Task` (returned as is, after applying ``classes.json``).
        data_root: Data root; a ``classes.json`` there (``{"Daily": [...], ...}``) overrides class names
            and therefore class counts.

    Returns:
        The task description.

    Raises:
        KeyError: Unknown task name.
        ValueError: ``classes.json`` is malformed or names a label column no task has.
    """
    if isinstance(task, Task):
        base = task
    else:
        key = str(task).lower()
        if key not in TASKS:
            raise KeyError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
        base = TASKS[key]
    path = find_classes_file(data_root)
    if path is None or base.classes_file == str(path):
        return base
    return apply_classes(base, read_classes_file(path), path)
