"""Shared fixtures: outputs redirected to a temp folder, a small demo dataset built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The test process's environment, as the Makefile and the papermill runner set it for theirs (the package never
# writes os.environ): sleeping OpenMP threads (spinning ones starve the kernels and workers the tests start),
# no albumentations update check, no hub (tests build models with pretrained=False or a local cache). Set in
# pytest_configure, before any test module imports torch.
TEST_ENV = {"MPLBACKEND": "Agg", "OMP_WAIT_POLICY": "PASSIVE", "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1",
            # Importing rembg compiles pymatting's numba kernels (its alpha matting, which no test runs): about
            # 50 s on a fresh .venv, whose numba cache is empty. Uncompiled, they cost nothing at import.
            "NUMBA_DISABLE_JIT": "1"}  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    for key, value in TEST_ENV.items():
        os.environ.setdefault(key, value)

# Scale of the session's demo dataset: big enough to learn from, small enough for CI.
TEST_DEMO_SCALE = 0.3


@pytest.fixture(autouse=True, scope="session")
def _outputs_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Everything runs write goes to a temp folder, never to the user's outputs/."""
    out = tmp_path_factory.mktemp("outputs")
    old = os.environ.get("FH_OUTPUTS")
    os.environ["FH_OUTPUTS"] = str(out)
    yield out
    if old is None:
        os.environ.pop("FH_OUTPUTS", None)
    else:
        os.environ["FH_OUTPUTS"] = old


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in demo dataset at a small scale (generated once per test session).

    ``FH_TEST_DEMO_ROOT`` names a folder to make it in once and reuse while its manifest matches (``make
    mutation`` runs one pytest session per mutant); the tests only read it and write beside it.
    """
    from fh_utils.prep.demo import ensure_demo_dataset, generate_demo_dataset

    if os.environ.get("FH_TEST_DEMO_ROOT"):
        return ensure_demo_dataset(os.environ["FH_TEST_DEMO_ROOT"], seed=0, scale=TEST_DEMO_SCALE, progress=False)
    root = tmp_path_factory.mktemp("data") / "demo"
    return generate_demo_dataset(root, seed=0, scale=TEST_DEMO_SCALE, progress=False)
