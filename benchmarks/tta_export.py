"""ST1 test-time augmentation and int8 export, on the val split of a data root (default ../shared/data/products_b).

    python -m benchmarks.tta_export --img-size 64 --epochs 3 --limit 2000 --json outputs/bench/tta_export.json

Trains two ST1 networks from scratch under the same budget (no pretrained weights are available offline):
one whose fp32 file fits the 25 MB budget (EVA02-tiny, 22 MB) and one about twice that size
(``vit_wee_patch16_reg1_gap_256``, 52 MB fp32), then exports both to int8 (dynamic quantisation of the Linear
layers, :mod:`fh_utils.models.export`) and reports size, CPU img/s and val score of each fp32 / int8 model,
and the score of the fitting fp32 model with and without TTA. With ``--st2-run`` (a run folder of
``benchmarks.st2_ensembles``) the ST2 model is exported and measured too.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks.common import ROOT, report

MODELS = {"fits_fp32": "eva02_tiny_patch14_224", "twice_budget": "vit_wee_patch16_reg1_gap_256"}


def _train(name: str, backbone: str, args: argparse.Namespace, out: Path) -> Path:
    from fh_utils.data.datasets import create_loaders
    from fh_utils.models.factory import create_model
    from fh_utils.training.engine import fit, seed_everything

    run_dir = out / f"st1-{name}-{args.img_size}-e{args.epochs}"
    if (run_dir / "best.pt").exists() and (run_dir / "metrics.json").exists():
        return run_dir
    loaders = create_loaders(args.data_root, "st1", img_size=args.img_size, batch_size=32, cache=True,
                             cache_dir=str(out / "cache"), limit=args.limit, seed=0)  # fmt: skip
    seed_everything(0)
    model = create_model("st1", backbone, img_size=args.img_size, size_budget=False, data_root=args.data_root)
    start = time.perf_counter()
    fit(model, loaders, run_dir, dict(epochs=args.epochs, lr=1e-3, scheduler="warmup_cosine", seed=0,
                                      label_smoothing=0.1, device="cpu", threads=args.threads),
        progress=False)  # fmt: skip
    print(f"trained {name} ({backbone}) in {time.perf_counter() - start:.0f} s", flush=True)
    return run_dir


def _measure(member, rows, task, root: Path, tta: str = "none") -> dict:
    """Val score and CPU throughput (crops, model and averaging; model loading excluded)."""
    from fh_utils.inference.predictor import Predictor
    from fh_utils.training.metrics import task_metrics

    start = time.perf_counter()
    prediction = Predictor([member], tta=tta).predict_rows(rows, root)
    seconds = time.perf_counter() - start
    y = rows[task.label_columns].to_numpy()
    score = task_metrics(task, y, prediction.predictions(task))["score"]
    return {"score": round(score, 4), "img_per_s": round(len(rows) / seconds, 1), "size_mb": round(member.size_mb, 3)}


def _fp32_and_int8(run_dir: Path, rows, task, root: Path) -> dict:
    from fh_utils.models.ensemble import Member, member_from_run
    from fh_utils.models.export import export_int8, load_int8
    from fh_utils.models.factory import state_dict_size_mb

    fp32 = member_from_run(run_dir)
    path = export_int8(run_dir)
    q, data = load_int8(path)
    int8 = Member(q, data, 1.0, str(path), state_dict_size_mb(q))
    res = {"fp32": _measure(fp32, rows, task, root), "int8": _measure(int8, rows, task, root),
           "int8_file_mb": round(path.stat().st_size / 1e6, 3)}  # fmt: skip
    res["int8"]["fits_25mb"] = res["int8"]["size_mb"] <= task.rules.size_budget_mb
    res["fp32"]["fits_25mb"] = res["fp32"]["size_mb"] <= task.rules.size_budget_mb
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "products_b"))
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=2000, help="training and val rows (0: all)")
    parser.add_argument("--st2-run", default="", help="an ST2 run folder to export too")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench_runs" / "tta_export"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import torch

    from fh_utils.data import reader
    from fh_utils.models.ensemble import member_from_run
    from fh_utils.tasks import get_task

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    out = Path(args.out)
    root = Path(args.data_root)
    results: dict = {"budget": {"img_size": args.img_size, "epochs": args.epochs, "train_rows": args.limit or "all",
                                "pretrained": False, "lr": 1e-3, "schedule": "warmup_cosine"}}  # fmt: skip
    task = get_task("st1", root)
    csv = reader.csv_path(root, task, "val")
    rows = reader.read_csv(csv, task, csv.parent / "val")
    if args.limit:
        rows = rows.head(args.limit).reset_index(drop=True).copy()
        rows.attrs["has_labels"] = True
    results["val_rows"] = len(rows)
    runs = {name: _train(name, backbone, args, out) for name, backbone in MODELS.items()}
    for name, run in runs.items():
        results[name] = {"backbone": MODELS[name], **_fp32_and_int8(run, rows, task, csv.parent)}
        print(name, results[name], flush=True)
    fits = member_from_run(runs["fits_fp32"])
    results["st1_tta"] = {tta: _measure(fits, rows, task, csv.parent, tta) for tta in ("none", "hflip", "hflip+crops")}
    print("st1 tta", results["st1_tta"], flush=True)
    if args.st2_run:
        task2 = get_task("st2", root)
        csv2 = reader.csv_path(root, task2, "val")
        rows2 = reader.read_csv(csv2, task2, csv2.parent / "val")
        results["st2"] = {"run": args.st2_run, **_fp32_and_int8(Path(args.st2_run), rows2, task2, csv2.parent)}
        print("st2", results["st2"], flush=True)
    report("tta_export", results, args.json)


if __name__ == "__main__":
    main()
