"""ST2's long-tail methods against notebook 04's default at the default's budget, scored honestly (issue 31.2).

    python -m benchmarks.heldout --src ../shared/data/products_b --dest outputs/bench_data/products_b-heldout
    python -m benchmarks.st2_methods --root outputs/bench_data/products_b-heldout --seeds 0 1 2 \\
        --arms default drw cutmix_bs letterbox --json st2_methods.json
    python -m benchmarks.st2_methods --root ... --arms default exclude --exclude SWEEP_FOLDER/label_issues.csv

Each arm is notebook 04's parameters-cell defaults plus the few settings of :data:`ARMS`, trained by
:func:`fh_utils.workbook.workflow.train_from_params` once per seed into ``outputs/runs/<prefix>-<arm>-s<seed>``
(a finished run is reused, so an interrupted benchmark restarts where it stopped). The default arm also saves the
weight average and the classifier re-training (``checkpoint="avg"``, ``crt_epochs``), which change nothing of
its training, so those two methods are scored on the default's own runs.

Per run and per checkpoint (the last epoch; ``avg`` and ``crt`` where the run saved them; the best epoch for
reference): the honest estimate on the root's val split (the choosing half) with its 90 % interval, and the score
on its ``test`` split (the half nothing chose on). Per arm: means over seeds with their spread, and the difference
to the default arm seed by seed (the same seeds: paired).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import report
from benchmarks.honest_estimates import held_out_score
from fh_utils.io import read_json
from fh_utils.paths import runs_dir
from fh_utils.runs import CHECKPOINT_FILES, METRICS_FILE
from fh_utils.scoring.report import run_estimates
from fh_utils.tasks import get_task
from fh_utils.workbook.lr_find import notebook_defaults
from fh_utils.workbook.workflow import train_from_params

CRT_EPOCHS = 3  # the default arm's classifier re-training: a quarter of the default's 12 epochs, heads only
ARMS: dict[str, dict] = {
    "default": {"checkpoint": "avg", "crt_epochs": CRT_EPOCHS},  # sampler, CE; + weight averaging and cRT
    "balanced_softmax": {"imbalance": "logit_adjust"},  # the logit-adjusted loss, plain sampling
    "drs": {"imbalance": "none", "rebalance": "sampler"},  # plain sampling, the sampler over the last fifth
    "drw": {"imbalance": "none", "rebalance": "reweight"},  # plain sampling, class weights over the last fifth
    "drw_b099": {"imbalance": "none", "rebalance": "reweight", "drw_beta": 0.99},  # weights capped near 50:1
    "cutmix": {"mix": "cutmix"},  # with the default sampler
    "cutmix_bs": {"mix": "cutmix", "imbalance": "logit_adjust"},
    # CutMix combined with what helped on the unseen half: its last epoch is the cutmix arm's (the same training)
    "cutmix_avg_crt": {"mix": "cutmix", "checkpoint": "avg", "crt_epochs": CRT_EPOCHS},
    "mixup": {"mix": "mixup"},
    "letterbox": {"resize": "letterbox"},
    "exclude": {},  # training without a reviewed list of rows (issue 30.5): --exclude names the list
}
CHECKPOINTS = {rule: CHECKPOINT_FILES[rule] for rule in ("last", "avg", "crt", "best")}  # the table's order


def train_arm(arm: str, seed: int, root: Path, prefix: str) -> Path:
    """One run of an arm (reused when its metrics.json says it finished)."""
    name = f"{prefix}-{arm}-s{seed}"
    run = runs_dir() / name
    if (run / METRICS_FILE).exists() and (run / CHECKPOINTS["last"]).exists():
        return run
    params = {**notebook_defaults("st2"), **ARMS[arm], "data_root": str(root), "seed": seed, "run_name": name,
              "resume": (run / "last.pt").exists()}  # fmt: skip
    start = time.perf_counter()
    run, _ = train_from_params("st2", params, progress=False)
    print(f"{name}: trained in {time.perf_counter() - start:.0f} s", flush=True)
    return run


def _estimate(run: Path, task, rule: str) -> dict | None:
    est = run_estimates(run, task, rule)
    return None if est is None else est["estimate"] if rule != "best" else est["best_epoch"]


def score_run(run: Path) -> dict:
    """Every checkpoint the run saved: its honest val number (interval) and its score on the unseen half."""
    config = read_json(run / "config.json")
    root = Path(config["data"]["data_root"])
    task = get_task("st2", root)
    metrics = read_json(run / METRICS_FILE)
    out = {"run": run.name, "baseline_val": metrics.get("baseline_score"), "checkpoints": {}}
    for rule, file in CHECKPOINTS.items():
        est = _estimate(run, task, rule)
        if est is None or not (run / file).exists():
            continue
        out["checkpoints"][rule] = {"val": est["score"], "low": est["low"], "high": est["high"],
                                    "unseen": held_out_score(run, run / file, task, root)}  # fmt: skip
    return out


def _sd(values: np.ndarray) -> float | None:
    return float(values.std(ddof=1)) if len(values) > 1 else None


def summarise(scored: dict[str, list[dict]]) -> dict:
    """Per arm and checkpoint: mean and SD over seeds of the val number and the unseen score, interval coverage,
    and the paired difference to the default arm's last epoch."""
    ref = {r["run"].rsplit("-s", 1)[1]: r["checkpoints"]["last"] for r in scored.get("default", [])}
    out = {}
    for arm, runs in scored.items():
        for rule in CHECKPOINTS:
            rows = [(r["run"].rsplit("-s", 1)[1], r["checkpoints"][rule]) for r in runs if rule in r["checkpoints"]]
            if not rows:
                continue
            val = np.array([c["val"] for _, c in rows])
            unseen = np.array([c["unseen"] for _, c in rows])
            diffs = [c["unseen"] - ref[s]["unseen"] for s, c in rows if s in ref]
            out[f"{arm}/{rule}"] = {
                "seeds": len(rows), "val_mean": float(val.mean()), "val_sd": _sd(val),
                "unseen_mean": float(unseen.mean()), "unseen_sd": _sd(unseen),
                "covered": f"{sum(c['low'] <= c['unseen'] <= c['high'] for _, c in rows)}/{len(rows)}",
                "unseen_minus_default_last": [float(d) for d in diffs],
            }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: the arms, the seeds and the held-out root; trains what is missing, prints (and writes) JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="a held-out root (benchmarks/heldout.py)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="default: every arm")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--prefix", default="methods", help="run-name prefix under outputs/runs (default: methods)")
    p.add_argument("--exclude", default="", help="arm exclude: the rows to leave out of training (a label_issues.csv)")
    p.add_argument("--score-only", action="store_true", help="score the runs that exist, train nothing")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if "exclude" in args.arms:
        if not args.exclude:
            p.error("arm exclude needs --exclude PATH")
        ARMS["exclude"] = {"exclude": str(Path(args.exclude).resolve())}
    scored: dict[str, list[dict]] = {}
    for seed in args.seeds:  # seed-major: an interrupted benchmark has every arm at the same seeds
        for arm in args.arms:
            run = runs_dir() / f"{args.prefix}-{arm}-s{seed}"
            if not args.score_only:
                run = train_arm(arm, seed, args.root.resolve(), args.prefix)
            if (run / METRICS_FILE).exists():
                scored.setdefault(arm, []).append(score_run(run))
    report("st2_methods", {"arms": {a: ARMS[a] for a in args.arms}, "runs": scored, "summary": summarise(scored)},
           str(args.json) if args.json else None)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
