"""The uploaded ``fh_utils.zip`` holds exactly what the packaged prediction imports, and imports from itself alone.

:data:`fh_utils.leaderboard.archive.INCLUDE` is a written list; the import walk of ``tests/import_graph.py``
(module- and function-level imports, parent packages, lazy exports) computes what importing
``fh_utils.inference.aif`` can load. The two must agree: a module the prediction starts to import and the list
lacks fails here (and would fail the dry run on the server), a module it no longer needs ships for nothing.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile

from import_graph import closure, graph, module_files

from fh_utils.leaderboard.archive import INCLUDE, build_code_archive
from fh_utils.leaderboard.template import TEMPLATE, fill, template_cells

ENTRY = "fh_utils.inference.aif"  # what the packaged function imports from the archive


def _as_path(module: str, files: dict) -> str:
    return files[module].relative_to(files["fh_utils"].parent).as_posix()


def test_the_include_list_is_exactly_what_the_prediction_imports():
    files = module_files()
    needed = {_as_path(m, files) for m in closure(ENTRY, graph(files))}
    listed = set(INCLUDE)
    assert len(listed) == len(INCLUDE), "a file listed twice"
    assert needed - listed == set(), "imported by the prediction but not shipped"
    assert listed - needed == set(), "shipped but never imported by the prediction"
    for kept_out in ("data/demo.py", "data/background.py", "prep/", "sweeps/", "runner/", "workbook/",
                     "leaderboard/", "__main__.py"):  # fmt: skip
        assert not [f for f in INCLUDE if f.startswith(kept_out)], kept_out


def test_the_archive_holds_the_list_and_imports_from_itself_in_a_fresh_interpreter(tmp_path):
    archive = tmp_path / "fh_utils.zip"
    names = build_code_archive(archive)
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == sorted(names) == sorted(f"fh_utils/{f}" for f in INCLUDE)
    files = module_files()
    modules = sorted(m for m in files if _as_path(m, files) in INCLUDE)
    # The installed (editable) workbook taken out of the import system, as the dry run's driver does: every
    # listed module then imports from the archive, with what it imports inside functions too.
    code = (
        "import importlib, importlib.util, sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
        "sys.path[:] = [p for p in sys.path if '__editable__' not in p and p not in ('', '.')]\n"
        "sys.path_importer_cache.clear()\n"
        "assert importlib.util.find_spec('fh_utils') is None\n"
        f"sys.path.insert(0, {str(archive)!r})\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(archive)!r}), module.__file__\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_the_template_cells_are_the_template_file_with_every_placeholder_filled():
    cells = template_cells()
    assert [tags for _, tags in cells] == [["parameters"], [], [], []]
    values = {"function_name": "etri_task2_submit", "model_dir": "model", "code_archive": "fh_utils.zip",
              "dataset_env": "FH_AIF_DATASET", "key": 'a "key"', "model_name": "m"}  # fmt: skip
    filled = "\n\n".join(fill(source, values) for source, _ in cells)
    assert "__" not in filled.replace("__name__", "").replace("__main__", "")
    assert 'KEY = "a \\"key\\""' in filled and "def etri_task2_submit():" in filled
    compile(filled, str(TEMPLATE), "exec")  # still Python once filled
