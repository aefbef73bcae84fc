"""The dry run of the default ST2 submission on N test images, as the platform's CPU would run it (issue 20).

Trains notebook 04's default recipe (``fh_colornet``, 56 px; ``--epochs`` short, since the timing does not depend
on the weights), packages it with :func:`fh_utils.leaderboard.package.package_submission`, lays out N images
(the val split, topped up from train) as ``/aif/Dataset`` and runs ``submit()()`` in a fresh interpreter three
times. Reports the bare interpreter start, the interpreter start with the imports the function makes, the time
of ``submit()()`` (model loading, CSV validation, crops, prediction) and the whole process.

    python -m benchmarks.submission_dry_run --data-root ../shared/data/products_b --images 900
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, report

IMPORTS = "import torch, timm, numpy, pandas, cv2, albumentations, PIL"


def _seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "products_b"))
    parser.add_argument("--images", type=int, default=900)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "submission_dry_run"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    os.environ.setdefault("FH_OUTPUTS", str(Path(args.out) / "outputs"))
    from fh_utils.leaderboard.dry_run import dry_run_submission, layout_test_set
    from fh_utils.leaderboard.package import package_submission
    from fh_utils.paths import notebooks_dir
    from fh_utils.runner.notebooks import notebook_parameters
    from fh_utils.workbook import workflow

    load = os.getloadavg()
    # Notebook 04's own defaults (the default ST2 recipe), then the benchmark's few overrides.
    declared = notebook_parameters(notebooks_dir() / "04_train_st2.ipynb")
    defaults = {k: ast.literal_eval(v["default"]) for k, v in declared.items()}
    params = {**defaults, "data_root": args.data_root, "run_name": "bench-dry-run-st2", "epochs": args.epochs,
              "device": "cpu", "num_workers": 0, "color_baseline": False}  # fmt: skip
    start = time.perf_counter()
    run_dir, _ = workflow.train_from_params("st2", params, progress=False)
    train_s = time.perf_counter() - start
    package = package_submission(str(run_dir), out_dir=Path(args.out) / "submission")
    dataset = layout_test_set(args.data_root, Path(args.out) / "Dataset", split="val", tasks=("st2",),
                              limit=args.images, extra_split="train")  # fmt: skip
    bare = [_seconds([sys.executable, "-I", "-c", "pass"]) for _ in range(args.repeats)]
    imports = [_seconds([sys.executable, "-I", "-c", IMPORTS]) for _ in range(args.repeats)]
    runs = [dry_run_submission(package.folder, dataset) for _ in range(args.repeats)]
    med = statistics.median
    report("submission_dry_run", {
        "load_before": [round(x, 2) for x in load], "load_after": [round(x, 2) for x in os.getloadavg()],
        "images": runs[0].rows, "model": f"{package.spec['kind']} fh_colornet 56 px, {package.spec['file_mb']} MB",
        "epochs_trained": args.epochs, "train_s": round(train_s, 1), "threads": os.cpu_count(),
        "interpreter_start_s": round(med(bare), 2),
        "interpreter_and_imports_s": round(med(imports), 2),
        "submit_call_s": [round(r.seconds, 2) for r in runs],
        "whole_process_s": [round(r.total_seconds, 2) for r in runs],
        "imports_in_dry_run_s": [round(r.imports_seconds, 2) for r in runs],
        "start_imports_and_setup_s": round(med(r.total_seconds - r.seconds for r in runs), 2),
        "images_per_s_in_submit": round(runs[0].rows / med(r.seconds for r in runs), 1),
        "score_acsa": runs[0].score, "goal_total_s": 60, "within_goal": max(r.total_seconds for r in runs) <= 60,
    }, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
