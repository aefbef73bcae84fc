"""Every notebook runs headlessly under papermill with the small parameters of notebook_overrides.yaml.

The runs go to the session's temp outputs folder; afterwards the raw data must be byte-identical and nothing
may have been written outside the run folders and the derived-image folders: not into the project's source
tree, nor into its outputs/ and data/ (where a write that ignored $FH_OUTPUTS or the data root would land).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from fh_utils.paths import PROJECT_ROOT, notebooks_dir
from fh_utils.runner.notebooks import (
    UnknownParameterError,
    assigned_names,
    check_injected_parameters,
    check_parameters,
    notebook_parameters,
    run_notebook,
)  # fmt: skip

NOTEBOOKS_DIR = notebooks_dir()
RUNS = yaml.safe_load((Path(__file__).parent / "notebook_overrides.yaml").read_text())["runs"]
NOTEBOOKS = sorted(p.name for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def _tree_hash(root: Path) -> dict[str, str]:
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


def _project_files() -> dict[str, tuple[int, int] | None]:
    """Every file of the project tree; under outputs/ and data/ (where a misrouted write lands: a run folder,
    a derived-image folder) with its size and mtime, so an overwritten file counts as well as a new one."""
    skip = {".git", ".venv", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints"}
    out: dict[str, tuple[int, int] | None] = {}
    for dirpath, dirnames, filenames in os.walk(PROJECT_ROOT):
        dirnames[:] = [d for d in dirnames if d not in skip and d != "__pycache__" and not d.endswith(".egg-info")]
        for f in filenames:
            path = Path(dirpath, f)
            rel = path.relative_to(PROJECT_ROOT)
            if rel.parts[0] in ("outputs", "data"):
                try:
                    stat = path.stat()
                except FileNotFoundError:  # another process's temporary file, renamed meanwhile
                    continue
                out[str(rel)] = (stat.st_size, stat.st_mtime_ns)
            else:
                out[str(rel)] = None  # source files: only their names (an editor may touch them meanwhile)
    return out


def _tree_changes(before: dict, after: dict, names: set[str]) -> list[str]:
    """Files added, removed or rewritten: any outside outputs/ and data/; there, those under a folder named in
    ``names`` (the test runs' folders, the test data's derived folders: where their misrouted writes would
    land). Other writes there come from whatever else runs on the machine (a user's training, a benchmark)."""
    changed = sorted(k for k in set(before) | set(after) if before.get(k, "absent") != after.get(k, "absent"))
    return [k for k in changed if Path(k).parts[0] not in ("outputs", "data") or names & set(Path(k).parts[:-1])]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_clean_with_a_tagged_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: needs exactly one cell tagged 'parameters'"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs committed; run nbstripout"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def test_every_override_names_a_parameter_of_its_notebook():
    assert {run["notebook"] for run in RUNS} == set(NOTEBOOKS), "every notebook runs in the tests"
    for run in RUNS:
        check_parameters(NOTEBOOKS_DIR / run["notebook"], run.get("parameters") or {})
    with pytest.raises(UnknownParameterError, match="no_such_parameter"):
        check_parameters(NOTEBOOKS_DIR / NOTEBOOKS[0], {"no_such_parameter": 1})
    with pytest.raises(UnknownParameterError, match=r"'img_szie' \(did you mean 'img_size'\?\)"):
        check_parameters(NOTEBOOKS_DIR / "04_train_st2.ipynb", {"img_szie": 384, "epochs": 1})


def _parameters_cell_and_next(name: str) -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    cells = nbformat.read(NOTEBOOKS_DIR / name, as_version=4).cells
    i = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    return cells[i], next(c for c in cells[i + 1 :] if c.cell_type == "code")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_parameter_is_listed_by_papermill_with_its_type(name):
    """``papermill --help-notebook`` shows each parameter's type (the annotation), and papermill's inspection (the
    package's too: run_notebook, sweep specs) lists every name the cell assigns (a line papermill cannot parse,
    e.g. an annotation ``str | bool``, would drop its parameter silently)."""
    import ast

    cell, _ = _parameters_cell_and_next(name)
    declared = notebook_parameters(NOTEBOOKS_DIR / name)
    assert list(declared) == assigned_names(cell.source)
    for param, info in declared.items():
        value = ast.literal_eval(info["default"])
        kinds = re.findall(r"\w+", info["inferred_type_name"].removeprefix("Union"))
        assert type(value).__name__ in kinds, f"{name}: {param}: {info['inferred_type_name']} for {value!r}"
        assert info["help"], f"{name}: {param} has no comment saying what it is"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_cell_after_parameters_first_checks_the_injected_parameters(name):
    """Before it does anything but imports, the notebook refuses a setting papermill injected that it does not
    declare (papermill itself only warns)."""
    import ast

    _, cell = _parameters_cell_and_next(name)
    code = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
    statements = [s for s in ast.parse(code).body if not isinstance(s, (ast.Import, ast.ImportFrom))]
    assert ast.unparse(statements[0]) == "check_injected_parameters()", f"{name}: {ast.unparse(statements[0])}"


def test_check_injected_parameters_compares_papermills_cell_with_the_parameters_cell():
    params = 'epochs: int = 12  # epochs\nimg_size: int = 56  # px\nchannels_last: "Union[str, bool]" = "auto"'
    this_cell = "check_injected_parameters()"
    check_injected_parameters([params, "# Parameters\nepochs = 3\nchannels_last = True\n", this_cell])
    check_injected_parameters([params, "# Parameters\nPAPERMILL_INPUT_PATH = 'a.ipynb'\n", this_cell])  # --inject-paths
    check_injected_parameters(["", params, this_cell])  # JupyterLab or papermill without -p: no injected cell
    check_injected_parameters([params, "img_szie = 1", this_cell])  # a user's cell, not papermill's
    check_injected_parameters([this_cell])
    with pytest.raises(UnknownParameterError, match=r"^unknown parameters 'img_szie' \(did you mean 'img_size'\?\), "
                                                    r"'zzz'; declared: epochs, img_size, channels_last$"):  # fmt: skip
        check_injected_parameters([params, "# Parameters\nimg_szie = 384\nepochs = 1\nzzz = 0\n", this_cell])
    check_injected_parameters()  # outside IPython: nothing to check


def test_plain_papermill_with_a_typo_fails_before_anything_runs(demo_root, tmp_path, _outputs_in_tmp):
    """The README's papermill command with ``img_szie``: an error naming it and ``img_size``, in the cell after the
    injected one, before a run folder exists (papermill alone would warn and train at 56 px)."""
    import subprocess
    import sys

    papermill = Path(sys.executable).parent / "papermill"
    runs = _outputs_in_tmp / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    out = tmp_path / "out.ipynb"
    res = subprocess.run([str(papermill), "notebooks/04_train_st2.ipynb", str(out), "-k", "python3", "--cwd",
                          "notebooks", "-p", "img_szie", "384", "-p", "data_root", str(demo_root)],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode != 0
    assert "UnknownParameterError: unknown parameter 'img_szie' (did you mean 'img_size'?)" in res.stderr, res.stderr
    cells = [c for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"]
    tags = [c.metadata.get("tags", []) for c in cells]
    assert tags[:2] == [["parameters"], ["injected-parameters"]]
    assert cells[2].outputs[-1]["ename"] == "UnknownParameterError"
    assert all(c.execution_count is None for c in cells[3:]), "nothing ran after the check"
    assert (set(runs.iterdir()) if runs.exists() else set()) == before, "a run folder was made"


KERNELS_AT_ONCE = 2  # most of a run is its kernel's start and imports, on one core: two side by side


def _waits(folders: list[str]) -> list[set[int]]:
    """Per run, the earlier runs it starts after: those of the folder it writes or reads (its run_name or run_dir)
    and those named in its ``needs`` (``all``: every earlier run)."""
    waits = []
    for i, run in enumerate(RUNS):
        needs = run.get("needs", [])
        wanted = set(folders[:i]) if needs == "all" else {folders[i], *needs}
        waits.append({j for j in range(i) if folders[j] in wanted})
    return waits


@pytest.fixture(scope="module")
def executed(demo_root, _outputs_in_tmp) -> dict[str, Path]:
    """Run every notebook of notebook_overrides.yaml on the session's demo data, two kernels at a time, each run
    after the runs it reads (see :func:`_waits`); return the run folders."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    before_data = _tree_hash(demo_root)
    before_project = _project_files()
    before_siblings = {p.name for p in demo_root.parent.iterdir()}
    runs_root = _outputs_in_tmp / "runs"
    folders = [str(run["parameters"].get("run_name") or run["parameters"]["run_dir"]) for run in RUNS]

    def execute(i: int) -> None:
        params = {**(RUNS[i].get("parameters") or {}), "data_root": str(demo_root)}
        run_notebook(NOTEBOOKS_DIR / RUNS[i]["notebook"], runs_root / folders[i] / RUNS[i]["notebook"], params,
                     html=False)  # fmt: skip

    waits, pending, running, done = _waits(folders), list(range(len(RUNS))), {}, set()
    # papermill chdirs this process into the kernel's folder (notebooks/) around each run and back afterwards; from
    # there already, two overlapping runs never leave it (a kernel starting meanwhile inherits the folder).
    cwd = os.getcwd()
    os.chdir(NOTEBOOKS_DIR)
    try:
        with ThreadPoolExecutor(KERNELS_AT_ONCE) as pool:
            while pending or running:
                for i in [i for i in pending if waits[i] <= done][: KERNELS_AT_ONCE - len(running)]:
                    pending.remove(i)
                    running[pool.submit(execute, i)] = i
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # a failed run fails the fixture (once the other kernel's run has ended)
                    done.add(running.pop(future))
    finally:
        os.chdir(cwd)
    assert _tree_hash(demo_root) == before_data, "raw data was modified"
    derived = {f"{demo_root.name}_nobg"}  # notebook 02's tree (the test runs build no crop cache)
    changed = _tree_changes(before_project, _project_files(), set(folders) | derived)
    assert not changed, f"a run wrote into the project tree (outputs/ and data/ included): {changed[:10]}"
    new_siblings = {p.name for p in demo_root.parent.iterdir()} - before_siblings
    assert all(n.startswith(demo_root.name + "_") for n in new_siblings), new_siblings
    return {folder: runs_root / folder for folder in folders}


def test_eda_saves_its_figures(executed):
    """Every figure notebook 01 makes: class counts per task, ST1 co-occurrence, boxes, image sizes, a sample grid
    per head of each task, the ST2 colour swatches and the near-duplicate pairs (an empty gallery says so)."""
    from fh_utils.tasks import get_task

    figures = sorted(p.name for p in (executed["test-eda"] / "figures").glob("*.png"))
    samples = [f"samples_{t}_{h.column.lower()}.png" for t in ("st1", "st2") for h in get_task(t).heads]
    want = ["class_counts_st1.png", "class_counts_st2.png", "cooccurrence_st1.png", "box_stats.png",
            "image_sizes.png", "color_swatches_st2.png", "near_duplicates.png", *samples]  # fmt: skip
    assert figures == sorted(want), figures
    assert all((executed["test-eda"] / f).is_file() for f in ("near_duplicates.csv", "pool_overlap.csv"))


def test_background_removal_writes_the_mirrored_tree(executed, demo_root):
    nobg = demo_root.parent / f"{demo_root.name}_nobg"
    assert (nobg / "train").is_dir() and any(nobg.rglob("*.jpg"))
    assert any((executed["test-nobg"] / "figures").glob("*.png"))


@pytest.mark.parametrize("run,task,columns", [
    ("test-st1", "st1", ["image_name", "daily", "gender", "embel"]),
    ("test-st2", "st2", ["image_name", "color"]),
])  # fmt: skip
def test_training_and_submission_fill_the_run_folder(executed, run, task, columns):
    import pandas as pd

    folder = executed[run]
    for name in ["config.json", "history.csv", "metrics.json", "best.pt", "last.pt", "submission.csv"]:
        assert (folder / name).exists(), name
    metrics = json.loads((folder / "metrics.json").read_text())
    history = pd.read_csv(folder / "history.csv")
    assert metrics["task"] == task and metrics["score"] == history["val_score"].max()  # the best epoch's
    # Notebook 05 scored the run on its val CSV with the TTA of its final evaluation: the score recorded there.
    scored = json.loads((folder / "submission_metrics.json").read_text())
    assert scored["tta"] == metrics.get("tta", "none")
    assert scored["score"] == metrics.get("tta_score", metrics["score"]), (scored["score"], metrics)
    if task == "st2":
        per_class = [a for a in metrics["baseline_per_class"] if a is not None]
        assert metrics["baseline_score"] == pytest.approx(sum(per_class) / len(per_class), abs=1e-12)  # its ACSA
    sub = pd.read_csv(folder / "submission.csv")
    assert list(sub.columns) == columns and len(sub) == scored["rows"]
    assert len(list((folder / "figures").glob("*.png"))) >= 4


def test_packaging_notebook_dry_runs_exactly_the_validated_score(executed, _outputs_in_tmp):
    """Notebook 07 packages test-st2 with the TTA its final evaluation recorded and dry-runs the folder on the whole
    val split laid out as /aif/Dataset: the score is the run's recorded tta_score, to the last digit."""
    folder = _outputs_in_tmp / "submissions" / "test-st2"
    report = json.loads((_outputs_in_tmp / "submissions" / "test-st2.dry_run.json").read_text())
    metrics = json.loads((executed["test-st2"] / "metrics.json").read_text())
    spec = json.loads((folder / "model" / "submission.json").read_text())
    assert spec["tta"] == metrics["tta"] == "hflip"
    assert report["score"] == metrics["tta_score"] == spec["validated_score"]
    val_rows = len((executed["test-st2"] / "val_predictions.csv").read_text().splitlines()) - 1
    assert report["rows"] == val_rows
    assert sorted(p.name for p in folder.iterdir()) == ["fh_utils.zip", "model", "task.ipynb"]
