"""`make demo` shows what it is doing: per-notebook header and time, cell progress, the kernel's epoch lines.

A tiny notebook stands in for a training notebook (it prints epoch lines the way the engine does); the slow test
runs the real notebook 03 for one epoch. Both also check that no kernel warning reaches the terminal.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from fh_utils.paths import notebooks_dir
from fh_utils.runner.demo import run_demo, score_line
from fh_utils.runner.notebooks import IPCKernelManager, run_notebook
from fh_utils.runner.progress import NotebookProgress, format_seconds

TCP_WARNING = "without encryption"
ELAPSED = r"\d+:\d\d"


def _tiny_notebook(path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("epochs = 2  # epochs to pretend\nrun_name = ''  # unused")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Tiny\nA stand-in for a training notebook."),
        params,
        nbformat.v4.new_markdown_cell("## Train\nPrints one line per epoch, as the engine does."),
        nbformat.v4.new_code_cell(
            "import sys\n"
            "for e in range(1, epochs + 1):\n"
            "    print(f'epoch {e}/{epochs} loss 0.5 score 0.{e} *', flush=True)\n"
            "sys.stdout.write('no newline at the end')"
        ),
        nbformat.v4.new_code_cell("total = 1 + 1\ntotal"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 59.6, 75.2, 3725)] == ["0:00", "1:00", "1:15", "1:02:05"]


def test_progress_lines_without_a_kernel():
    out = io.StringIO()
    shown = NotebookProgress(total_cells=2, out=out)
    shown.on_cell_start(nbformat.v4.new_markdown_cell("## Data loaders\ntext"), 0)
    shown.on_cell_start(nbformat.v4.new_code_cell("loaders = build()"), 1)
    shown.write("epoch 1/3 loss 1.0\nepo")
    shown.write("ch 2/3 loss 0.9\n")
    shown.write("bar 10%\rbar 100%\n")
    shown.on_cell_start(nbformat.v4.new_code_cell("import x\nmodel = build_model()"), 2)
    shown.write("unfinished")
    shown.close()
    lines = out.getvalue().splitlines()
    assert re.fullmatch(rf"\s+{ELAPSED}  cell  1/2  Data loaders", lines[0]), lines
    assert [line.split("| ")[-1] for line in lines[1:4]] == ["epoch 1/3 loss 1.0", "epoch 2/3 loss 0.9", "bar 100%"]
    assert lines[4].endswith("cell  2/2  model = build_model()"), lines  # no heading: its first line of code
    assert lines[5].endswith("| unfinished") and len(lines) == 6


def test_ipc_transport_is_the_default_of_the_workbook_kernel_manager():
    assert IPCKernelManager().transport == "ipc"


def test_run_demo_prints_progress_epochs_times_and_no_kernel_warning(tmp_path, capfd):
    nb = _tiny_notebook(tmp_path / "tiny.ipynb")
    spec = tmp_path / "demo.yaml"
    spec.write_text(yaml.safe_dump({
        "data_root": str(tmp_path / "no-data"),
        "runs": [{"notebook": str(nb), "folder": "progress-test", "parameters": {"epochs": 3}}],
    }))  # fmt: skip
    res = run_demo(spec, data_root=tmp_path / "no-data")  # a data_root argument: no demo data is generated
    out, err = capfd.readouterr()  # fd-level: the kernel process writes to the same terminal
    lines = out.splitlines()
    assert lines[0] == f"[demo] data {tmp_path / 'no-data'}"
    assert lines[1].startswith("[demo 1/1] tiny.ipynb -> ") and lines[1].endswith("progress-test")
    assert re.search(rf"^\s+{ELAPSED}  cell  1/4  parameters$", out, re.M), out
    assert re.search(rf"^\s+{ELAPSED}  cell  2/4  injected-parameters$", out, re.M), out
    assert re.search(rf"^\s+{ELAPSED}  cell  3/4  Train$", out, re.M), out
    assert [line.split("| ")[1] for line in lines if "| epoch" in line] == [
        f"epoch {e}/3 loss 0.5 score 0.{e} *" for e in (1, 2, 3)
    ]
    assert re.search(r"\| no newline at the end$", out, re.M), out
    assert re.search(rf"^\s+{ELAPSED}  cell  4/4  total = 1 \+ 1$", out, re.M), out
    assert re.fullmatch(rf"\[demo 1/1\] tiny\.ipynb done in {ELAPSED} \(total {ELAPSED}\)", lines[-1]), lines[-1]
    assert TCP_WARNING not in out + err, err
    assert (Path(res["runs"]["progress-test"]) / "tiny.ipynb").exists()


def test_quiet_run_notebook_prints_nothing_and_no_kernel_warning(tmp_path, capfd):
    nb = _tiny_notebook(tmp_path / "tiny.ipynb")
    run_notebook(nb, tmp_path / "out" / "tiny.ipynb", {"epochs": 1}, html=False)
    out, err = capfd.readouterr()
    assert "epoch" not in out and TCP_WARNING not in err, (out, err)
    executed = nbformat.read(tmp_path / "out" / "tiny.ipynb", as_version=4)
    assert "epoch 1/1" in executed.cells[4].outputs[0]["text"]  # the notebook keeps its outputs as before


@pytest.mark.slow
def test_training_notebook_streams_its_epoch_lines(demo_root, tmp_path, capfd):
    params = {"data_root": str(demo_root), "run_name": "progress-st1", "backbone": "mobilenetv4_conv_small",
              "pretrained": False, "img_size": 32, "epochs": 2, "batch_size": 32, "device": "cpu", "num_workers": 0,
              "cache": False}
    run_notebook(notebooks_dir() / "03_train_st1.ipynb", tmp_path / "03.ipynb", params, html=False, progress=True)
    out, err = capfd.readouterr()
    assert re.search(rf"^\s+{ELAPSED}  cell\s+\d+/\d+  Train$", out, re.M), out
    epochs = re.findall(r"\| epoch (\d)/2 loss [\d.]+ val_loss [\d.]+ score [\d.]+", out)
    assert epochs == ["1", "2"], out
    assert "| val score" in out and TCP_WARNING not in err


def test_the_closing_line_leads_with_the_honest_estimate_of_the_submitted_checkpoint():
    estimate = {"score": 0.97, "low": 0.95, "high": 0.99, "rule": "last"}
    metrics = {"metric": "acsa", "score": 0.98, "epoch": 12, "baseline_score": 0.5, "estimates": {"estimate": estimate}}
    want = ("  ST2 acsa: 0.9700 honest estimate of the last checkpoint (90 % 0.9500-0.9900); best epoch 0.9800 "
            "(epoch 12); colour baseline 0.5000")  # fmt: skip
    assert score_line("st2", metrics) == want
    before_estimates = {"metric": "mean_top1", "score": 0.7, "epoch": 3}
    assert score_line("st1", before_estimates) == "  ST1 mean_top1: best epoch 0.7000 (epoch 3)"
