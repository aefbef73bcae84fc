"""Command line: ``python -m fh_utils {demo,demo-data,run,validate,cache,nobg,sweep,package,dashboard,board} ...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _demo_data(args: argparse.Namespace) -> int:
    from fh_utils.prep.demo import ensure_demo_dataset, generate_demo_dataset

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


def _duplicates(args: argparse.Namespace) -> int:
    from fh_utils.data.duplicates import DEFAULT_THRESHOLD, find_near_duplicates
    from fh_utils.data.reader import DataValidationError
    from fh_utils.workbook.duplicates import leak_warning, pairs_table, val_train_leaks

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    cache_dir = "" if args.cache_dir is None else args.cache_dir
    try:
        result = find_near_duplicates(args.root, threshold=threshold, cache_dir=cache_dir, workers=args.workers)
    except DataValidationError as err:
        print(err, file=sys.stderr)
        return 1
    table = pairs_table(result)
    kinds = ", ".join(f"{k} {n}" for k, n in table["kind"].value_counts().items()) or "none"
    print(f"{len(result.images):,} images ({result.hashed:,} hashed now), {len(table):,} near-copy pairs within "
          f"{threshold} bits: {kinds}")
    print(val_train_leaks(result).to_string(index=False))
    if len(table):
        print(table.drop(columns=["a", "b"]).head(args.show).to_string(index=False))
    if args.csv:
        table.drop(columns=["a", "b"]).to_csv(args.csv, index=False)
        print(f"all pairs in {args.csv}")
    message = leak_warning(val_train_leaks(result), threshold, warn=False)
    if message:
        print(f"WARNING: {message}", file=sys.stderr)
    return 0


def _cache(args: argparse.Namespace) -> int:
    from fh_utils.data.cache import build_cache
    from fh_utils.data.datasets import create_dataset

    total = 0
    for task in args.tasks:
        for split in args.splits:
            ds = create_dataset(args.root, task, split, img_size=args.img_size, crop_margin=args.margin, cache=True,
                                cache_dir=args.cache_dir, use_nobg=args.use_nobg, resize=args.resize,
                                pad_value=tuple(args.pad_value))  # fmt: skip
            crops = (True,) if args.crop_prob >= 1 else (True, False)
            src = ds.source
            built = build_cache(src.specs, src.cache_dir, src.params, crops=crops, workers=args.workers)
            total += built
            print(f"{task} {split}: {len(ds)} rows, {built} entries built in {ds.source.cache_dir}")
    return 0


def _nobg(args: argparse.Namespace) -> int:
    from fh_utils.prep.background import create_nobg_tree

    summary = create_nobg_tree(args.root, out_root=args.out, method=args.method, model_name=args.model,
                               work_size=args.work_size, workers=args.workers)  # fmt: skip
    print(summary)
    return 1 if summary.get("n_failed") else 0


def _demo(args: argparse.Namespace) -> int:
    from fh_utils.runner.demo import main_demo

    return main_demo()


def parameter_value(text: str) -> Any:
    """A ``-p`` value as papermill's command line reads it: True, False, None, an int, a float, else the string."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _run(args: argparse.Namespace) -> int:
    import yaml
    from papermill.exceptions import PapermillExecutionError

    from fh_utils.runner.notebooks import UnknownParameterError, run_notebook

    params: dict[str, Any] = {}
    for path in args.parameters_file:
        params.update(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    params.update({name: parameter_value(value) for name, value in args.parameter})
    params.update(dict(args.raw))
    try:
        run_notebook(args.notebook, args.output, params, cwd=args.cwd, html=args.html, progress=not args.quiet,
                     timeout=args.timeout, start_timeout=args.start_timeout)  # fmt: skip
    except UnknownParameterError as exc:
        print(exc, file=sys.stderr)
        return 2
    except PapermillExecutionError as exc:
        print(f"{args.notebook}: cell [{exc.exec_count}] failed: {exc.ename}: {exc.evalue}\n"
              f"the executed notebook, with the error: {args.output}", file=sys.stderr)  # fmt: skip
        return 1
    print(f"executed notebook: {args.output}")
    return 0


def _lr_find(args: argparse.Namespace) -> int:
    from fh_utils.config import UnknownSettingError
    from fh_utils.runner.notebooks import unknown_parameters_message
    from fh_utils.workbook.lr_find import FIGURE_NAME, lr_find_from_params
    from fh_utils.workbook.workflow import training_parameter_names

    params = {name: parameter_value(value) for name, value in args.parameter}
    params.update(dict(args.raw))
    declared = list(training_parameter_names())
    unknown = sorted(set(params) - set(declared))
    if unknown:
        print(f"notebook {'03' if args.task == 'st1' else '04'}: {unknown_parameters_message(unknown, declared)}",
              file=sys.stderr)  # fmt: skip
        return 2
    sweep = dict(start_lr=args.start_lr, end_lr=args.end_lr, num_iter=args.num_iter, smooth=args.smooth,
                 diverge=args.diverge)  # fmt: skip
    try:
        setup, result = lr_find_from_params(args.task, params, progress=not args.quiet, **sweep)
    except (UnknownSettingError, ValueError, TypeError) as exc:
        print(f"lr-find: {exc}", file=sys.stderr)
        return 2
    print(result.describe())
    print(f"figure: {setup.run_dir / 'figures' / FIGURE_NAME}.png")
    print(f"suggested lr: {result.suggestion:.2e}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from fh_utils.sweeps.coordinator import run_sweep
    from fh_utils.sweeps.spec import parse_assignment

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
    from fh_utils.leaderboard.dry_run import DRY_RUN_SETUP_ERRORS, dry_run_on_split
    from fh_utils.leaderboard.package import package_submission

    package = package_submission(args.run, task=args.task, out_dir=args.out or "", model_name=args.model_name,
                                 tta=args.tta, key=args.key, weights=args.weights, name=args.name,
                                 checkpoint=args.checkpoint)  # fmt: skip
    print(package)
    if args.no_dry_run:
        return 0
    try:
        dry = dry_run_on_split(package, args.data_root, args.split, args.limit)
    except DRY_RUN_SETUP_ERRORS as exc:  # the data the dry run lays out; the folder itself is written
        print(f"{package.folder} is written; its dry run did not start:\n{exc}", file=sys.stderr)
        return 2
    print(dry.output.rstrip())
    print(f"dry run: {dry.score_line()}")
    print(f"dry run: {dry.rows:,} rows, submit()() {dry.seconds:.1f} s, {dry.total_seconds:.1f} s with the "
          f"interpreter start; fh_utils from {dry.fh_utils_file}")  # fmt: skip
    return 0


def _oof(args: argparse.Namespace) -> int:
    from fh_utils.workbook.oof import OOF_DIR, OOF_REPORT, NoFoldRunsError, oof_table, sweep_oof

    try:
        groups = sweep_oof(args.sweep, args.runs_root)
    except NoFoldRunsError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(oof_table(groups).to_string(index=False))
    print(f"out-of-fold files and {OOF_REPORT}: {args.sweep}/{OOF_DIR}/ under the runs folder")
    for recipe in sorted({g.recipe for g in groups if g.result}):
        print(f"full fit of {recipe!r} at its cross-validated epoch count: notebook 03/04 with "
              f"-p split full -r epochs_from '{args.sweep}|{recipe}'")  # fmt: skip
    return 1 if any(g.problem for g in groups) else 0


def _choose_ensemble(args: argparse.Namespace) -> int:
    from fh_utils.paths import runs_dir
    from fh_utils.runs import run_list_file
    from fh_utils.workbook.ensemble_choice import (
        EnsembleChoiceError,
        choose_ensemble,
        describe_choice,
        write_ensemble_choice,
    )  # fmt: skip

    try:
        choice, candidates, task = choose_ensemble(args.runs, args.checkpoint)
        listed = run_list_file(args.runs)
    except (EnsembleChoiceError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 2
    folder = args.out or (listed.parent if listed is not None else runs_dir())
    path = write_ensemble_choice(folder, choice, candidates, task, args.checkpoint)
    print(describe_choice(choice, candidates))
    print(f"written {path}; package it: python -m fh_utils package {path}")
    return 0


def _ledger(args: argparse.Namespace) -> int:
    from fh_utils.ledger import LedgerError, ledger_path, read_ledger, record_leaderboard

    try:
        if args.name:
            if args.score is None:
                print("give the leaderboard's score after the name: python -m fh_utils ledger NAME SCORE",
                      file=sys.stderr)  # fmt: skip
                return 2
            record_leaderboard(args.name, args.score)
        print(f"{ledger_path()}:")
        print(read_ledger().to_string(index=False))
    except LedgerError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from fh_utils.sweeps.dashboard import serve_dashboard

    try:
        serve_dashboard(args.target, port=args.port, host=args.host)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def _board(args: argparse.Namespace) -> int:
    from fh_utils.sweeps.dashboard import run_board

    return run_board(args.logdir, port=args.port, host=args.host)


def _parameter_options(p: argparse.ArgumentParser, parameter_help: str) -> None:
    """The notebook-parameter options ``-p NAME VALUE`` (typed as papermill types) and ``-r NAME VALUE`` (a string)."""
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help=parameter_help)
    p.add_argument("-r", "--raw", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="set a parameter to the string VALUE as it is (repeatable; default: none)")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: one subcommand per job, every option's help stating its default."""
    from fh_utils import __version__

    parser = argparse.ArgumentParser(prog="python -m fh_utils", description="The FASHION-HOW workbook's jobs; "
                                     "`python -m fh_utils COMMAND --help` lists one's options and their defaults.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help=f"print the version ({__version__}) and exit")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo-data", help="generate the synthetic demo dataset (reused when already there)")
    p.add_argument("dir", type=Path, help="folder to make it in, e.g. data/demo")
    p.add_argument("--seed", type=int, default=0, help="random seed of the images and labels (default %(default)s)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiplies every class count (default %(default)s: ~1,500 train and 400 val rows a task)")
    p.add_argument("--size-range", type=int, nargs=2, metavar=("MIN", "MAX"),
                   help="image side range, px (default 400 900)")
    p.add_argument("--overwrite", action="store_true",
                   help="regenerate even if a matching tree exists (default: reuse it)")
    p.set_defaults(func=_demo_data)

    p = sub.add_parser("demo", help="the main job: demo data, then notebooks 01-08 for both tasks "
                                    "(notebooks/demo_params.yaml)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("run", help="run one notebook headlessly: progress lines, the notebook's own output (epoch "
                                   "lines), IPC kernel sockets; an undeclared parameter is refused before it starts")
    p.add_argument("notebook", type=Path, help="the notebook, e.g. notebooks/04_train_st2.ipynb")
    p.add_argument("output", type=Path, help="the executed copy to write (kept, with the error, when a cell fails); "
                                             "an HTML rendering goes beside it")
    _parameter_options(p, "set a parameter, VALUE read as papermill's -p reads it: True/False/None, an int, a "
                          "float, else a string (repeatable; default: none, the notebook's own values)")
    p.add_argument("-f", "--parameters-file", type=Path, action="append", default=[], metavar="YAML",
                   help="YAML file of parameters, applied before -p and -r (repeatable; default: none)")
    p.add_argument("--cwd", type=Path, default=None, metavar="DIR",
                   help="working folder of the kernel (default: the notebook's folder, as in JupyterLab, so "
                        "data_root ../data/x means data/x)")
    p.add_argument("--no-html", dest="html", action="store_false",
                   help="no HTML rendering beside OUTPUT (default: one is written)")
    p.add_argument("--quiet", action="store_true",
                   help="print nothing while it runs (default: a line per cell and every line the notebook prints)")
    p.add_argument("--timeout", type=int, default=None, metavar="SECONDS",
                   help="seconds one cell may run (default: no limit)")
    p.add_argument("--start-timeout", type=int, default=60, metavar="SECONDS",
                   help="seconds the kernel may take to start (default %(default)s)")
    p.set_defaults(func=_run)

    p = sub.add_parser("validate", help="check a data root; exit 1 with a file:line report when anything is wrong")
    p.add_argument("root", type=Path, help="the data root (the folder with the FASHION-HOW CSVs)")
    p.add_argument("--tasks", nargs="+", default=["st1", "st2"], choices=["st1", "st2"],
                   help="tasks to check (default: st1 st2)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("duplicates", help="near-copy photos (pHash + dHash, cached) across train/val, the ST1/ST2 "
                                          "pools and the test folder; warns when val holds copies of train photos")
    p.add_argument("root", type=Path, help="the data root")
    p.add_argument("--threshold", type=int, default=None,
                   help="largest pHash and dHash distance of a pair, bits of 64 (default: the package's, 4)")
    p.add_argument("--cache-dir", type=Path, default=None, help="hash cache folder (default: beside the data root)")
    p.add_argument("--workers", type=int, default=0,
                   help="decoding processes for the first pass (default 0: one, in this process)")
    p.add_argument("--show", type=int, default=20, help="pairs printed (default %(default)s)")
    p.add_argument("--csv", type=Path, default=None, help="write every pair to this CSV (default: none)")
    p.set_defaults(func=_duplicates)

    p = sub.add_parser("cache", help="fill the decode-once crop cache ahead of training")
    p.add_argument("root", type=Path, help="the data root")
    p.add_argument("--tasks", nargs="+", default=["st1", "st2"], choices=["st1", "st2"],
                   help="tasks to cache (default: st1 st2)")
    p.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to cache (default: train val)")
    p.add_argument("--img-size", type=int, default=224,
                   help="input side, px: the training run's img_size (default %(default)s)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="margin around the box, a fraction of its size: the run's crop_margin (default %(default)s)")
    p.add_argument("--crop-prob", type=float, default=1.0,
                   help="the run's crop_prob; below 1 the uncropped images are cached too (default %(default)s)")
    p.add_argument("--resize", default="stretch", choices=["stretch", "letterbox"],
                   help="the run's resize: stretch the crop to the square or letterbox it (default %(default)s)")
    p.add_argument("--pad-value", type=int, nargs=3, default=[0, 0, 0], metavar=("R", "G", "B"),
                   help="the run's letterbox pad colour (default 0 0 0)")
    p.add_argument("--cache-dir", type=Path, default=None, help="cache folder (default: beside the data root)")
    p.add_argument("--use-nobg", action="store_true",
                   help="cache the background-removed images of notebook 02 (default: the raw images)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: every core)")
    p.set_defaults(func=_cache)

    p = sub.add_parser("nobg", help="write the background-removed image tree")
    p.add_argument("root", type=Path, help="the data root")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <data root>_nobg beside it)")
    p.add_argument("--method", default="auto", choices=["auto", "grabcut", "rembg"],
                   help="auto: rembg if its model file is present, else GrabCut (default %(default)s)")
    p.add_argument("--model", default="u2net",
                   help="rembg model, read from ~/.u2net/<model>.onnx, never downloaded (default %(default)s)")
    p.add_argument("--work-size", type=int, default=320,
                   help="GrabCut working long side, px: smaller is faster and coarser (default %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: every core)")
    p.set_defaults(func=_nobg)

    p = sub.add_parser("lr-find", help="the learning-rate range test (Smith 2017, fastai's lr_find) of a notebook "
                                       "03/04 configuration: prints the suggested lr, saves figures/lr_find.png")
    p.add_argument("task", choices=["st1", "st2"], help="st1 (notebook 03's configuration) or st2 (notebook 04's)")
    _parameter_options(p, "a notebook 03/04 parameter, e.g. -p backbone fh_colornet -p img_size 56, VALUE read as "
                          "the run command reads it (repeatable; default: none, the notebook's own values; the run "
                          "folder is run_name's, a new one when empty)")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate (default %(default)s)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate (default %(default)s)")
    p.add_argument("--num-iter", type=int, default=100,
                   help="training steps of the sweep, exponentially spaced (default %(default)s)")
    p.add_argument("--smooth", type=float, default=0.05,
                   help="weight of each new loss in the moving average (default %(default)s)")
    p.add_argument("--diverge", type=float, default=5.0,
                   help="stop once the smoothed loss exceeds this multiple of its best (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: one is shown)")
    p.set_defaults(func=_lr_find)

    p = sub.add_parser("sweep", help="run or resume a sweep of a notebook (seeds, folds, recipes) as an Optuna study")
    p.add_argument("spec", type=Path, help="sweep spec, e.g. sweeps/st2_seeds_folds.yaml")
    p.add_argument("--workers", type=int, default=None, help="trials at once (default: one per device, or 1)")
    p.add_argument("--devices", default="cpu",
                   help="cpu, or GPU indices: 0,1,2,3 (repeat one to share it: 0,0) (default %(default)s)")
    p.add_argument("--storage", default=None,
                   help="Optuna RDB URL shared by several machines (default: a journal under outputs/sweeps/)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="fixed notebook parameter added to the spec's (repeatable), e.g. --param data_root=../data/x "
                        "(default: the spec's alone)")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("package", help="write the folder the leaderboard scores (task.ipynb, model/, code), then "
                                       "dry-run it on a val split laid out as /aif/Dataset")
    p.add_argument("run", help="a run folder or name, a saved ensemble or int8 export, runs comma-separated, or a "
                               "top_k.json")
    p.add_argument("--out", type=Path, default=None, help="submission folder (default outputs/submissions/<name>)")
    p.add_argument("--model-name", default="", help="the name the leaderboard shows (default: the submission's)")
    p.add_argument("--name", default="", help="submission name (default: the run's folder name)")
    p.add_argument("--task", default="", choices=["", "st1", "st2"],
                   help="st1 or st2 (default: the task the run was trained for)")
    p.add_argument("--tta", default="", help="none, hflip or hflip+crops (default: what the run's evaluation used)")
    p.add_argument("--weights", default="", help="ensemble weights, comma-separated (default: equal)")
    p.add_argument("--checkpoint", default="", choices=["", "best", "last", "avg", "crt"],
                   help="which checkpoint each run submits: best.pt, final.pt (last), averaged.pt (avg) or crt.pt "
                        "(crt: the classifier re-trained after training, crt_epochs) (default: the rule the run was "
                        "trained with)")
    p.add_argument("--key", default="", help="the team's key, written into task.ipynb (default empty: no upload)")
    p.add_argument("--data-root", default="",
                   help="data whose split the dry run predicts (default: the data root the run trained on, from its "
                        "config.json)")
    p.add_argument("--split", default="val", help="split laid out as the test set (default %(default)s)")
    p.add_argument("--limit", type=int, default=0, help="dry-run on the first N rows only (default %(default)s: all)")
    p.add_argument("--no-dry-run", action="store_true", help="write the folder only (default: dry-run it too)")
    p.set_defaults(func=_package)

    p = sub.add_parser("oof", help="gather a fold sweep's held-out predictions per recipe and seed into oof files, "
                                   "and print each recipe's cross-validated score with its 90 %% interval")
    p.add_argument("sweep", help="the sweep's folder name under the runs folder (its trials trained split fold:K/N)")
    p.add_argument("--runs-root", type=Path, default=None, help="the runs folder (default outputs/runs)")
    p.set_defaults(func=_oof)

    p = sub.add_parser("choose-ensemble", help="choose ST2 ensemble members and weights from the candidates' stored "
                                               "val predictions (greedy selection), with the choice's honest estimate; "
                                               "writes ensemble_choice.json for package")  # fmt: skip
    p.add_argument("runs", help="candidate runs: folders or names comma-separated, or a top_k.json")
    p.add_argument("--checkpoint", default="", choices=["", "best", "last", "avg", "crt"],
                   help="the checkpoint each candidate submits (default: the rule each run was trained with)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder of ensemble_choice.json (default: the top_k.json's folder, else outputs/runs)")
    p.set_defaults(func=_choose_ensemble)

    p = sub.add_parser("ledger", help="show the submission ledger (outputs/ledger.csv), or record a submission's "
                                      "leaderboard score: ledger NAME SCORE")
    p.add_argument("name", nargs="?", default="", help="the submission's name (default: none, just show)")
    p.add_argument("score", nargs="?", type=float, default=None,
                   help="its leaderboard score, 0..1 (default: none)")
    p.set_defaults(func=_ledger)

    p = sub.add_parser("dashboard", help="optuna-dashboard of a sweep's study, read-only, on a loopback port")
    p.add_argument("target", help="sweep name (its journal under outputs/sweeps/), a journal file, or the --storage "
                                  "URL the sweep ran with (postgresql://...)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: loopback only)")
    p.set_defaults(func=_dashboard)

    p = sub.add_parser("board", help="TensorBoard over every run's scalars (outputs/runs/*/tb) on a loopback port")
    p.add_argument("--logdir", type=Path, default=None, help="folder of the runs (default outputs/runs)")
    p.add_argument("--port", type=int, default=6006, help="port to listen on (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: loopback only)")
    p.set_defaults(func=_board)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
