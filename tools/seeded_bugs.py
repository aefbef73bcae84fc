"""Plant hand-written bugs one at a time and run the tests a maintainer would run for their module: caught or missed.

Each bug is two files in a bug folder: ``<ID>.old`` (text that occurs exactly once in its module) and
``<ID>.new`` (what replaces it). A list file names, one a line, ``ID FILE TEST...``: the bug, the module it goes
into and the tests to run (``#`` starts a comment; ID ``none`` plants nothing, and its tests must pass). For each
line the working tree (what git tracks or would add) is copied afresh into ``--work``/tree, the bug planted there
and the tests run with ``pytest -x`` from that copy. A bug is CAUGHT when pytest exits 1 because a test failed,
MISSED when it exits 0; anything else (a bug text not found, a module that no longer imports) is an ERROR. The
first failing test is printed, the whole output kept in ``--work``/logs/<ID>.log, and one line a bug appended to
``--work``/results.tsv.

Usage (the round-2 bugs of issue 27; about 30 min on 2 cores)::

    .venv/bin/python tools/seeded_bugs.py benchmarks/seeded_bugs_round2/bugs.txt
    .venv/bin/python tools/seeded_bugs.py benchmarks/seeded_bugs_round2/bugs.txt --only S1 S2
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The environment the Makefile gives the tests; the demo data set is made once in --work and reused.
TEST_ENV = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "NO_ALBUMENTATIONS_UPDATE": "1",
            "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "outputs", "__pycache__", "*.egg-info", ".pytest_cache",
                              ".ruff_cache", ".ipynb_checkpoints")  # fmt: skip


def read_list(path: Path) -> list[tuple[str, str, list[str]]]:
    """The ``(ID, FILE, tests)`` lines of a list file."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            bug, rel, *tests = line.split()
            out.append((bug, rel, tests))
    return out


def copy_tree(source: Path, dest: Path) -> None:
    """Copy the files of ``source`` git tracks or would add (every file, less caches, without git) into ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    if (source / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=source, check=True,
                                capture_output=True).stdout.decode().split("\0")  # fmt: skip
        for rel in filter(None, listed):
            if (source / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / rel, dest / rel)
    else:
        shutil.copytree(source, dest, ignore=SKIP, symlinks=True)


def plant(tree: Path, rel: str, old: str, new: str) -> None:
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``tree/rel``."""
    path = tree / rel
    text = path.read_text(encoding="utf-8")
    if text.count(old) != 1:
        raise ValueError(f"{text.count(old)} occurrences of the bug's old text in {rel} (want 1)")
    path.write_text(text.replace(old, new), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run every listed bug; exit 1 when a bug was missed or its setup failed, or the ``none`` line failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("list", type=Path, help="list file: ID FILE TEST... a line")
    parser.add_argument("--bugs", type=Path, help="folder of <ID>.old / <ID>.new (default: the list file's)")
    parser.add_argument("--source", type=Path, default=ROOT, help="the tree to copy (default: this checkout)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "seeded_bugs", help="scratch folder")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these IDs only (and 'none' if listed)")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    bugs_dir = args.bugs or args.list.parent
    work = args.work.resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **TEST_ENV, "FH_TEST_DEMO_ROOT": str(work / "demo")}
    env.pop("FH_OUTPUTS", None)  # the tests' conftest points it at a temp folder
    failed = False
    for bug, rel, tests in read_list(args.list):
        if args.only and bug not in args.only and bug != "none":
            continue
        tree = work / "tree"
        copy_tree(args.source.resolve(), tree)
        try:
            if bug != "none":
                old = (bugs_dir / f"{bug}.old").read_text(encoding="utf-8")
                plant(tree, rel, old, (bugs_dir / f"{bug}.new").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"{bug}: ERROR {exc}", flush=True)
            failed = True
            continue
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore",
               *args.pytest_args, *tests]  # fmt: skip
        start = time.monotonic()
        done = subprocess.run(cmd, cwd=tree, env={**env, "PYTHONPATH": str(tree)}, capture_output=True, text=True)
        seconds = time.monotonic() - start
        out = done.stdout + done.stderr
        (work / "logs" / f"{bug}.log").write_text(" ".join(cmd) + "\n" + out, encoding="utf-8")
        lines = out.splitlines()
        failing = [ln.split()[1] for ln in lines if ln.startswith(("FAILED ", "ERROR ")) and len(ln.split()) > 1]
        first = failing[0] if failing else ""
        if bug == "none":
            verdict = "PASSED" if done.returncode == 0 else f"FAILED (rc {done.returncode})"
            failed |= done.returncode != 0
        else:
            verdict = {1: "CAUGHT", 0: "MISSED"}.get(done.returncode, f"ERROR (rc {done.returncode})")
            if verdict == "CAUGHT" and not any("::" in name for name in failing):
                verdict = "ERROR (no test failed: the bug broke the import or collection)"
            failed |= done.returncode != 1
        print(f"{bug}: {verdict} ({seconds:.0f} s) {lines[-1] if lines else ''}", flush=True)
        if first:
            print(f"    {first}", flush=True)
        with open(work / "results.tsv", "a", encoding="utf-8") as results:
            results.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{bug}\t{rel}\t{verdict}\t{seconds:.0f}\t{first}\n")
    return int(failed)


if __name__ == "__main__":
    raise SystemExit(main())
