"""Run the numbered notebooks headlessly with papermill, and the demo pipeline built on them.

A notebook run keeps its executed copy (and an HTML rendering) in the run folder it belongs to; a failing
run keeps the executed notebook with the error too, so nothing is lost to an interruption or a bug.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from fh_utils.io import write_text
from fh_utils.paths import PROJECT_ROOT, runs_dir

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
DEMO_PARAMS = NOTEBOOKS_DIR / "demo_params.yaml"
KERNEL = "python3"


class UnknownParameterError(ValueError):
    """An override names a parameter the notebook does not declare in its ``parameters`` cell."""


def notebook_parameters(notebook: str | Path) -> dict[str, dict]:
    """Parameters declared in the notebook's ``parameters`` cell (papermill's inspection)."""
    import papermill as pm

    return pm.inspect_notebook(str(notebook))


def check_parameters(notebook: str | Path, parameters: dict[str, Any]) -> None:
    """Raise :class:`UnknownParameterError` if ``parameters`` names anything the notebook does not declare."""
    declared = notebook_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise UnknownParameterError(
            f"{Path(notebook).name}: unknown parameter(s) {unknown}; it declares {sorted(declared)}"
        )


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
) -> Path:
    """Execute ``notebook`` with papermill into ``output`` (kernel ``python3``, explicit working directory).

    Args:
        notebook: Notebook to run.
        output: Executed copy to write (kept even when a cell fails).
        parameters: Overrides of the notebook's parameters (each must be declared there).
        cwd: Working directory of the kernel (default: the notebook's folder, so relative paths behave as in
            JupyterLab).
        html: Also write an HTML rendering beside ``output``.
        progress: Show papermill's cell progress bar.
        timeout: Per-cell timeout in seconds.

    Returns:
        The executed notebook's path.
    """
    import papermill as pm

    notebook, output = Path(notebook), Path(output)
    parameters = dict(parameters or {})
    check_parameters(notebook, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(notebook), str(output), parameters=parameters, kernel_name=KERNEL,
            cwd=str(cwd or notebook.parent), progress_bar=progress, execution_timeout=timeout,
        )  # fmt: skip
    finally:
        if html and output.exists():
            render_html(output)
    return output


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
        ``{"runs": {folder: path}, "scores": {task: score}, "seconds": total}``.
    """
    from fh_utils.data.demo import ensure_demo_dataset
    from fh_utils.runs import read_json

    spec = yaml.safe_load(Path(params_file).read_text(encoding="utf-8"))
    start = time.perf_counter()
    root = Path(_resolve(data_root or spec["data_root"]))
    if data_root is None:
        demo = spec.get("demo_data", {})
        ensure_demo_dataset(root, seed=demo.get("seed", 0), scale=demo.get("scale", 1.0))
    results: dict[str, Any] = {"runs": {}, "scores": {}}
    for step in spec["runs"]:
        nb = NOTEBOOKS_DIR / step["notebook"]
        params = {k: _resolve(v) for k, v in step.get("parameters", {}).items()}
        if "data_root" in notebook_parameters(nb):
            params.setdefault("data_root", str(root))
        folder = runs_dir() / step["folder"]
        t0 = time.perf_counter()
        print(f"[demo] {nb.name} -> {folder}", flush=True)
        run_notebook(nb, folder / nb.name.replace(".ipynb", f"{step.get('suffix', '')}.ipynb"), params)
        print(f"[demo] {nb.name} done in {time.perf_counter() - t0:.0f} s", flush=True)
        results["runs"][step["folder"]] = str(folder)
        metrics = folder / "metrics.json"
        if step.get("score_of"):
            results["scores"][step["score_of"]] = read_json(metrics)
    results["seconds"] = time.perf_counter() - start
    return results


def main_demo() -> int:
    """``python -m fh_utils demo``: run the demo and print where the results are and both scores."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    res = run_demo()
    print(f"\n=== fashion-how-workbook demo finished in {res['seconds']:.0f} s ===")
    for folder, path in res["runs"].items():
        print(f"  {folder:<16} {path}")
    for task, metrics in res["scores"].items():
        line = f"  {task.upper()} {metrics.get('metric')}: {metrics['score']:.4f} (best epoch {metrics.get('epoch')})"
        if metrics.get("baseline_score") is not None:
            line += f"; colour baseline {metrics['baseline_score']:.4f}"
        print(line)
    return 0
