"""Shared fixtures: outputs redirected to a temp folder, a small demo dataset built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

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
    """The built-in demo dataset at a small scale (generated once per test session)."""
    from fh_utils.data.demo import generate_demo_dataset

    root = tmp_path_factory.mktemp("data") / "demo"
    return generate_demo_dataset(root, seed=0, scale=TEST_DEMO_SCALE, progress=False)
