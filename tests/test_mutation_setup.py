"""make mutation's set-up (tools/mutation.py) stays runnable: modules, their tests and the marks all exist.

The mutation run itself is not part of make test (about an hour); this checks in a second what would make it
fail or silently test nothing: a renamed module or test, a test id that names no test, a broken mutmut config.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("fh_mutation_tool", ROOT / "tools" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_core_module_is_mutated_against_tests_that_exist(mutation):
    assert set(mutation.MODULES) == {
        "fh_utils/data/folds.py", "fh_utils/data/datasets.py", "fh_utils/data/cache.py", "fh_utils/data/reader.py",
        "fh_utils/models/ensemble.py", "fh_utils/models/export.py", "fh_utils/training/tta.py",
        "fh_utils/training/metrics.py", "fh_utils/training/distill.py", "fh_utils/training/losses.py",
        "fh_utils/training/scheduler.py",
    }  # fmt: skip
    assert len({mutation.slug(m) for m in mutation.MODULES}) == len(mutation.MODULES)
    for module, (tests, _, sample) in mutation.MODULES.items():
        assert (ROOT / module).is_file(), module
        assert sample is None or sample > 0, module
        for test in tests:
            path, _, name = test.partition("::")
            assert (ROOT / path).is_file(), test
            if name:
                functions = {n.name for n in ast.walk(ast.parse((ROOT / path).read_text())) if
                             isinstance(n, ast.FunctionDef)}  # fmt: skip
                assert name in functions, test


def test_mutant_globs_name_functions_of_their_module(mutation):
    for module, (_, globs, _) in mutation.MODULES.items():
        source = (ROOT / module).read_text()
        prefix = module.removesuffix(".py").replace("/", ".") + "."
        for glob in globs or []:
            assert glob.startswith(prefix), (module, glob)
            name = glob.removeprefix(prefix).removesuffix("__mutmut_*")
            if name.startswith("xǁ"):
                assert re.search(rf"^class {name.split('ǁ')[1]}\b", source, re.M), glob
            else:
                assert re.search(rf"^def {name.removeprefix('x_')}\(", source, re.M), glob


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_the_staging_config_is_valid_toml_for_mutmut(mutation):
    import tomllib

    config = tomllib.loads(mutation.mutmut_config("fh_utils/training/tta.py", ["tests/test_tta.py"]))["tool"]["mutmut"]
    assert config["only_mutate"] == ["fh_utils/training/tta.py"] and config["source_paths"] == ["fh_utils"]
    assert config["pytest_add_cli_args_test_selection"] == ["tests/test_tta.py"]
    assert config["process_isolation"] == "forkserver"


def test_equivalent_marks_name_a_module_and_say_why(mutation):
    marks = mutation.read_equivalent()
    prefixes = tuple(m.removesuffix(".py").replace("/", ".") + "." for m in mutation.MODULES)
    for name, reason in marks.items():
        assert name.startswith(prefixes) and "__mutmut_" in name, name
        assert len(reason.split()) >= 4, (name, reason)


def test_wilson_interval_brackets_the_share(mutation):
    lo, hi = mutation.wilson(18, 20)
    assert lo < 0.9 < hi and hi < 1 and lo == pytest.approx(0.699, abs=1e-3)
    assert mutation.wilson(20, 20)[1] == pytest.approx(1.0)
