"""Check named mutants against chosen tests, without a whole ``make mutation`` run: killed or survived.

For the work of killing survivors: after ``tools/mutation.py`` has made a module's mutants (its staging folder
``build/mutation/<module>/mutants/``), this copies the working tree's ``tests/`` there and runs the given tests
once per mutant with ``MUTANT_UNDER_TEST`` set, as mutmut does. A mutant is killed when a test fails. The
verdict that counts is still ``tools/mutation.py``'s (it reruns the survivors); this is the quick loop.

Usage::

    .venv/bin/python tools/mutant_check.py fh_utils/data/folds.py x_parse_split__mutmut_3 -- tests/test_folds.py
    .venv/bin/python tools/mutant_check.py fh_utils/data/folds.py --survivors -- tests/test_folds.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation import BUILD, KILLED, ROOT, TIMEOUT, mutant_env, results, slug  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the tests after ``--`` once per mutant; print one verdict a line; exit 1 if any survived."""
    argv = list(sys.argv[1:] if argv is None else argv)
    tests = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", help="e.g. fh_utils/data/folds.py")
    parser.add_argument("mutants", nargs="*", help="mutant names, with or without the module prefix")
    parser.add_argument("--survivors", action="store_true", help="every mutant the last run did not kill")
    args = parser.parse_args(argv)
    folder = BUILD / slug(args.module)
    mutants_dir = folder / "mutants"
    if not mutants_dir.is_dir():
        parser.error(f"{mutants_dir} does not exist: run tools/mutation.py --module {args.module} first")
    if not tests:
        parser.error("name the tests to run after --")
    prefix = args.module.removesuffix(".py").replace("/", ".") + "."
    names = [n if n.startswith(prefix) else prefix + n for n in args.mutants]
    if args.survivors:
        names += [n for n, s in results(args.module, folder).items() if s not in KILLED | TIMEOUT]
    shutil.copytree(ROOT / "tests", mutants_dir / "tests", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    env = mutant_env()
    pytest = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore", *tests]
    verdicts = {}
    for name in ["none", *names]:  # "none": the tests must pass on the original code
        done = subprocess.run(pytest, cwd=mutants_dir, env={**env, "MUTANT_UNDER_TEST": name},
                              capture_output=True, text=True)  # fmt: skip
        verdicts[name] = "killed" if done.returncode == 1 else ("survived" if done.returncode == 0 else
                                                                f"error {done.returncode}")  # fmt: skip
        if name == "none" and done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-2000:])
            print("the tests fail on the original code: fix them first")
            return 2
        if name != "none":
            print(f"{verdicts[name]:9} {name}", flush=True)
    (folder / "check.json").write_text(json.dumps(verdicts, indent=1) + "\n", encoding="utf-8")
    return int(any(v != "killed" for k, v in verdicts.items() if k != "none"))


if __name__ == "__main__":
    raise SystemExit(main())
