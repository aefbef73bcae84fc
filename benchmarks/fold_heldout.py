"""A fold sweep's cross-validated score against photos nobody chose on (issue 29.8, its fold-sweep part).

    python -m benchmarks.heldout --src ../shared/data/products_b --dest outputs/bench_data/products_b-heldout
    python -m fh_utils sweep SPEC --workers 1          # folds of train + the choosing half (the spec names the root)
    python -m fh_utils oof SWEEP                       # out-of-fold file, cross-validated score, epoch count
    python -m fh_utils run notebooks/04_train_st2.ipynb full.ipynb -r data_root ROOT -r split full \\
        -r epochs_from SWEEP -r run_name FULL         # the full fit a team would submit
    python -m benchmarks.fold_heldout --sweep SWEEP --full FULL --json fold_heldout.json

The held-out root's ``test`` split (``*_test.csv``) never entered the sweep, its cross-validation or the full fit.
Reported: the sweep's nested cross-validated score with its 90 % interval and the optimistic score at the chosen
epoch count; the unseen score of each fold's model (its rule's checkpoint) and of the full fit; the signed and
absolute error of the cross-validated score against each, and whether its interval covers them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import report
from benchmarks.honest_estimates import held_out_score
from fh_utils.io import read_json
from fh_utils.paths import runs_dir
from fh_utils.runs import CONFIG_FILE, model_file
from fh_utils.tasks import get_task
from fh_utils.workbook.oof import OOF_DIR, OOF_REPORT


def unseen_score(run: Path) -> float:
    """The unseen-half score of the checkpoint the run submits (its rule's file)."""
    config = read_json(run / CONFIG_FILE)
    root = Path(config["data"]["data_root"])
    return held_out_score(run, model_file(run), get_task(config["task"]["name"], root), root)


def compare(sweep: Path, full: Path | None) -> dict:
    """The sweep's cross-validated score beside the unseen scores of its fold models and of the full fit."""
    groups = [g for g in read_json(sweep / OOF_DIR / OOF_REPORT)["groups"] if g.get("result")]
    if len(groups) != 1:
        raise SystemExit(f"{sweep}: expected one scored fold set, found {len(groups)}")
    result = groups[0]["result"]
    cv = result["score"]
    folds = sorted(p for p in sweep.iterdir() if (p / CONFIG_FILE).exists())
    per_fold = {read_json(p / CONFIG_FILE)["data"]["split"]: unseen_score(p) for p in folds}
    targets = {"fold_models_mean": float(np.mean(list(per_fold.values())))}
    if full is not None:
        targets["full_fit"] = unseen_score(full)
    errors = {name: {"unseen": value, "signed_error": cv["score"] - value, "abs_error": abs(cv["score"] - value),
                     "covered": bool(cv["low"] <= value <= cv["high"])}
              for name, value in targets.items()}  # fmt: skip
    return {"sweep": sweep.name, "full_fit": full.name if full else None, "cross_validated": cv,
            "at_chosen_epochs": result["at_chosen"], "epochs": result["epochs"], "rows": result["rows"],
            "unseen_per_fold": per_fold, "against": errors}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Command line: the sweep (and the full fit) under the runs folder; prints and optionally writes JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", required=True, help="the fold sweep's folder name under outputs/runs")
    p.add_argument("--full", default="", help="the full fit's run name (split=full, epochs_from the sweep)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    full = runs_dir() / args.full if args.full else None
    report("fold_heldout", compare(runs_dir() / args.sweep, full), str(args.json) if args.json else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
