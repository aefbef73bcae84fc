"""The packaged ``task.ipynb``: the platform's 2024 template shape, its code cells from ``templates/task.py``.

The notebook holds a markdown cell (what was packaged: ``templates/intro.md``), a ``parameters`` cell (``KEY``,
``MODEL_NAME``), the inference function ``etri_task{1,2}_submit()`` (every import inside it, as the template
requires), ``submit()`` and the last cell: the client's upload with a key, else a local dry run. The code cells
are a real Python file (:data:`TEMPLATE`, linted with the package) whose placeholders are filled in per submission.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fh_utils.inference.aif import CODE_ARCHIVE, DATASET_ENV
from fh_utils.tasks import Task

NOTEBOOK_FILE = "task.ipynb"
MODEL_DIR = "model"
TEMPLATE = Path(__file__).resolve().parent / "templates" / "task.py"
INTRO = TEMPLATE.with_name("intro.md")  # the markdown cell: str.format fields, filled per submission
CELL_MARK = "# %%"
# The placeholders of the template: identifiers and text inside strings, and whole strings ("__key__").
_PLACEHOLDER = re.compile(r'"__(key|model_name)__"|__(function_name|model_dir|code_archive|dataset_env)__')


def function_name(task: Task) -> str:
    """The template's name of the inference function: ``etri_task1_submit`` (ST1) or ``etri_task2_submit``."""
    return f"etri_task{task.csv_prefix[-1]}_submit"


def template_cells(text: str | None = None) -> list[tuple[str, list[str]]]:
    """The code cells of the template (default :data:`TEMPLATE`): ``(source, tags)`` each, in order.

    A cell starts at a line ``# %%`` (``# %% tags=["parameters"]`` gives its tags); what comes before the first
    is a comment about the file, not a cell. Blank lines around a cell's source are dropped.
    """
    text = TEMPLATE.read_text(encoding="utf-8") if text is None else text
    cells: list[tuple[str, list[str]]] = []
    lines: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(CELL_MARK):
            tags = json.loads(line.split("tags=", 1)[1]) if "tags=" in line else []
            lines = []
            cells.append(("", tags))
        elif lines is not None:
            lines.append(line)
            cells[-1] = ("\n".join(lines).strip("\n"), cells[-1][1])
    return cells


def fill(source: str, values: dict[str, str]) -> str:
    """``source`` with every placeholder replaced (in one pass: a value is never read as a placeholder).

    ``values`` maps each placeholder's name (``function_name``, ``key``, ...) to its text; ``key`` and
    ``model_name`` become JSON strings.
    """

    def replace(match: re.Match) -> str:
        quoted, bare = match.groups()
        return json.dumps(values[quoted]) if quoted else values[bare]

    return _PLACEHOLDER.sub(replace, source)


def _code_cell(source: str, tags: list[str] | None = None) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {"tags": tags} if tags else {},
            "outputs": [], "source": source.strip("\n")}  # fmt: skip


def _markdown_cell(source: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": source.strip("\n")}


def task_notebook(spec: dict[str, Any], task: Task, key: str = "", model_dir: str = MODEL_DIR) -> dict:
    """The packaged ``task.ipynb`` (nbformat 4 JSON) in the 2024 template's shape, for ``spec`` (submission.json).

    No IPython magics: ``jupyter nbconvert --to python`` of it is a plain script.
    """
    fn = function_name(task)
    members = "".join(f"\n| {Path(m['run']).name} | {m['weight']:g} | {m['size_mb']:.2f} | {m.get('score')} |"
                      for m in spec["members"])  # fmt: skip
    values = {"function_name": fn, "model_dir": model_dir, "code_archive": CODE_ARCHIVE, "dataset_env": DATASET_ENV,
              "key": key, "model_name": spec["model_name"]}  # fmt: skip
    intro = INTRO.read_text(encoding="utf-8").format(
        **values, task_name=task.name.upper(), name=spec["name"], title=task.title, created=spec["created"],
        model_file=spec["model_file"], kind=spec["kind"], size_mb=spec["size_mb"], budget_mb=spec["budget_mb"],
        tta=spec["tta"], metric=spec["metric"], validated_score=spec.get("validated_score"), members=members,
        test_csv=task.csv_name("test"), columns=", ".join(task.submission_columns),
    )  # fmt: skip
    cells = [_markdown_cell(intro)] + [_code_cell(fill(source, values), tags) for source, tags in template_cells()]
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i}"
    kernel = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return {"cells": cells, "metadata": {"kernelspec": kernel, "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}  # fmt: skip


def notebook_script(notebook: str | Path) -> str:
    """The script ``jupyter nbconvert --to python`` makes of a notebook (refused if it needs IPython magics)."""
    from nbconvert import PythonExporter

    script, _ = PythonExporter().from_filename(str(notebook))
    if "get_ipython()" in script:
        raise ValueError(f"{notebook}: holds IPython magics; the converted script would not run in plain Python")
    return script
