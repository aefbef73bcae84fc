"""Every command says what it does: ``python -m fh_utils`` (each option's help with its default, ``--version``,
``run``) and ``make help`` (every target with one line)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import fh_utils
from fh_utils.__main__ import build_parser, parameter_value
from fh_utils.paths import PROJECT_ROOT

TCP_WARNING = "without encryption"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _shown_default(default) -> list[str]:
    """What the help must show of a default: its value (each item of a list); nothing for None, an empty value or a
    flag's True/False (the help then says in words what happens by default)."""
    if default is None or isinstance(default, bool) or default in ([], ""):
        return []
    return [str(d) for d in default] if isinstance(default, list) else [str(default)]


def test_every_option_of_every_command_states_its_default():
    parser = build_parser()
    commands = _subparsers(parser)
    assert {"demo", "demo-data", "run", "validate", "cache", "nobg", "sweep", "package", "dashboard", "board"} <= set(
        commands
    )
    missing = []
    for name, sub in commands.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            text = formatter._expand_help(action) if action.help else ""
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not text.strip():
                missing.append(f"{where}: no help")
            elif action.option_strings:  # an option: its default, stated
                after = text.split("default", 1)[1] if "default" in text else ""
                if not after or not all(shown in after for shown in _shown_default(action.default)):
                    missing.append(f"{where}: help {text!r} does not state the default {action.default!r}")
    assert not missing, "\n".join(missing)
    # and every command has a one-line description in the command list
    helps = {a.dest: a.help for a in next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
             ._choices_actions}  # fmt: skip
    assert set(helps) == set(commands) and all(helps.values()), helps


def test_the_demo_help_names_the_notebooks_it_runs():
    import yaml

    runs = yaml.safe_load((PROJECT_ROOT / "notebooks" / "demo_params.yaml").read_text())["runs"]
    numbers = sorted({r["notebook"][:2] for r in runs})
    text = build_parser().format_help()
    assert f"notebooks {numbers[0]}-{numbers[-1]}" in text, text


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"python -m fh_utils {fh_utils.__version__}"


def test_parameter_values_are_read_as_papermill_reads_them():
    assert [parameter_value(v) for v in ("True", "False", "None", "3", "-1", "2e-3", "0.5", "../data/x", "1,2")] == [
        True, False, None, 3, -1, 2e-3, 0.5, "../data/x", "1,2"]  # fmt: skip
    assert isinstance(parameter_value("3"), int) and isinstance(parameter_value("3.0"), float)


def _makefile_targets() -> tuple[list[str], str]:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()
    return phony, makefile


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_help_lists_every_phony_target_with_one_line(tmp_path):
    phony, _ = _makefile_targets()
    assert "help" in phony
    shutil.copy(PROJECT_ROOT / "Makefile", tmp_path / "Makefile")  # alone: no .venv, no pyproject.toml there
    res = subprocess.run(["make", "-s", "help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr, res.stderr
    listed = {}
    for line in res.stdout.splitlines():
        m = re.fullmatch(r"\s+make (\S+)\s+(\S.*)", line)
        assert m, f"not a 'make TARGET  what it does' line: {line!r}"
        listed[m.group(1)] = m.group(2)
    assert sorted(listed) == sorted(phony), (sorted(listed), sorted(phony))
    assert not (tmp_path / ".venv").exists(), "make help installed something"


def _tiny_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("epochs: int = 2  # epochs to pretend\nrun_name: str = ''  # unused")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Tiny\nA stand-in for a training notebook."),
        params,
        nbformat.v4.new_code_cell("from fh_utils.runner.notebooks import check_injected_parameters\n\n"
                                  "check_injected_parameters()"),  # fmt: skip
        nbformat.v4.new_markdown_cell("## Train"),
        nbformat.v4.new_code_cell("for e in range(1, epochs + 1):\n"
                                  "    print(f'epoch {e}/{epochs} loss 0.5', flush=True)"),  # fmt: skip
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", "fh_utils", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_run_prints_cell_lines_and_epoch_lines_and_no_kernel_warning(tmp_path):
    nb = _tiny_notebook(tmp_path / "tiny.ipynb")
    res = _cli("run", str(nb), "out/tiny.ipynb", "-p", "epochs", "3", "-r", "run_name", "7", "--no-html", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert re.search(r"^\s+\d+:\d\d  cell  2/4  injected-parameters$", out, re.M), out
    assert re.search(r"^\s+\d+:\d\d  cell  4/4  Train$", out, re.M), out
    assert [line.split("| ")[1] for line in out.splitlines() if "| epoch" in line] == [
        f"epoch {e}/3 loss 0.5" for e in (1, 2, 3)]  # fmt: skip
    assert TCP_WARNING not in out + res.stderr, res.stderr
    executed = nbformat.read(tmp_path / "out" / "tiny.ipynb", as_version=4)
    assert 'run_name = "7"' in executed.cells[2].source  # -r: the string as it is
    assert not (tmp_path / "out" / "tiny.html").exists()


def test_run_refuses_an_undeclared_parameter_before_starting_a_kernel(tmp_path):
    nb = _tiny_notebook(tmp_path / "tiny.ipynb")
    res = _cli("run", str(nb), "out.ipynb", "-p", "epoch", "3", cwd=tmp_path)
    assert res.returncode == 2 and "'epoch' (did you mean 'epochs'?)" in res.stderr, res.stderr
    assert not (tmp_path / "out.ipynb").exists()


def test_plain_papermill_refuses_an_undeclared_parameter_and_runs_a_declared_one(tmp_path):
    """The notebook's own check, for papermill's command line (which only warns): a typo fails in the cell after
    the injected one; a correct run is unaffected."""
    papermill = Path(sys.executable).parent / "papermill"
    nb = _tiny_notebook(tmp_path / "tiny.ipynb")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    bad = subprocess.run([str(papermill), str(nb), "bad.ipynb", "-k", "python3", "-p", "epoch", "3"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode != 0
    assert "UnknownParameterError: unknown parameter 'epoch' (did you mean 'epochs'?)" in bad.stderr, bad.stderr
    code = [c for c in nbformat.read(tmp_path / "bad.ipynb", as_version=4).cells if c.cell_type == "code"]
    assert code[1].metadata["tags"] == ["injected-parameters"]
    assert code[2].outputs[0]["ename"] == "UnknownParameterError" and code[3].execution_count is None
    good = subprocess.run([str(papermill), str(nb), "good.ipynb", "-k", "python3", "-p", "epochs", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert good.returncode == 0, good.stderr
    code = [c for c in nbformat.read(tmp_path / "good.ipynb", as_version=4).cells if c.cell_type == "code"]
    assert "epoch 1/1" in code[3].outputs[0]["text"]
