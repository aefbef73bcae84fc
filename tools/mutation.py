"""``make mutation``: mutation testing of the core modules with mutmut 3, one module at a time, and a report.

Each module is mutated in its own staging copy of the project (``build/mutation/<module>/``; mutmut writes its
``mutants/`` tree there), never in the working tree, and is checked against the fast tests that cover it
(:data:`MODULES`); mutmut runs, for each mutant, only those of them that call the mutated function. The demo
dataset the tests use is made once (``build/mutation/demo-data``, ``FH_TEST_DEMO_ROOT``) instead of once per
mutant. Results are cached per module: a rerun checks only mutants of functions that changed.

The report (``build/mutation/report.md`` and ``report.json``) gives per module the mutants killed, timed out,
survived and not covered, the ones marked equivalent in ``tools/mutation_equivalent.txt`` (one line each:
``<mutant name>  <why it cannot be told apart>``), and the score: (killed + timed out) / non-equivalent mutants.
The goal is 90 % per module; every survivor is listed with its diff, to be killed by a test or marked.

Usage::

    make mutation                                   # every module (see MODULES), ~45 min on 2 idle cores
    make mutation MODULE=fh_utils/training/tta.py   # one module
    make mutation MUTATION_ARGS=--fresh             # forget cached results
    .venv/bin/python tools/mutation.py --module fh_utils/training/tta.py --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "mutation"
EQUIVALENT_FILE = ROOT / "tools" / "mutation_equivalent.txt"

# Module -> (fast tests covering it, mutant name globs: None = every function of the module, mutants checked by
# the run over all modules: a fixed random sample of that many, or None for all). The samples size the full run to
# about 45 min on an idle 2-core machine (~90 min on a busy one): in a comment, the mutants of the module and the
# estimated worker seconds per mutant (tta.py measured; the others from their tests' durations: module fixtures
# that train a run are rebuilt for every mutant), plus ~1 min per module for mutmut's two clean passes.
# MODULE=... checks every mutant of that module; the report gives each module's time to resize these.
# The schedule's functions (the update counter that gates them is checked by tests/test_engine_skipped_steps.py).
SCHEDULE = [f"fh_utils.training.scheduler.{name}__mutmut_*" for name in ("x_create_scheduler", "x_step_scheduler")]
LOSS_AND_SCHEDULE_TESTS = [
    "tests/test_engine.py::test_logit_adjusted_loss_matches_a_hand_computation",
    "tests/test_engine.py::test_resume_after_an_interruption_replays_the_same_history",
    "tests/test_engine_features.py::test_default_scheduler_is_cosine_restarts_and_resumes_exactly",
    "tests/test_engine_features.py::test_a_zero_head_weight_leaves_that_head_untouched",
    "tests/test_distill.py::test_loss_is_the_weighted_sum_of_label_smoothed_ce_and_t2_scaled_kl",
    "tests/test_engine_losses.py",
    # DRW's class weights in MultiHeadLoss (issue 31): the weighted training loss differs from the plain one.
    "tests/test_recipes.py::test_drw_weights_the_training_loss_from_the_stated_epoch_only",
]
MODULES: dict[str, tuple[list[str], list[str] | None, int | None]] = {
    "fh_utils/data/folds.py": (["tests/test_folds.py"], None, 100),  # 199 mutants, ~3 s
    "fh_utils/data/datasets.py": (["tests/test_datasets.py", "tests/test_wiring.py", "tests/test_folds.py",
                                   "tests/test_sampler_wiring.py"], None,
                                  70),  # 447, ~8 s  # fmt: skip
    "fh_utils/data/cache.py": (["tests/test_datasets.py", "tests/test_preprocessing.py", "tests/test_cache_keys.py"],
                               None, 70),  # 228, ~5 s
    "fh_utils/data/reader.py": (["tests/test_bad_inputs.py", "tests/test_datasets.py", "tests/test_reader_checks.py"],
                                None, 120),  # 806, ~3 s
    "fh_utils/models/ensemble.py": (["tests/test_ensembles.py", "tests/test_wiring.py", "tests/test_ensemble_units.py"],
                                    None, 35),  # 349, ~20 s
    "fh_utils/models/export.py": (["tests/test_export.py", "tests/test_wiring.py", "tests/test_export_units.py"], None,
                                  40),  # 219, ~8 s
    "fh_utils/training/tta.py": (["tests/test_tta.py"], None, None),  # 111, ~2 s (5.7 min, on a busy machine)
    "fh_utils/training/metrics.py": (["tests/test_metrics.py"], None, None),  # 143, ~2 s
    "fh_utils/training/distill.py": (["tests/test_distill.py", "tests/test_wiring.py", "tests/test_distill_units.py"],
                                     None, 25),  # 312, ~15 s
    # The engine's losses and schedule (one module of 150 mutants, sampled 35, until the engine was split).
    "fh_utils/training/losses.py": (LOSS_AND_SCHEDULE_TESTS, None, 20),  # 83, ~10 s
    "fh_utils/training/scheduler.py": (LOSS_AND_SCHEDULE_TESTS, SCHEDULE, 15),  # 67, ~10 s
}
SAMPLE_SEED = 0
COPIED = ["fh_utils", "tests", "notebooks", "pyproject.toml"]  # what the tests need of the project
KILLED, TIMEOUT = {"killed"}, {"timeout", "segfault"}  # segfault: mutmut's name for a SIGKILL after the timeout


def mutant_env() -> dict[str, str]:
    """The environment of the mutants' test runs: one thread each, no hub, the shared demo dataset."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "NO_ALBUMENTATIONS_UPDATE": "1",
           "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "FH_TEST_DEMO_ROOT": str(BUILD / "demo-data" / "demo")}
    env.pop("FH_OUTPUTS", None)  # the tests point it at their own temp folder
    return env


def slug(module: str) -> str:
    """``fh_utils/training/tta.py`` -> ``training.tta``."""
    return module.removeprefix("fh_utils/").removesuffix(".py").replace("/", ".")


def mutmut_config(module: str, tests: list[str]) -> str:
    """The ``[tool.mutmut]`` section of the staging copy: mutate ``module`` only, select from ``tests``."""

    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return "\n".join([
        "", "[tool.mutmut]",
        'source_paths = ["fh_utils"]',
        f"only_mutate = {toml_list([module])}",
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}",
        'pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider", "-p", "no:timeout", "-W", "ignore"]',
        'process_isolation = "forkserver"',  # torch's threads are not fork-safe from a process that ran tests
        "timeout_multiplier = 5.0",
        "timeout_constant = 10.0",
        "use_git_change_detection = false",
        "",
    ])  # fmt: skip


def stage(module: str, tests: list[str]) -> Path:
    """Copy the project's sources into the module's staging folder, with mutmut configured for ``module``.

    mtimes are kept, so mutmut re-mutates only what changed.
    """
    folder = BUILD / slug(module)
    folder.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src, dst = ROOT / name, folder / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst)
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (folder / "pyproject.toml").write_text(text + mutmut_config(module, tests), encoding="utf-8")
    return folder


def mutant_names(module: str, folder: Path) -> list[str]:
    """Every mutant mutmut makes of ``module`` (as :data:`MODULES` filters them), in a stable order."""
    from fnmatch import fnmatch

    here = os.getcwd()
    os.chdir(folder)  # mutmut reads its configuration from the working directory
    try:
        from mutmut.mutation.file_mutation import mutate_file_contents

        made = mutate_file_contents(module, (folder / module).read_text(encoding="utf-8")).mutant_names
    finally:
        os.chdir(here)
    prefix = module.removesuffix(".py").replace("/", ".")
    globs = MODULES[module][1]
    return sorted(n for n in (f"{prefix}.{m}" for m in made) if not globs or any(fnmatch(n, g) for g in globs))


def sample_of(module: str, folder: Path, seed: int = SAMPLE_SEED) -> list[str] | None:
    """The fixed random sample of mutants the run over all modules checks (None: all of them)."""
    import random

    size = MODULES[module][2]
    names = mutant_names(module, folder)
    return None if size is None or size >= len(names) else sorted(random.Random(seed).sample(names, size))


def run_module(module: str, jobs: int, env: dict[str, str], fresh: bool = False,
               sample: bool = False, seed: int = SAMPLE_SEED) -> tuple[Path, float]:  # fmt: skip
    """Run mutmut on one module in its staging folder; return the folder and the wall time, s.

    mutmut keeps a mutant's result until its function changes; the survivors of an earlier run are checked again
    (named explicitly), so a test added since then is credited. ``fresh`` drops every cached result first;
    ``sample`` checks the module's sample only (:data:`MODULES`).
    """
    tests, names, _ = MODULES[module]
    folder = BUILD / slug(module)
    if fresh and (folder / "mutants").exists():
        shutil.rmtree(folder / "mutants")
    earlier = [n for n, s in results(module, folder).items() if s not in KILLED | TIMEOUT]
    folder = stage(module, tests)
    picked = sample_of(module, folder, seed) if sample else None
    if picked is not None:  # named mutants always run: leave out those already killed
        done = results(module, folder)
        names = [n for n in picked if done.get(n) not in KILLED | TIMEOUT]
        earlier = []
        (folder / "sample.json").write_text(json.dumps(picked) + "\n", encoding="utf-8")
    elif (folder / "sample.json").exists():
        (folder / "sample.json").unlink()
    mutmut = [str(Path(sys.executable).with_name("mutmut")), "run", "--max-children", str(jobs)]
    start = time.perf_counter()
    log = folder / "mutmut.log"
    runs = [mutmut + (names or [])] if names != [] else []  # [] : every sampled mutant is already killed
    if earlier:
        runs.append(mutmut + earlier)
    with open(log, "w", encoding="utf-8") as out:
        for cmd in runs:
            shown = " ".join(cmd[1:5]) + (f" ... ({len(cmd) - 4} names)" if len(cmd) > 5 else "")
            print(f"[mutation] {module}: {shown} (in {folder.relative_to(ROOT)})", flush=True)
            done = subprocess.run(cmd, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                print(f"[mutation] {module}: mutmut exited {done.returncode}; see {log}", flush=True)
        # A changed source file makes mutmut drop the cached results of the whole file when it regenerates the
        # mutants, after the names above were picked: check the sampled ones left without a result once more.
        unchecked = [n for n, s in results(module, folder).items() if s == "not checked"] if picked else []
        if unchecked:
            print(f"[mutation] {module}: {len(unchecked)} sampled mutants lost their cached result; checking them",
                  flush=True)  # fmt: skip
            subprocess.run(mutmut + unchecked, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    return folder, time.perf_counter() - start


def read_equivalent() -> dict[str, str]:
    """Mutants marked equivalent: ``{name: reason}`` from :data:`EQUIVALENT_FILE`."""
    marks = {}
    if EQUIVALENT_FILE.exists():
        for line in EQUIVALENT_FILE.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                marks[name] = reason.strip()
    return marks


def results(module: str, folder: Path) -> dict[str, str]:
    """``{mutant name: status}`` from mutmut's meta file of ``module`` (names filtered as :data:`MODULES` says)."""
    from fnmatch import fnmatch

    from mutmut.stats import status_by_exit_code

    meta = folder / "mutants" / (module + ".meta")
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    names = MODULES[module][1]
    sample = folder / "sample.json"
    picked = set(json.loads(sample.read_text(encoding="utf-8"))) if sample.exists() else None
    return {k: status_by_exit_code[v] for k, v in codes.items()
            if (not names or any(fnmatch(k, n) for n in names)) and (picked is None or k in picked)}  # fmt: skip


def show(folder: Path, name: str, env: dict[str, str]) -> str:
    """The diff of one mutant (``mutmut show``)."""
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    done = subprocess.run([mutmut, "show", name], cwd=folder, env=env, capture_output=True, text=True)
    return "\n".join(line for line in done.stdout.splitlines() if line.startswith(("-", "+")) and
                     not line.startswith(("---", "+++")))  # fmt: skip


def summarise(module: str, status: dict[str, str], marks: dict[str, str], seconds: float | None,
              population: int) -> dict:  # fmt: skip
    """Counts and score of one module (``population``: its mutants, of which ``status`` may be a sample)."""
    equivalent = sorted(n for n, s in status.items() if n in marks and s not in KILLED | TIMEOUT)
    counted = {n: s for n, s in status.items() if n not in equivalent}
    killed = sum(s in KILLED for s in counted.values())
    timeout = sum(s in TIMEOUT for s in counted.values())
    survivors = sorted(n for n, s in counted.items() if s not in KILLED | TIMEOUT)
    return {
        "module": module, "mutants": len(status), "killed": killed, "timeout": timeout,
        "survived": sum(s == "survived" for s in counted.values()),
        "no_tests": sum(s == "no tests" for s in counted.values()),
        "other": len(survivors) - sum(s in ("survived", "no tests") for s in counted.values()),
        "equivalent": len(equivalent), "stale_marks": sorted(n for n in marks if n in status and n not in equivalent),
        "score": (killed + timeout) / len(counted) if counted else None,
        "population": population, "interval": wilson(killed + timeout, len(counted)) if counted else None,
        "seconds": None if seconds is None else round(seconds, 1),
        "survivors": {n: counted[n] for n in survivors},
    }  # fmt: skip


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a share ``k / n`` (the score of a sample of mutants)."""
    p, d = k / n, 1 + z * z / n
    half = z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5
    return (p + z * z / (2 * n) - half) / d, (p + z * z / (2 * n) + half) / d


def write_report(rows: list[dict], diffs: dict[str, str], marks: dict[str, str]) -> Path:
    """``build/mutation/report.md`` (and ``report.json``) over every module run so far."""
    lines = ["# Mutation testing (mutmut 3)", "",
             "score = (killed + timed out) / (mutants - equivalent); goal 90 % per module. \"n of N\": a fixed "
             "random sample of n mutants (its score's 95 % interval in brackets); time: the last run's.", "",
             "| module | mutants | killed | timed out | survived | no tests | other | equivalent | score | time |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        score = "-" if r["score"] is None else f"{100 * r['score']:.1f} %"
        if r["score"] is not None and r["mutants"] < r["population"]:
            lo, hi = r["interval"]
            score += f" ({100 * lo:.0f}-{100 * hi:.0f} %)"
        took = "-" if r["seconds"] is None else f"{r['seconds'] / 60:.1f} min"
        mutants = str(r["mutants"]) + (f" of {r['population']}" if r["mutants"] < r["population"] else "")
        lines.append(f"| {r['module']} | {mutants} | {r['killed']} | {r['timeout']} | {r['survived']} | "
                     f"{r['no_tests']} | {r['other']} | {r['equivalent']} | {score} | {took} |")  # fmt: skip
    for r in rows:
        if r["survivors"] or r["stale_marks"]:
            lines += ["", f"## {r['module']}: {len(r['survivors'])} not killed", ""]
            for name, status in r["survivors"].items():
                lines += [f"- `{name}` ({status})", "", "```diff", diffs.get(name, "").strip(), "```"]
            for name in r["stale_marks"]:
                lines.append(f"- `{name}` is marked equivalent ({marks[name]}) but was killed: drop the mark")
    BUILD.mkdir(parents=True, exist_ok=True)
    (BUILD / "report.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    path = BUILD / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the modules asked (default: all), then write the report over every module with results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(MODULES), help="one module (repeatable)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants checked at once")
    parser.add_argument("--report-only", action="store_true", help="write the report from cached results")
    parser.add_argument("--fresh", action="store_true", help="forget cached results: check every mutant again")
    parser.add_argument("--all-mutants", action="store_true", help="no samples: every mutant of every module")
    parser.add_argument("--sampled", action="store_true",
                        help="with --module: the module's sample only (as the run over all modules checks it)")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED,
                        help="seed of the samples (another seed: a fresh sample, to check a score held out)")
    args = parser.parse_args(argv)
    env = mutant_env()
    times = {}
    previous = {r["module"]: r for r in json.loads((BUILD / "report.json").read_text())} if (
        BUILD / "report.json").exists() else {}  # fmt: skip
    if not args.report_only:
        sys.path.insert(0, str(ROOT))
        from fh_utils.prep.demo import ensure_demo_dataset

        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import TEST_DEMO_SCALE

        # Made here once: the mutants' test sessions then all find it (none of them races to make it).
        ensure_demo_dataset(env["FH_TEST_DEMO_ROOT"], seed=0, scale=TEST_DEMO_SCALE, progress=False)
        sample = (args.sampled or not args.module) and not args.all_mutants  # one module asked: all its mutants
        for module in args.module or list(MODULES):
            _, times[module] = run_module(module, args.jobs, env, fresh=args.fresh, sample=sample, seed=args.seed)
    marks = read_equivalent()
    rows, diffs = [], {}
    for module in MODULES:
        folder = BUILD / slug(module)
        status = results(module, folder)
        if not status:
            continue
        seconds = times.get(module, previous.get(module, {}).get("seconds"))
        row = summarise(module, status, marks, seconds, len(mutant_names(module, folder)))
        diffs.update({name: show(folder, name, env) for name in row["survivors"]})
        rows.append(row)
        score = "-" if row["score"] is None else f"{100 * row['score']:.1f} %"
        print(f"[mutation] {module}: {row['mutants']} mutants, {row['killed']} killed, {row['timeout']} timed out, "
              f"{row['survived']} survived, {row['no_tests']} not covered, {row['equivalent']} equivalent: "
              f"{score}", flush=True)  # fmt: skip
    path = write_report(rows, diffs, marks)
    print(f"[mutation] report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
