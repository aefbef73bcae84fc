"""``make bench``: run every benchmark in turn, each in its own process (so none slows another), and write
their JSON figures to outputs/bench/. Copy the figures into benchmarks/RESULTS.md with the date.

    python -m benchmarks.run_all [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "outputs" / "bench"
PRODUCTS_B = ROOT.parent / "shared" / "data" / "products_b"


def commands(quick: bool) -> list[list[str]]:
    py = [sys.executable, "-m"]
    cmds = [
        py + ["benchmarks.loader_throughput", "--images", "60" if quick else "120", "--json", str(OUT / "loader.json")],
        py + ["benchmarks.train_throughput", "--img-size", "112", "--json", str(OUT / "train_112.json")],
        py + ["benchmarks.train_throughput", "--img-size", "224", "--batch-size", "16", "--steps", "4",
              "--scale", "0.05", "--json", str(OUT / "train_224.json")],
        py + ["benchmarks.score_throughput", "--json", str(OUT / "score.json")],
        [sys.executable, "benchmarks/bench_background.py", "--n", "12" if quick else "24", "--n-full", "4",
         "--json", str(OUT / "background.json")],
        py + ["benchmarks.gpu_check", "--steps", "3", "--batch-size", "8", "--img-size", "112",
              "--json", str(OUT / "gpu_check.json")],
        # Sweeps (issue 11): overhead of the sweep machinery, and trials per hour with 1 vs 2 workers.
        py + ["benchmarks.sweep_overhead", "overhead", "--trials", "2" if quick else "4",
              "--json", str(OUT / "sweep_overhead.json")],
        py + ["benchmarks.sweep_overhead", "concurrency", "--trials", "2" if quick else "4", "--workers", "1", "2",
              "--json", str(OUT / "sweep_concurrency.json")],
        # Watching runs (issue 21): what TensorBoard events and the run-state heartbeat cost an epoch (bound: 1 %).
        py + ["benchmarks.watch_overhead", "--repeats", "1" if quick else "3", "--json", str(OUT / "watch.json")],
    ]  # fmt: skip
    if PRODUCTS_B.exists() and not quick:
        # The recorded budget of the ST2 table: 6 recipes x 2 seeds, about an hour on 2 cores.
        recipes = ["benchmarks.st2_recipes", "--data-root", str(PRODUCTS_B), "--img-size", "56", "--epochs", "12",
                   "--seeds", "0", "1", "--json", str(OUT / "st2_recipes.json")]  # fmt: skip
        cmds.append(py + recipes)
        # The recorded budget of the ST1 table (ETRI baseline, CPU profile, its ensemble teacher, the distilled
        # student): 6 trainings at 64 px, 4 epochs, 1,500 rows; about 25 minutes on 2 shared cores.
        st1 = ["benchmarks.st1_recipes", "--data-root", str(PRODUCTS_B), "--img-size", "64", "--epochs", "4",
               "--train-rows", "1500", "--seeds", "0", "1", "--json", str(OUT / "st1_recipes.json")]  # fmt: skip
        cmds.append(py + st1)
        # ST2 ensembles of 3 and 5 members vs one fh_colornet, TTA, scoring time of 900 images (issue 12).
        ensembles = ["benchmarks.st2_ensembles", "--data-root", str(PRODUCTS_B), "--epochs", "3", "--train-rows",
                     "1000", "--variants", "s0", "s1", "s2", "px72", "lab",
                     "--json", str(OUT / "st2_ensembles.json")]  # fmt: skip
        cmds.append(py + ensembles)
        st2_run = ROOT / "outputs" / "bench_runs" / "st2_ensembles" / "runs" / "st2ens-s0-e3-n1000"
        tta_export = ["benchmarks.tta_export", "--data-root", str(PRODUCTS_B), "--img-size", "64", "--epochs", "2",
                      "--limit", "800", "--st2-run", str(st2_run), "--json", str(OUT / "tta_export.json")]  # fmt: skip
        cmds.append(py + tta_export)
        # Notebook 04's default recipe over 5 seeds as a sweep (issue 11): mean, spread, best seed.
        seeds = ["benchmarks.sweep_overhead", "seeds", "--data-root", str(PRODUCTS_B), "--seeds", "0", "1", "2", "3",
                 "4", "--epochs", "12", "--json", str(OUT / "sweep_seeds.json")]  # fmt: skip
        cmds.append(py + seeds)
        # The same seeded TPE search without and with the median pruner: wall time and epochs saved, best found.
        pruning = ["benchmarks.sweep_overhead", "pruning", "--data-root", str(PRODUCTS_B), "--trials", "8",
                   "--epochs", "4", "--json", str(OUT / "sweep_pruning.json")]  # fmt: skip
        cmds.append(py + pruning)
        # The training loader's crops/s by workers (0, 1, 2) and input side, warm cache (issue 22): ~2 minutes.
        cmds.append(py + ["benchmarks.loader_throughput", "--scaling", "--data-root", str(PRODUCTS_B), "--workers",
                          "0", "1", "2", "--sizes", "56", "112", "224", "--limit", "2000", "--epochs", "2",
                          "--json", str(OUT / "loader_scaling.json")])  # fmt: skip
        # The dry run of the default ST2 submission on 900 images in a fresh interpreter (issue 20).
        cmds.append(py + ["benchmarks.submission_dry_run", "--data-root", str(PRODUCTS_B), "--images", "900",
                          "--json", str(OUT / "submission_dry_run.json")])  # fmt: skip
    return cmds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller inputs, no ST2 recipe training")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    failed = 0
    for cmd in commands(args.quick):
        print("$", " ".join(cmd), flush=True)
        failed += subprocess.run(cmd, cwd=ROOT).returncode != 0
    print(f"figures in {OUT}; {failed} benchmark(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
