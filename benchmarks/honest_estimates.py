"""How far each reported number lands from the score on photos nobody chose on (issue 29, item 8).

    python -m benchmarks.heldout --src ../shared/data/products_b --dest outputs/bench_data/products_b-heldout
    for s in 0 1 2 3 4; do python -m fh_utils run notebooks/04_train_st2.ipynb out.ipynb \\
        -p data_root outputs/bench_data/products_b-heldout -p seed $s -r run_name honest-st2-s$s; done
    python -m benchmarks.honest_estimates --runs outputs/runs/honest-st2-s* --json honest.json

Each run trained on train and chose on the val half (``*_val.csv``); the other half (``*_test.csv``, labels kept)
was never used. For every run: the best-epoch, last-epoch, mean-of-last-three and honest estimates from its
stored epochs (``val_epochs.npz``), each with its 90 % interval, and the held-out score of the best-epoch
checkpoint (``best.pt``) and of the last epoch's (``checkpoints/epoch_NNN.pt``). Then per number: the mean signed
and absolute error against the held-out score of the checkpoint it stands for, and how often its interval covers it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import report
from fh_utils.data.reader import read_split
from fh_utils.inference.predictor import Predictor
from fh_utils.io import read_json
from fh_utils.models.ensemble import member_from_run
from fh_utils.runs import CONFIG_FILE, EPOCH_PREDICTIONS_FILE
from fh_utils.scoring.estimates import Scorer
from fh_utils.scoring.report import run_estimates
from fh_utils.tasks import get_task

CHECKPOINT_OF = {"best_epoch": "best", "last_epoch": "last", "last3": "last", "estimate_best": "best",
                 "estimate_last": "last"}  # fmt: skip


def held_out_score(run: Path, weights: Path, task, root: Path) -> float:
    """The task score of one checkpoint on the data root's ``test`` split (the unseen half)."""
    member = member_from_run(run, checkpoint=weights)
    rows = read_split(root, task, "test")
    probs = Predictor([member], batch_size=128).predict_rows(rows, root).probabilities
    targets = np.stack([rows[h.column].to_numpy() for h in task.heads], 1)
    scorer = Scorer(task, targets)
    return scorer.score(scorer.correct(probs))


def evaluate_run(run: Path) -> dict:
    """Every reported number of one run, with the held-out score of the checkpoint it stands for."""
    config = read_json(run / CONFIG_FILE)
    root = Path(config["data"]["data_root"])
    task = get_task(config["task"]["name"], root)
    best_rule, last_rule = run_estimates(run, task, "best"), run_estimates(run, task, "last")
    last_epoch = int(best_rule["last_epoch"]["epoch"])
    held = {"best": held_out_score(run, run / "best.pt", task, root),
            "last": held_out_score(run, run / "checkpoints" / f"epoch_{last_epoch:03d}.pt", task, root)}  # fmt: skip
    numbers = {"best_epoch": best_rule["best_epoch"], "last_epoch": best_rule["last_epoch"],
               "last3": best_rule["last3"], "estimate_best": best_rule["estimate"],
               "estimate_last": last_rule["estimate"]}  # fmt: skip
    return {"run": run.name, "held_out": held, "numbers": numbers}


def summarise(results: list[dict]) -> dict:
    """Per number: mean signed and absolute error against its checkpoint's held-out score, interval coverage."""
    out = {}
    for name, rule in CHECKPOINT_OF.items():
        errors = [r["numbers"][name]["score"] - r["held_out"][rule] for r in results]
        covered = [r["numbers"][name]["low"] <= r["held_out"][rule] <= r["numbers"][name]["high"] for r in results]
        out[name] = {"checkpoint": rule, "mean_signed_error": float(np.mean(errors)),
                     "mean_abs_error": float(np.mean(np.abs(errors))),
                     "covered": f"{sum(covered)}/{len(covered)}"}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders (default: none)")
    parser.add_argument("--json", default=None, help="also write the figures here (default: print only)")
    args = parser.parse_args()
    runs = [r for r in args.runs if (r / EPOCH_PREDICTIONS_FILE).exists()]
    results = [evaluate_run(r) for r in runs]
    report("honest_estimates", {"runs": results, "summary": summarise(results)}, args.json)


if __name__ == "__main__":
    main()
