"""Progress lines for a headless notebook run: the cell running, what the kernel prints, the elapsed time.

papermill's own progress bar only counts cells and hides everything the notebook prints, so a training notebook
looks frozen for minutes. :class:`NotebookProgress` is handed to papermill twice: as nbclient's ``on_cell_start``
hook (one line per code cell, named after its section heading) and as ``stdout_file`` (every line the kernel
prints to stdout, e.g. the engine's epoch line with the validation score). Plain lines, no terminal control
codes, so a log file or CI output reads the same as a terminal.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

import nbformat
from nbformat import NotebookNode

MAX_LINE = 200  # longer kernel lines are cut: one line each in the terminal


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``"1:15"``; ``3725`` -> ``"1:02:05"``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _heading(cell: NotebookNode) -> str | None:
    for line in cell.source.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return None


def _first_code_line(source: str) -> str:
    for line in source.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "%", "!")) and not line.startswith(("import ", "from ")):
            return line[:60]
    return ""


class NotebookProgress:
    """Prints ``<elapsed> cell <i>/<n>  <section>`` per code cell and ``<elapsed>   | <line>`` per kernel line.

    Args:
        total_cells: Code cells to run (with the injected-parameters cell), for the ``i/n`` count.
        out: Where to print (default: ``sys.stdout`` at construction time).
        indent: Prefix of every line (the demo nests them under its per-notebook header).
    """

    def __init__(self, total_cells: int, out: TextIO | None = None, indent: str = "  ") -> None:
        self.total_cells = total_cells
        self.out = out or sys.stdout
        self.indent = indent
        self.start = time.perf_counter()
        self.cells_started = 0
        self._section: str | None = None
        self._pending = ""

    @classmethod
    def for_notebook(cls, notebook: str | Path, injected: bool = False, **kwargs: Any) -> NotebookProgress:
        """Progress of running ``notebook`` (``injected``: papermill adds a cell with the parameters)."""
        cells = nbformat.read(notebook, as_version=4).cells
        return cls(sum(c.cell_type == "code" and bool(c.source.strip()) for c in cells) + injected, **kwargs)

    def elapsed(self) -> float:
        """Seconds since this notebook run started."""
        return time.perf_counter() - self.start

    def _print(self, text: str) -> None:
        print(f"{self.indent}{format_seconds(self.elapsed()):>7}  {text}", file=self.out, flush=True)

    def on_cell_start(self, cell: NotebookNode, cell_index: int, **_: Any) -> None:
        """The hook nbclient calls before every cell (markdown cells only update the section name)."""
        self._flush_pending()
        if cell.cell_type == "markdown":
            self._section = _heading(cell) or self._section
            return
        if cell.cell_type != "code" or not cell.source.strip():
            return
        self.cells_started += 1
        tags = cell.metadata.get("tags", [])
        label = next((t for t in ("injected-parameters", "parameters") if t in tags), None)
        label = label or self._section or _first_code_line(cell.source)
        self._section = None  # a second code cell under the same heading is named by its code
        self._print(f"cell {self.cells_started:>2}/{self.total_cells}  {label}")

    def write(self, text: str) -> int:
        """The kernel's stdout (papermill's ``stdout_file``): complete lines are printed as they arrive."""
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._print_kernel_line(line)
        return len(text)

    def _print_kernel_line(self, line: str) -> None:
        line = line.rsplit("\r", 1)[-1].rstrip()  # a carriage-return progress line: its final state only
        if line:
            self._print(f"  | {line[:MAX_LINE]}")

    def _flush_pending(self) -> None:
        if self._pending:
            self._print_kernel_line(self._pending)
            self._pending = ""

    def flush(self) -> None:
        """Nothing buffered beyond an unfinished line, which waits for its newline (or the next cell)."""

    def close(self) -> None:
        """Print a last unfinished line, if any."""
        self._flush_pending()
