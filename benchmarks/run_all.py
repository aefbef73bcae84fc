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
    ]  # fmt: skip
    if PRODUCTS_B.exists() and not quick:
        # The recorded budget of the ST2 table: 6 recipes x 2 seeds, about an hour on 2 cores.
        recipes = ["benchmarks.st2_recipes", "--data-root", str(PRODUCTS_B), "--img-size", "56", "--epochs", "12",
                   "--seeds", "0", "1", "--json", str(OUT / "st2_recipes.json")]  # fmt: skip
        cmds.append(py + recipes)
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
