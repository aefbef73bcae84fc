"""Run the numbered notebooks headlessly with papermill, and the demo pipeline built on them.

A notebook run keeps its executed copy (and an HTML rendering) in the run folder it belongs to; a failing
run keeps the executed notebook with the error too, so nothing is lost to an interruption or a bug.
"""

from __future__ import annotations

import ast
import difflib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from jupyter_client.manager import AsyncKernelManager
from traitlets import CaselessStrEnum, default

from fh_utils.io import write_text
from fh_utils.paths import PROJECT_ROOT, runs_dir
from fh_utils.workbook.progress import NotebookProgress, format_seconds

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
DEMO_PARAMS = NOTEBOOKS_DIR / "demo_params.yaml"
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


def _resolve(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("{project}"):
        return str(PROJECT_ROOT / value[len("{project}/") :])
    return value


def run_demo(params_file: str | Path = DEMO_PARAMS, data_root: str | Path | None = None) -> dict[str, Any]:
    """The main job: make the demo data if missing, then run every notebook of ``params_file`` in order.

    Args:
        params_file: YAML with ``data_root``, ``demo_data`` (seed, scale) and ``runs`` (a list of
            ``{notebook, folder, parameters}``; ``folder`` is the run folder receiving the executed copy).
        data_root: Override of the YAML's data root (real data: no demo data is generated).

    Returns:
        ``{"runs": {folder: path}, "scores": {task: metrics}, "submissions": {task: dry-run report},
        "seconds": total}``.
    """
    from fh_utils.data.demo import ensure_demo_dataset
    from fh_utils.runs import read_json

    spec = yaml.safe_load(Path(params_file).read_text(encoding="utf-8"))
    start = time.perf_counter()
    root = Path(_resolve(data_root or spec["data_root"]))
    print(f"[demo] data {root}", flush=True)
    if data_root is None:
        demo = spec.get("demo_data", {})
        ensure_demo_dataset(root, seed=demo.get("seed", 0), scale=demo.get("scale", 1.0))
    results: dict[str, Any] = {"runs": {}, "scores": {}}
    steps = spec["runs"]
    for i, step in enumerate(steps, 1):
        nb = NOTEBOOKS_DIR / step["notebook"]
        params = {k: _resolve(v) for k, v in step.get("parameters", {}).items()}
        if "data_root" in notebook_parameters(nb):
            params.setdefault("data_root", str(root))
        folder = runs_dir() / step["folder"]
        t0 = time.perf_counter()
        print(f"[demo {i}/{len(steps)}] {nb.name} -> {folder}", flush=True)
        run_notebook(nb, folder / nb.name.replace(".ipynb", f"{step.get('suffix', '')}.ipynb"), params, progress=True)
        done, total = format_seconds(time.perf_counter() - t0), format_seconds(time.perf_counter() - start)
        print(f"[demo {i}/{len(steps)}] {nb.name} done in {done} (total {total})", flush=True)
        results["runs"][step["folder"]] = str(folder)
        metrics = folder / "metrics.json"
        if step.get("score_of"):
            results["scores"][step["score_of"]] = read_json(metrics)
        if step.get("submission_of"):
            from fh_utils.workbook.packaging import dry_run_report, submissions_dir

            report = dry_run_report(submissions_dir() / step["parameters"]["run_dir"])
            results.setdefault("submissions", {})[step["submission_of"]] = read_json(report)
    results["seconds"] = time.perf_counter() - start
    return results


def main_demo() -> int:
    """``python -m fh_utils demo``: run the demo and print where the results are and both scores."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    res = run_demo()
    print(f"\n=== fashion-how-workbook demo finished in {format_seconds(res['seconds'])} ===")
    for folder, path in res["runs"].items():
        print(f"  {folder:<16} {path}")
    for task, metrics in res["scores"].items():
        line = f"  {task.upper()} {metrics.get('metric')}: {metrics['score']:.4f} (best epoch {metrics.get('epoch')})"
        if metrics.get("baseline_score") is not None:
            line += f"; colour baseline {metrics['baseline_score']:.4f}"
        print(line)
    for task, dry in res.get("submissions", {}).items():
        print(f"  {task.upper()} submission {dry['submission']}: dry run {dry['rows']:,} rows in "
              f"{dry['seconds']:.1f} s ({dry['total_seconds']:.1f} s with the interpreter start), "
              f"score {dry['score']:.4f}")
    return 0
