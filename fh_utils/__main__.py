"""Command line: ``python -m fh_utils {demo,demo-data,validate,cache,nobg,sweep,package,dashboard,board} ...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo_data(args: argparse.Namespace) -> int:
    from fh_utils.data.demo import ensure_demo_dataset, generate_demo_dataset

    size_range = tuple(args.size_range) if args.size_range else (400, 900)
    if args.overwrite:
        root = generate_demo_dataset(args.dir, seed=args.seed, scale=args.scale, size_range=size_range, overwrite=True)
    else:
        root = ensure_demo_dataset(args.dir, seed=args.seed, scale=args.scale, size_range=size_range)
    print(f"demo data ready at {root}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from fh_utils.data.reader import validate_root

    problems = validate_root(args.root, tasks=tuple(args.tasks))
    if problems:
        print(f"{len(problems)} problem(s) in {args.root}:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"{args.root}: OK ({', '.join(args.tasks)})")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from fh_utils.data.cache import build_cache
    from fh_utils.data.datasets import create_dataset

    total = 0
    for task in args.tasks:
        for split in args.splits:
            ds = create_dataset(args.root, task, split, img_size=args.img_size, crop_margin=args.margin, cache=True,
                                cache_dir=args.cache_dir, use_nobg=args.use_nobg)  # fmt: skip
            crops = (True,) if args.crop_prob >= 1 else (True, False)
            src = ds.source
            built = build_cache(src.specs, src.cache_dir, src.params, crops=crops, workers=args.workers)
            total += built
            print(f"{task} {split}: {len(ds)} rows, {built} entries built in {ds.source.cache_dir}")
    return 0


def _nobg(args: argparse.Namespace) -> int:
    from fh_utils.data.background import create_nobg_tree

    summary = create_nobg_tree(args.root, out_root=args.out, method=args.method, model_name=args.model,
                               work_size=args.work_size, workers=args.workers)  # fmt: skip
    print(summary)
    return 1 if summary.get("n_failed") else 0


def _demo(args: argparse.Namespace) -> int:
    from fh_utils.workbook.notebooks import main_demo

    return main_demo()


def _sweep(args: argparse.Namespace) -> int:
    from fh_utils.workbook.sweep_spec import parse_assignment
    from fh_utils.workbook.sweeps import run_sweep

    fixed = dict(parse_assignment(a) for a in args.param)
    res = run_sweep(args.spec, workers=args.workers, devices=args.devices, storage=args.storage, **fixed)
    trials = res.trials
    print(f"sweep {res.name}: {len(trials)} trial(s) in {res.seconds:.0f} s; storage {res.storage}")
    if len(trials):
        cols = [c for c in ("number", "state", "outcome", "value", "run_name") if c in trials]
        print(trials[cols + [c for c in trials if c.startswith("param_")]].to_string(index=False))
    bad = [c for c in res.worker_exit_codes if c != 0]
    return 1 if bad else 0


def _package(args: argparse.Namespace) -> int:
    from fh_utils.workbook.packaging import dry_run_on_split, package_submission

    package = package_submission(args.run, task=args.task, out_dir=args.out or "", model_name=args.model_name,
                                 tta=args.tta, key=args.key, weights=args.weights, name=args.name)  # fmt: skip
    print(package)
    if args.no_dry_run:
        return 0
    dry = dry_run_on_split(package, args.data_root, args.split, args.limit)
    print(dry.output.rstrip())
    print(f"dry run: {dry.rows:,} rows, submit()() {dry.seconds:.1f} s, {dry.total_seconds:.1f} s with the "
          f"interpreter start; fh_utils from {dry.fh_utils_file}")  # fmt: skip
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from fh_utils.workbook.dashboard import serve_dashboard

    try:
        serve_dashboard(args.target, port=args.port, host=args.host)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def _board(args: argparse.Namespace) -> int:
    from fh_utils.workbook.dashboard import run_board

    return run_board(args.logdir, port=args.port, host=args.host)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m fh_utils", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="generate the synthetic demo dataset (reused when already there)")
    p.add_argument("dir", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every class count")
    p.add_argument("--size-range", type=int, nargs=2, metavar=("MIN", "MAX"), help="image side range, px")
    p.add_argument("--overwrite", action="store_true", help="regenerate even if a matching tree exists")
    p.set_defaults(func=_demo_data)

    p = sub.add_parser("demo", help="the main job: demo data, then notebooks 01-05 for both tasks")
    p.set_defaults(func=_demo)

    p = sub.add_parser("validate", help="check a data root; exit 1 with a file:line report when anything is wrong")
    p.add_argument("root", type=Path)
    p.add_argument("--tasks", nargs="+", default=["st1", "st2"], choices=["st1", "st2"])
    p.set_defaults(func=_validate)

    p = sub.add_parser("cache", help="fill the decode-once crop cache ahead of training")
    p.add_argument("root", type=Path)
    p.add_argument("--tasks", nargs="+", default=["st1", "st2"], choices=["st1", "st2"])
    p.add_argument("--splits", nargs="+", default=["train", "val"])
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--margin", type=float, default=0.0)
    p.add_argument("--crop-prob", type=float, default=1.0)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--use-nobg", action="store_true")
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=_cache)

    p = sub.add_parser("nobg", help="write the background-removed image tree")
    p.add_argument("root", type=Path)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--method", default="auto", choices=["auto", "grabcut", "rembg"])
    p.add_argument("--model", default="u2net")
    p.add_argument("--work-size", type=int, default=320)
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=_nobg)

    p = sub.add_parser("sweep", help="run or resume a sweep of a notebook (seeds, folds, recipes) as an Optuna study")
    p.add_argument("spec", type=Path, help="sweep spec, e.g. sweeps/st2_seeds_folds.yaml")
    p.add_argument("--workers", type=int, default=None, help="trials at once (default: one per device, or 1)")
    p.add_argument("--devices", default="cpu", help="cpu, or GPU indices: 0,1,2,3 (repeat one to share it: 0,0)")
    p.add_argument("--storage", default=None,
                   help="Optuna RDB URL shared by several machines (default: a journal under outputs/sweeps/)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="fixed notebook parameter added to the spec's (repeatable), e.g. --param data_root=../data/x")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("package", help="write the folder the leaderboard scores (task.ipynb, model/, code), then "
                                       "dry-run it on a val split laid out as /aif/Dataset")
    p.add_argument("run", help="a run folder or name, a saved ensemble or int8 export, runs comma-separated, or a "
                               "top_k.json")
    p.add_argument("--out", type=Path, default=None, help="submission folder (default outputs/submissions/<name>)")
    p.add_argument("--model-name", default="", help="the name the leaderboard shows (default: the submission's)")
    p.add_argument("--name", default="", help="submission name (default: the run's folder name)")
    p.add_argument("--task", default="", choices=["", "st1", "st2"])
    p.add_argument("--tta", default="", help="none, hflip or hflip+crops (default: what the run's evaluation used)")
    p.add_argument("--weights", default="", help="ensemble weights, comma-separated")
    p.add_argument("--key", default="", help="the team's key, written into task.ipynb (default empty: no upload)")
    p.add_argument("--data-root", default="", help="data whose split the dry run predicts (default: the default)")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=0, help="dry-run on the first N rows only")
    p.add_argument("--no-dry-run", action="store_true", help="write the folder only")
    p.set_defaults(func=_package)

    p = sub.add_parser("dashboard", help="optuna-dashboard of a sweep's study, read-only, on a loopback port")
    p.add_argument("target", help="sweep name (its journal under outputs/sweeps/), a journal file, or the --storage "
                                  "URL the sweep ran with (postgresql://...)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.set_defaults(func=_dashboard)

    p = sub.add_parser("board", help="TensorBoard over every run's scalars (outputs/runs/*/tb) on a loopback port")
    p.add_argument("--logdir", type=Path, default=None, help="default outputs/runs")
    p.add_argument("--port", type=int, default=6006)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.set_defaults(func=_board)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
