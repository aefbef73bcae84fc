"""ST1 recipes under one fixed CPU budget (same image size, epochs, batch, rows and seeds for every row): mean
top-1 over Daily / Gender / Embellishment on the val split of a data root (default: ../shared/data/products_b).

    python -m benchmarks.st1_recipes --img-size 64 --epochs 4 --train-rows 1500 --seeds 0 1

Rows:

- ``etri``: the ETRI baseline recipe: MobileNetV2 from scratch, Adam 1e-4, no augmentation, no label smoothing,
  constant learning rate. Its letterbox resize is not in the data pipeline: the box crop is resized to a square
  (the other rows do the same).
- ``cpu``: the CPU demo profile's recipe (``notebooks/demo_params.yaml``): MobileNetV4-small, AdamW 2e-3,
  warm-up + cosine, the seed's augmentation, label smoothing 0.1.
- ``teacher``: an ensemble of ``cpu`` models (``--teacher-seeds``; by default the ``cpu`` row's own runs, reused)
  trained on the same data from scratch, scored as an ensemble (probabilities averaged). No outside weights:
  none can be fetched here.
- ``distilled``: the ``cpu`` student distilled online from that teacher (``fit(..., teacher=...)``).

Each row runs once per seed; the JSON holds every run, the mean and the spread over seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import ROOT, report
from fh_utils.data.datasets import create_loaders
from fh_utils.models.factory import create_model, load_model
from fh_utils.tasks import get_task
from fh_utils.training.engine import fit, seed_everything
from fh_utils.training.metrics import task_metrics

ETRI = dict(backbone="mobilenetv2_100", optimizer="adam", lr=1e-4, weight_decay=0.0, scheduler="none",
            label_smoothing=0.0, augment="none")  # fmt: skip
CPU = dict(backbone="mobilenetv4_conv_small", optimizer="adamw", lr=2e-3, weight_decay=0.05,
           scheduler="warmup_cosine", label_smoothing=0.1, augment="myungbin")  # fmt: skip
RECIPES = {"etri": ETRI, "cpu": CPU, "distilled": CPU}
DATA_KEYS, MODEL_KEYS = ("augment",), ("backbone",)


def _loaders(args: argparse.Namespace, out: Path, augment: str, seed: int) -> dict:
    return create_loaders(args.data_root, "st1", img_size=args.img_size, batch_size=args.batch_size,
                          augment=augment, cache=True, cache_dir=str(out / "cache"), seed=seed,
                          limit=args.train_rows)  # fmt: skip


def run_recipe(name: str, args: argparse.Namespace, seed: int, out: Path, teacher: list[Path] | None = None,
               epochs: int = 0, folder: str = "") -> dict:
    """Train one row for one seed (``epochs``: another budget, for a teacher); return its scores and wall time."""
    recipe = RECIPES[name]
    loaders = _loaders(args, out, recipe["augment"], seed)
    seed_everything(seed)
    model = create_model("st1", recipe["backbone"], img_size=args.img_size, data_root=args.data_root)
    train = {k: v for k, v in recipe.items() if k not in DATA_KEYS + MODEL_KEYS}
    if teacher:
        train.update(distill_alpha=args.alpha, distill_temperature=args.temperature)
    run_dir = out / (folder or f"{name}-seed{seed}")
    start = time.perf_counter()
    res = fit(model, loaders, run_dir, dict(epochs=epochs or args.epochs, seed=seed, device="cpu", threads=args.threads,
                                            **train), progress=False, teacher=teacher)  # fmt: skip
    last = res.history.iloc[-1]
    heads = {k.removeprefix("val_").removesuffix("_top1"): round(float(v), 4) for k, v in last.items()
             if k.startswith("val_") and k.endswith("_top1")}  # fmt: skip
    return {"best": round(res.metrics["score"], 4), "final": round(float(last["val_score"]), 4),
            "final_heads": heads, "best_epoch": res.metrics["epoch"], "wall_s": round(time.perf_counter() - start),
            "run_dir": str(run_dir)}  # fmt: skip


def ensemble_score(run_dirs: list[Path], args: argparse.Namespace, out: Path) -> float:
    """Mean top-1 of the members' averaged probabilities (each member's best.pt) on the val split."""
    from fh_utils.training.engine import evaluate

    loaders = _loaders(args, out, "none", 0)
    task = get_task("st1", args.data_root)
    probs, y = None, None
    for run in run_dirs:
        res = evaluate(load_model(run), loaders["val"], task, device="cpu", progress=False)
        y = res["targets"]
        probs = res["probabilities"] if probs is None else {k: probs[k] + v for k, v in res["probabilities"].items()}
    pred = np.stack([probs[h.column].argmax(1) for h in task.heads], 1)
    return round(float(task_metrics(task, y, pred)["score"]), 4)


def _summary(runs: dict) -> dict:
    best = [r["best"] for r in runs.values()]
    final = [r["final"] for r in runs.values()]
    return {"best_mean": round(float(np.mean(best)), 4), "best_spread": round(float(np.ptp(best)), 4),
            "final_mean": round(float(np.mean(final)), 4), "final_spread": round(float(np.ptp(final)), 4),
            "runs": runs}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "products_b"))
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-rows", type=int, default=1500, help="first N rows of each split (val has 1,190)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--teacher-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--teacher-epochs", type=int, default=0, help="train the teacher longer (0: the same budget)")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--rows", nargs="+", default=["cpu", "teacher", "distilled", "etri"])
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench_runs" / "st1_recipes"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    longer = args.teacher_epochs and args.teacher_epochs != args.epochs
    teacher_dirs = [out / (f"teacher{args.teacher_epochs}ep-seed{s}" if longer else f"cpu-seed{s}")
                    for s in args.teacher_seeds]  # fmt: skip
    for row in args.rows:
        if row == "teacher":
            done = {} if longer else results.get("cpu", {}).get("runs", {})
            members = {s: done[s] if s in done else run_recipe("cpu", args, s, out, epochs=args.teacher_epochs,
                                                               folder=d.name)
                       for s, d in zip(args.teacher_seeds, teacher_dirs)}  # fmt: skip
            results["teacher"] = {"members": members, "ensemble": ensemble_score(teacher_dirs, args, out)}
        else:
            runs = {}
            for seed in args.seeds:
                runs[seed] = run_recipe(row, args, seed, out, teacher_dirs if row == "distilled" else None)
                print(row, seed, runs[seed], flush=True)
            results[row] = _summary(runs)
        (out / "partial.json").write_text(json.dumps(results, indent=2))  # survives a later interruption
        print(row, json.dumps(results[row])[:400], flush=True)
    budget = {"data_root": args.data_root, "img_size": args.img_size, "epochs": args.epochs,
              "batch_size": args.batch_size, "rows_per_split": args.train_rows, "seeds": args.seeds,
              "teacher_seeds": args.teacher_seeds, "teacher_epochs": args.teacher_epochs or args.epochs,
              "alpha": args.alpha, "temperature": args.temperature,
              "threads": args.threads}  # fmt: skip
    report("st1_recipes", {**budget, "results": results}, args.json)


if __name__ == "__main__":
    main()
