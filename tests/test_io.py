"""The atomic writer: whole files only, and the permissions a plain write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fh_utils.io import TMP_SUFFIX, atomic_write, read_json, write_json, write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_gets_umask_mode_not_mkstemp_0600(tmp_path, umask_022):
    path = write_json(tmp_path / "metrics.json", {"score": 0.5})
    assert _mode(path) == 0o644
    assert read_json(path) == {"score": 0.5}


def test_existing_file_keeps_its_mode(tmp_path, umask_022):
    path = tmp_path / "submission.csv"
    path.write_text("old")
    path.chmod(0o664)
    write_text(path, "new")
    assert path.read_text() == "new"
    assert _mode(path) == 0o664


def test_failed_write_leaves_old_content_and_no_tmp(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch\n1\n")

    def broken(tmp: Path) -> None:
        tmp.write_text("epo")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "epoch\n1\n"
    assert not list(tmp_path.glob(f"*{TMP_SUFFIX}"))
