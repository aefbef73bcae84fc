"""The honest estimate against photos nobody chose on, over many halvings of val, without retraining (issue 29.8).

    for s in 0 1 2 3 4; do python -m fh_utils run notebooks/04_train_st2.ipynb out.ipynb \\
        -r data_root ../shared/data/products_b -p seed $s -r run_name halving-st2-s$s; done
    python -m benchmarks.honest_halvings --runs outputs/runs/halving-st2-s* --halvings 20 --json halvings.json

Each run trained on train and validated on the whole val split, storing every epoch's val probabilities
(``val_epochs.npz``); val never steered its training. So any class-stratified halving of val gives a *choosing*
half A (what a run's val would be) and an *unseen* half B (a test set nobody chose on), and every number the
workbook reports can be recomputed from A alone and compared with B:

- best-epoch score on A, against B's score of the epoch A chose (``best.pt``'s unseen score);
- the honest estimate of ``best.pt`` (K-fold selection on A), against the same;
- the last epoch's score on A (the honest estimate of rule ``last``), against B's score of the last epoch;
- whether each 90 % interval covers its unseen score;
- and which checkpoint does better on B: the best-on-A epoch or the last (the default rule's evidence).

Every halving of every run is one comparison; halvings of one run share its training, so the spread over seeds
is reported too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import report
from fh_utils.io import read_json
from fh_utils.runs import CONFIG_FILE, EPOCH_PREDICTIONS_FILE
from fh_utils.scoring.estimates import EstimateSettings, Scorer, epoch_estimates, fold_assignments
from fh_utils.scoring.predictions import EpochPredictions
from fh_utils.tasks import get_task

NUMBERS = {"best_epoch": "best", "estimate_best": "best", "last_epoch": "last"}


def halving_rows(run: Path, halvings: int, settings: EstimateSettings, seed: int = 2026) -> list[dict]:
    """Every number of one run on ``halvings`` class-stratified halvings of its val, each with its unseen score."""
    config = read_json(run / CONFIG_FILE)
    task = get_task(config["task"]["name"], config["data"]["data_root"])
    record = EpochPredictions.load(run / EPOCH_PREDICTIONS_FILE)
    scorer = Scorer(task, record.targets)
    correct = scorer.correct(record.probabilities)
    halves = fold_assignments(scorer.targets[:, 0], 2, halvings, seed)
    rows = []
    for h, assignment in enumerate(halves):
        a, b = assignment == 0, assignment == 1
        on_a = scorer.epoch_scores(correct, a.astype(float)[None])[0]
        on_b = scorer.epoch_scores(correct, b.astype(float)[None])[0]
        chosen = int(np.argmax(on_a))
        probs_a = {k: v[:, a] for k, v in record.probabilities.items()}
        best = epoch_estimates(task, record.targets[a], probs_a, rule="best", settings=settings)
        unseen = {"best": float(on_b[chosen]), "last": float(on_b[-1])}
        numbers = {"best_epoch": best["best_epoch"], "estimate_best": best["estimate"],
                   "last_epoch": best["last_epoch"]}  # fmt: skip
        rows.append({"run": run.name, "halving": h, "chosen_epoch": chosen + 1, "unseen": unseen,
                     "numbers": {k: {"score": v["score"], "low": v["low"], "high": v["high"]}
                                 for k, v in numbers.items()}})  # fmt: skip
    return rows


def summarise(rows: list[dict]) -> dict:
    """Per number: mean signed and absolute error against its checkpoint's unseen score, coverage; per rule: the
    mean unseen score, and the spread of the per-run means."""
    out: dict = {"comparisons": len(rows), "runs": sorted({r["run"] for r in rows}), "numbers": {}, "rules": {}}
    for number, rule in NUMBERS.items():
        err = np.array([r["numbers"][number]["score"] - r["unseen"][rule] for r in rows])
        parts = [r["numbers"][number] for r in rows]
        cover = np.mean([p["low"] <= r["unseen"][rule] <= p["high"] for p, r in zip(parts, rows)])
        per_run = [np.mean([r["numbers"][number]["score"] - r["unseen"][rule] for r in rows if r["run"] == run])
                   for run in out["runs"]]  # fmt: skip
        out["numbers"][number] = {"checkpoint": rule, "mean_signed_error": float(err.mean()),
                                  "mean_abs_error": float(np.abs(err).mean()), "coverage": float(cover),
                                  "per_run_signed_error": [float(x) for x in per_run]}  # fmt: skip
    for rule in ("best", "last"):
        per_run = [np.mean([r["unseen"][rule] for r in rows if r["run"] == run]) for run in out["runs"]]
        out["rules"][rule] = {"mean_unseen": float(np.mean([r["unseen"][rule] for r in rows])),
                              "per_run": [float(x) for x in per_run]}  # fmt: skip
    diff = np.array([r["unseen"]["last"] - r["unseen"]["best"] for r in rows])
    out["last_minus_best_unseen"] = {"mean": float(diff.mean()), "share_last_better": float(np.mean(diff > 0)),
                                     "share_equal": float(np.mean(diff == 0))}  # fmt: skip
    est = np.array([r["numbers"]["estimate_best"]["score"] - r["numbers"]["last_epoch"]["score"] for r in rows])
    out["estimate_favours_last"] = float(np.mean(est < 0))
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: the runs, the halvings per run, the estimate's settings; prints and optionally writes JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders validated on the whole val")
    p.add_argument("--halvings", type=int, default=20, help="class-stratified halvings of val per run")
    p.add_argument("--json", type=Path, default=None, help="write every comparison and the summary here")
    args = p.parse_args(argv)
    settings = EstimateSettings()
    rows = [row for run in args.runs for row in halving_rows(run, args.halvings, settings)]
    summary = summarise(rows)
    report("honest_halvings", {"summary": summary, "rows": rows}, str(args.json) if args.json else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
