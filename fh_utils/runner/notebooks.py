"""Run the numbered notebooks headlessly with papermill (the demo pipeline on them: :mod:`fh_utils.runner.demo`).

A notebook run keeps its executed copy (and an HTML rendering) in the run folder it belongs to; a failing
run keeps the executed notebook with the error too, so nothing is lost to an interruption or a bug.
"""

from __future__ import annotations

import ast
import difflib
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from traitlets import CaselessStrEnum, default

from fh_utils.io import write_text
from fh_utils.runner.progress import NotebookProgress

KERNEL = "python3"


class IPCKernelManager(AsyncKernelManager):
    """nbclient's kernel manager, with the kernel on local sockets (files) instead of TCP ports.

    ipykernel warns "Kernel is running over TCP without encryption" at every TCP start, and a user can do
    nothing about it; the workbook's own runs are local, so IPC removes the cause. The sockets get a private
    path in the temp folder (never the notebook's folder). Windows has no IPC transport.
    """

    transport = CaselessStrEnum(["tcp", "ipc"], default_value="tcp" if os.name == "nt" else "ipc", config=True)

    @default("ip")
    def _ip_default(self) -> str:
        # jupyter_client's IPC default is "kernel-ipc" relative to the kernel's working folder: the sockets would
        # land in notebooks/. One private path per kernel also keeps parallel sweep workers apart.
        if self.transport != "ipc":
            return super()._ip_default()
        return str(Path(tempfile.gettempdir()) / f"fh-kernel-{uuid.uuid4().hex[:12]}-ipc")


class UnknownParameterError(ValueError):
    """An override names a parameter the notebook does not declare in its ``parameters`` cell."""


# The first line of the cell papermill injects after the ``parameters`` cell (papermill.translators: the
# ``Parameters`` comment), and the names papermill itself may inject there (--inject-paths).
INJECTED_HEADER = "# Parameters"
PAPERMILL_NAMES = ("PAPERMILL_INPUT_PATH", "PAPERMILL_OUTPUT_PATH")


def notebook_parameters(notebook: str | Path) -> dict[str, dict]:
    """Parameters declared in the notebook's ``parameters`` cell (papermill's inspection)."""
    import papermill as pm

    return pm.inspect_notebook(str(notebook))


def unknown_parameters_message(unknown: list[str], declared: list[str]) -> str:
    """``unknown parameter 'img_szie' (did you mean 'img_size'?); declared: ...``, one entry per unknown name."""
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name, declared, n=1)
        named.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown parameter{'s' * (len(named) > 1)} {', '.join(named)}; declared: {', '.join(declared)}"


def check_parameters(notebook: str | Path, parameters: dict[str, Any]) -> None:
    """Raise :class:`UnknownParameterError` if ``parameters`` names anything the notebook does not declare."""
    declared = list(notebook_parameters(notebook))
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise UnknownParameterError(f"{Path(notebook).name}: {unknown_parameters_message(unknown, declared)}")


def assigned_names(source: str) -> list[str]:
    """The names a cell assigns at its top level, in order (``x = 1``, ``x: int = 1``, ``x = y = 1``)."""
    names: list[str] = []
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []  # fmt: skip
        names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def check_injected_parameters(history: Sequence[str] | None = None) -> None:
    """Refuse a setting papermill injected that the notebook does not declare (the cell after ``parameters``).

    ``papermill -p img_szie 384`` only warns and runs on, the setting silently ignored. papermill puts its
    ``injected-parameters`` cell (first line ``# Parameters``) right after the ``parameters`` cell, so in the
    kernel's input history the cell calling this comes after the injected cell, which comes after the parameters
    cell: every name the injected cell assigns must be assigned in the parameters cell too (or be papermill's
    own ``PAPERMILL_INPUT_PATH``/``PAPERMILL_OUTPUT_PATH``). Without an injected cell (JupyterLab, papermill
    without parameters, a plain interpreter) there is nothing to check.

    Args:
        history: The cells run so far, the calling cell last (default: the IPython kernel's input history).

    Raises:
        UnknownParameterError: Naming each unknown setting and the closest declared one.
    """
    if history is None:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None:
            return
        history = shell.history_manager.input_hist_raw
    if len(history) < 3 or not history[-2].lstrip().startswith(INJECTED_HEADER):
        return
    try:
        injected, declared = assigned_names(history[-2]), assigned_names(history[-3])
    except SyntaxError:  # not the cells papermill writes: nothing this check knows about
        return
    unknown = [name for name in injected if name not in declared and name not in PAPERMILL_NAMES]
    if unknown:
        raise UnknownParameterError(unknown_parameters_message(unknown, declared))


def render_html(executed: str | Path) -> Path:
    """Write an HTML rendering beside an executed notebook and return its path."""
    import nbformat
    from nbconvert import HTMLExporter

    executed = Path(executed)
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    out = executed.with_suffix(".html")
    write_text(out, body)
    return out


def run_notebook(
    notebook: str | Path,
    output: str | Path,
    parameters: dict[str, Any] | None = None,
    cwd: str | Path | None = None,
    html: bool = True,
    progress: bool = False,
    timeout: int | None = None,
    start_timeout: int = 60,
) -> Path:
    """Execute ``notebook`` with papermill into ``output`` (kernel ``python3``, explicit working directory).

    Args:
        notebook: Notebook to run.
        output: Executed copy to write (kept even when a cell fails).
        parameters: Overrides of the notebook's parameters (each must be declared there).
        cwd: Working directory of the kernel (default: the notebook's folder, so relative paths behave as in
            JupyterLab).
        html: Also write an HTML rendering beside ``output``.
        progress: Print a line per code cell and every line the kernel prints to stdout (e.g. the epoch lines
            with the validation score), each with the elapsed time (:class:`NotebookProgress`).
        timeout: Per-cell timeout in seconds.
        start_timeout: Seconds the kernel may take to start (sweep workers on a loaded machine need minutes).

    Returns:
        The executed notebook's path.
    """
    import papermill as pm

    notebook, output = Path(notebook), Path(output)
    parameters = dict(parameters or {})
    check_parameters(notebook, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    hooks: dict[str, Any] = {}
    if progress:
        shown = NotebookProgress.for_notebook(notebook, injected=bool(parameters))
        hooks = {"stdout_file": shown, "on_cell_start": shown.on_cell_start}
    restore_environment = _set_kernel_environment()
    try:
        pm.execute_notebook(
            str(notebook), str(output), parameters=parameters, kernel_name=KERNEL,
            cwd=str(cwd or notebook.parent), progress_bar=False, execution_timeout=timeout,
            start_timeout=start_timeout, kernel_manager_class=IPCKernelManager, **hooks,
        )  # fmt: skip
    finally:
        restore_environment()
        if progress:
            shown.close()
        if html and output.exists():
            render_html(output)
    return output


# What the kernel process needs from the start (a value the user set wins): OpenMP threads that sleep instead of
# spinning while they wait, or they starve a DataLoader worker or a second kernel on a small machine (torch fell
# from ~460 to ~7 img/s here); no albumentations update check (a network request at its import).
KERNEL_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "NO_ALBUMENTATIONS_UPDATE": "1"}


def _set_kernel_environment() -> Callable[[], None]:
    """Put :data:`KERNEL_ENV` into ``os.environ`` for the kernel about to start; return what restores it.

    The kernel inherits the environment when it starts; this process gets its own back afterwards.
    """
    added = {k: v for k, v in KERNEL_ENV.items() if k not in os.environ}
    os.environ.update(added)

    def restore() -> None:
        for key in added:
            os.environ.pop(key, None)

    return restore
