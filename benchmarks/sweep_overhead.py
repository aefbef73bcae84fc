"""Sweeps (issue 11): the sweep's own overhead, trials per hour by worker count, and an ST2 seed sweep.

    python -m benchmarks.sweep_overhead overhead --trials 4            # wall / sum of notebook times, 1 worker
    python -m benchmarks.sweep_overhead concurrency --trials 4 --workers 1 2   # trials per hour per worker count
    python -m benchmarks.sweep_overhead seeds --data-root ../shared/data/products_b --seeds 0 1 2 3 4 --epochs 12
    python -m benchmarks.sweep_overhead pruning --data-root ../shared/data/products_b --trials 8 --epochs 4

``overhead`` and ``concurrency`` run notebook 04 with tiny parameters on generated demo data; ``seeds`` runs
notebook 04's default recipe (fh_colornet, 56 px) once per seed and reports mean, spread and the best seed;
``pruning`` runs the same seeded TPE search of notebook 04 twice, without and with the median pruner, and
reports wall time, epochs trained, trials pruned and the best score each found.
Every sweep starts afresh under ``outputs/bench_runs/sweeps/`` (its earlier runs are removed first), except
``seeds --resume``, which continues an interrupted seeds sweep (finished seeds are kept, a lost one retried).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import ROOT, demo_root, report

BENCH_OUT = ROOT / "outputs" / "bench_runs" / "sweeps"
TINY = {"epochs": 1, "img_size": 32, "batch_size": 16, "limit": 64, "lr": 0.002, "device": "cpu", "num_workers": 0,
        "cache": False}  # fmt: skip


def _fresh_sweep(name: str) -> None:
    for folder in (BENCH_OUT / "runs" / name, BENCH_OUT / "sweeps" / name):
        shutil.rmtree(folder, ignore_errors=True)


def _sweep(name: str, fixed: dict, plan: dict, workers: int, devices: str = "cpu", fresh: bool = True):
    """Run notebook 04 as the sweep ``name`` (``plan``: its grid, or its search and sampler settings); timed."""
    from fh_utils.sweeps.coordinator import run_sweep

    if fresh:
        _fresh_sweep(name)
    start = time.perf_counter()
    result = run_sweep({"name": name, "notebook": "04_train_st2.ipynb", "fixed": fixed, **plan}, workers=workers,
                       devices=devices)  # fmt: skip
    return result, time.perf_counter() - start


def _run(name: str, fixed: dict, grid: dict, workers: int, devices: str = "cpu", fresh: bool = True) -> dict:
    result, wall = _sweep(name, fixed, {"grid": grid}, workers, devices, fresh)
    trials = result.trials
    done = trials[trials["state"] == "COMPLETE"]
    notebook_s = float(trials["seconds"].fillna(0).sum())
    return {"name": name, "workers": workers, "trials": len(trials), "complete": len(done), "wall_s": round(wall, 1),
            "sum_notebook_s": round(notebook_s, 1), "trials_per_hour": round(len(done) / wall * 3600, 1),
            "scores": {int(r.param_seed): r.value for r in done.itertuples()} if "param_seed" in done else {},
            "storage": result.storage,
            "overhead": round(wall / max(notebook_s, 1e-9) - 1, 4) if workers == 1 else None}  # fmt: skip


def overhead(args: argparse.Namespace) -> dict:
    """Wall time of a one-worker sweep of N trials over the sum of its trials' notebook times."""
    root = demo_root("sweep", scale=0.3, size_range=(300, 500))
    res = _run("overhead", {**TINY, "data_root": str(root)}, {"seed": list(range(args.trials))}, workers=1)
    res["goal"] = "overhead <= 0.10"
    return res


def _warm_cache(fixed: dict) -> None:
    # Build the decode-once cache the trials read (beside the demo data) once, so no trial pays for it.
    from fh_utils.data.cache import build_cache
    from fh_utils.data.datasets import create_loaders

    for loader in create_loaders(fixed["data_root"], "st2", img_size=fixed["img_size"], limit=fixed["limit"],
                                 cache=True).values():  # fmt: skip
        src = loader.dataset.source
        build_cache(src.specs, src.cache_dir, src.params, progress=False)


def concurrency(args: argparse.Namespace) -> dict:
    """Trials per hour of the same sweep with each worker count (the one-worker run also gives the overhead).

    On a GPU (``--devices 0``) every worker shares that GPU; its mean utilisation over each sweep is reported.
    """
    from benchmarks.gpu_fit import GpuSampler
    from fh_utils.training.device import resolve_device

    root = Path(args.data_root).resolve() if args.data_root else demo_root("sweep", scale=args.scale,
                                                                            size_range=(300, 500))  # fmt: skip
    fixed = {**TINY, "data_root": str(root), **({"device": "cuda"} if args.devices != "cpu" else {})}
    if args.backbone:
        fixed.update(backbone=args.backbone, img_size=args.img_size, epochs=args.epochs, limit=args.limit,
                     batch_size=args.batch_size)  # fmt: skip
    fixed.update(num_workers=args.num_workers, cache=args.cache)  # -1: auto, from each trial's share of the cores
    if args.cache:
        _warm_cache(fixed)
    device = resolve_device("cpu" if args.devices == "cpu" else f"cuda:{args.devices}")
    runs = {}
    for n in args.workers:
        with GpuSampler(device, interval=0.5) as sampler:
            start = time.perf_counter()
            runs[n] = _run(f"workers-{n}", fixed, {"seed": list(range(args.trials))}, workers=n,
                           devices=",".join([args.devices] * n) if args.devices != "cpu" else "cpu")  # fmt: skip
        runs[n]["gpu_util_mean"] = sampler.mean(start, time.perf_counter())
    base = runs[args.workers[0]]["trials_per_hour"]
    return {"fixed": {k: v for k, v in fixed.items() if k != "data_root"}, "runs": runs,
            "speedup": {n: round(r["trials_per_hour"] / base, 2) for n, r in runs.items()}}  # fmt: skip


def seeds(args: argparse.Namespace) -> dict:
    """Notebook 04's default recipe once per seed on real data: mean, spread and the best seed."""
    fixed = {"data_root": str(Path(args.data_root).resolve()), "epochs": args.epochs, "device": "cpu",
             "num_workers": 0, "cache": True}  # fmt: skip
    res = _run("st2-seeds", fixed, {"seed": list(args.seeds)}, workers=args.n_workers, fresh=not args.resume)
    values = list(res["scores"].values())
    if values:
        best = max(res["scores"], key=res["scores"].get)
        res.update(mean=round(statistics.mean(values), 4), std=round(statistics.stdev(values), 4) if len(values) > 1
                   else 0.0, min=round(min(values), 4), max=round(max(values), 4), best_seed=best)  # fmt: skip
    return res


def _epochs_trained(run_dirs: list) -> int:
    histories = [Path(d) / "history.csv" for d in run_dirs if isinstance(d, str)]  # a trial without a folder: NaN
    return sum(len(pd.read_csv(h)) for h in histories if h.exists())


def pruning(args: argparse.Namespace) -> dict:
    """One seeded TPE search of notebook 04, without and with the median pruner: what pruning saves and costs."""
    fixed = {"data_root": str(Path(args.data_root).resolve()), "epochs": args.epochs, "img_size": args.img_size,
             "limit": args.limit, "device": "cpu", "num_workers": 0, "cache": True}  # fmt: skip
    search = {"lr": {"low": 1e-4, "high": 0.3, "log": True}, "label_smoothing": {"low": 0.0, "high": 0.2}}
    studies = {}
    for pruner in ("none", "median"):
        plan = {"search": search, "n_trials": args.trials, "sampler": "tpe", "seed": 0, "pruner": pruner}
        result, wall = _sweep(f"pruning-{pruner}", fixed, plan, workers=1)
        trials = result.trials
        done = trials[trials["state"] == "COMPLETE"]
        studies[pruner] = {"wall_s": round(wall, 1), "trials": len(trials), "complete": len(done),
                           "pruned": int((trials["state"] == "PRUNED").sum()),
                           "epochs_trained": _epochs_trained(list(trials["run_dir"])),
                           "best": round(float(done["value"].max()), 4) if len(done) else None,
                           "values": [None if v != v else round(float(v), 4) for v in trials["value"]],
                           "lr": [round(float(v), 5) for v in trials["param_lr"]]}  # fmt: skip
    base, pruned = studies["none"], studies["median"]
    return {"budget": fixed, "search": search, "studies": studies,
            "wall_saved": round(1 - pruned["wall_s"] / base["wall_s"], 3),
            "epochs_saved": round(1 - pruned["epochs_trained"] / max(base["epochs_trained"], 1), 3)}  # fmt: skip


def main() -> None:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("overhead")
    p.add_argument("--trials", type=int, default=4)
    p = sub.add_parser("concurrency")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--devices", default="cpu", help="cpu, or one GPU index that every worker shares")
    p.add_argument("--backbone", default="", help="train this backbone instead of the tiny CPU profile")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32, help="with --backbone (notebook 04's default)")
    p.add_argument("--num-workers", type=int, default=0, help="each trial's loader workers (-1: auto)")
    p.add_argument("--cache", action="store_true", help="trials read the decode-once cache (built first)")
    p.add_argument("--scale", type=float, default=0.3, help="demo data scale (0.3: ~450 train rows)")
    p.add_argument("--data-root", default="", help="train on this data instead of generated demo data")
    p = sub.add_parser("seeds")
    p.add_argument("--data-root", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--n-workers", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="continue the previous seeds sweep instead of restarting")
    p = sub.add_parser("pruning")
    p.add_argument("--data-root", required=True)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--img-size", type=int, default=40)
    p.add_argument("--limit", type=int, default=2500, help="first N rows of each split (0: all)")
    for p in sub.choices.values():
        p.add_argument("--json", default=None)
    args = parser.parse_args()
    # Runs and studies of the benchmark stay apart from the user's (set here, at run time, for the workers too).
    os.environ["FH_OUTPUTS"] = str(BENCH_OUT)
    figures = {"overhead": overhead, "concurrency": concurrency, "seeds": seeds, "pruning": pruning}[args.mode](args)
    report(f"sweep_{args.mode}", figures, args.json)


if __name__ == "__main__":
    main()
