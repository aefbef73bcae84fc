"""Long jobs killed part-way (SIGKILL: no cleanup code runs) must resume cleanly.

Each test builds its own data with the helpers of this file, so tests can be added independently.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from fh_utils.data.images import load_image
from fh_utils.io import TMP_SUFFIX
from fh_utils.prep.background import MANIFEST_NAME, create_nobg_tree

REPO = Path(__file__).resolve().parent.parent
BOX_COLUMNS = ["BBox_xmin", "BBox_ymin", "BBox_xmax", "BBox_ymax"]


def _photo(seed: int, h: int = 480, w: int = 360) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A coloured ellipse (the garment) on random rectangles; returns the image and the garment box."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), rng.integers(100, 200, 3), np.uint8)
    for _ in range(20):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.rectangle(img, (x, y), (x + 40, y + 25), tuple(int(v) for v in rng.integers(60, 200, 3)), -1)
    cx, cy, ax, ay = w // 2, h // 2, w // 6, h // 5
    cv2.ellipse(img, (cx, cy), (ax, ay), 0, 0, 360, (200, 30, 40), -1)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return img, (cx - ax - 8, cy - ay - 8, cx + ax + 9, cy + ay + 9)


def _make_data_root(tmp_path: Path, n: int) -> Path:
    """``n`` train images (jpg and png, a folder name with a space) listed in a sub-task 1 CSV."""
    root = tmp_path / "data"
    rows = []
    for i in range(n):
        name = f"2COAT 2019/CO{i:05d}-1.{'png' if i % 4 == 0 else 'jpg'}"
        img, box = _photo(i)
        ok, buf = cv2.imencode(Path(name).suffix, img[:, :, ::-1])
        assert ok
        (root / "train" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "train" / name).write_bytes(buf.tobytes())
        rows.append([name, *box, 1, 2, 0])
    columns = ["image_name", *BOX_COLUMNS, "Daily", "Gender", "Embellishment"]
    pd.DataFrame(rows, columns=columns).to_csv(root / "Fashion-How24_sub1_train.csv", index=False)
    return root


def _finished_outputs(out_root: Path) -> dict[str, tuple[int, int]]:
    """Output images (not temp files, not the manifest) -> (mtime_ns, inode)."""
    return {
        str(p.relative_to(out_root)): (p.stat().st_mtime_ns, p.stat().st_ino)
        for p in out_root.rglob("*")
        if p.is_file() and not p.name.endswith(TMP_SUFFIX) and p.name != MANIFEST_NAME
    }


def _start_python(code: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """Poll until ``ready()`` is true, then SIGKILL ``proc``; fail if it ends or times out first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(
                f"the process ended (rc={proc.returncode}) before the kill:\n{err.decode()[-2000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"nothing to interrupt after {timeout:.0f} s")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_background_removal_killed_then_resumed(tmp_path):
    n = 40
    root = _make_data_root(tmp_path, n)
    out = tmp_path / "nobg"
    code = (
        "from fh_utils.prep.background import create_nobg_tree; "
        f"create_nobg_tree({str(root)!r}, {str(out)!r}, method='grabcut', workers=1, progress=False)"
    )
    proc = _start_python(code)
    _kill_when(proc, lambda: out.is_dir() and len(_finished_outputs(out)) >= 3)
    assert proc.returncode == -signal.SIGKILL

    before = _finished_outputs(out)
    assert 3 <= len(before) < n, "the kill should land part-way"
    for rel in before:  # written atomically: whatever exists is whole
        assert load_image(out / rel).shape == (480, 360, 3)

    result = create_nobg_tree(root, out, method="grabcut", workers=1, progress=False)
    assert result["n_failed"] == 0, result["failures"]
    assert result["n_skipped"] == len(before) and result["n_done_now"] == n - len(before)
    assert not list(out.rglob(f"*{TMP_SUFFIX}")), "temp files of the killed run are removed"
    after = _finished_outputs(out)
    assert len(after) == n
    assert {rel: after[rel] for rel in before} == before, "images finished before the kill are not redone"
    for rel in after:
        assert load_image(out / rel).shape == (480, 360, 3)


_FIT_SCRIPT = """
import sys
from fh_utils.data import datasets
from fh_utils.data.datasets import create_loaders
from fh_utils.training.engine import fit, seed_everything
from fh_utils.models.factory import create_model
root, run_dir, resume, marker = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
if marker:  # one byte per training image served: the parent sees which step of which epoch is running
    out = open(marker, "ab", buffering=0)
    serve = datasets.FashionHowDataset.__getitem__
    def counted(self, i):
        if self.train:
            out.write(b".")
        return serve(self, i)
    datasets.FashionHowDataset.__getitem__ = counted
loaders = create_loaders(root, "st1", img_size=32, batch_size=16, limit=96, cache=True,
                         cache_dir=run_dir + "_cache")
seed_everything(5)
model = create_model("st1", "mobilenetv4_conv_small", img_size=32)
fit(model, loaders, run_dir, dict(epochs=3, lr=2e-3, scheduler="warmup_cosine", warmup_epochs=0.5, seed=5,
    ema=True, threads=2), resume=resume, progress=False)
"""
ROWS, BATCH = 96, 16  # as in _FIT_SCRIPT: 6 steps an epoch


def _run_fit(root: Path, run_dir: Path, resume: bool = False, marker: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _FIT_SCRIPT, str(root), str(run_dir), "1" if resume else "0", str(marker or "")],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def test_training_killed_mid_epoch_then_resumed_matches_an_uninterrupted_run(demo_root, tmp_path):
    timing = ["seconds", "train_img_per_s"]
    full = _run_fit(demo_root, tmp_path / "full")  # the uninterrupted run goes on beside the killed one

    try:
        # Kill at a random step strictly inside epoch 2 (not at an epoch boundary, where last.pt was just written).
        step = random.Random().randint(2, ROWS // BATCH - 2)
        kill_at = ROWS + step * BATCH  # training images served when the kill is sent
        cut_dir, marker = tmp_path / "cut", tmp_path / "served"
        cut = _run_fit(demo_root, cut_dir, marker=marker)
        _kill_when(cut, lambda: marker.exists() and marker.stat().st_size >= kill_at, timeout=300)
        served = marker.stat().st_size
        assert ROWS + BATCH < served < 2 * ROWS, f"step {step}: the kill landed outside epoch 2 ({served} served)"
        assert len(pd.read_csv(cut_dir / "history.csv")) == 1, f"step {step}"
        last = torch.load(cut_dir / "last.pt", weights_only=True)
        assert last["epoch"] == 0, "last.pt holds the state after epoch 1"

        # A kill inside atomic_write leaves its temporary file: the resumed run removes it.
        stale = cut_dir / ".last.pt.k1ll3d.tmp"
        stale.write_bytes((cut_dir / "last.pt").read_bytes()[:1000])
    except BaseException:
        full.kill()  # no orphan
        full.wait()
        raise
    resumed = _run_fit(demo_root, cut_dir, resume=True)
    for proc in (full, resumed):
        assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-3000:]
        proc.stderr.close()
    assert not stale.exists(), "the stale temporary checkpoint is still there"
    assert not list(cut_dir.glob(f"*{TMP_SUFFIX}")), list(cut_dir.glob(f"*{TMP_SUFFIX}"))
    expected = pd.read_csv(tmp_path / "full" / "history.csv").drop(columns=timing)
    got = pd.read_csv(cut_dir / "history.csv").drop(columns=timing)
    pd.testing.assert_frame_equal(expected, got, check_exact=True, obj=f"history (killed at epoch 2 step {step})")
    assert "resumed from" in (cut_dir / "train.log").read_text()


def _sleepy_notebook(path: Path, fail: bool) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("seconds = 60  # how long to sleep")
    params.metadata["tags"] = ["parameters"]
    body = "raise ValueError('boom from the notebook')" if fail else "import time\ntime.sleep(seconds)"
    nb.cells = [params, nbformat.v4.new_code_cell("print('first cell done')"), nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_a_failing_notebook_run_keeps_the_executed_notebook_with_the_error(tmp_path):
    import papermill as pm
    import pytest

    from fh_utils.runner.notebooks import run_notebook

    nb = _sleepy_notebook(tmp_path / "fails.ipynb", fail=True)
    out = tmp_path / "runs" / "r1" / "fails.ipynb"
    with pytest.raises(pm.PapermillExecutionError, match="boom from the notebook"):
        run_notebook(nb, out, {"seconds": 1})
    text = out.read_text()
    assert "boom from the notebook" in text and "first cell done" in text
    assert out.with_suffix(".html").exists()


def test_a_killed_notebook_run_keeps_the_executed_notebook(tmp_path):
    nb = _sleepy_notebook(tmp_path / "sleepy.ipynb", fail=False)
    out = tmp_path / "runs" / "r2" / "sleepy.ipynb"
    proc = _start_python(
        "from fh_utils.runner.notebooks import run_notebook; "
        f"run_notebook({str(nb)!r}, {str(out)!r}, {{'seconds': 60}})"
    )
    _kill_when(proc, lambda: out.exists() and "first cell done" in out.read_text(), timeout=120)
    assert "first cell done" in out.read_text()
    import nbformat

    nbformat.read(out, as_version=4)  # still a valid notebook


def test_demo_run_twice_reuses_the_demo_data(tmp_path):
    import hashlib

    import yaml

    from fh_utils.runner.demo import run_demo

    spec = tmp_path / "demo.yaml"
    spec.write_text(yaml.safe_dump({"data_root": str(tmp_path / "demo"), "demo_data": {"seed": 0, "scale": 0.05},
                                    "runs": []}))  # fmt: skip

    def snapshot():
        return {
            str(p.relative_to(tmp_path)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted((tmp_path / "demo").rglob("*")) if p.is_file()
        }

    run_demo(spec)
    first = snapshot()
    run_demo(spec)
    assert snapshot() == first and len(first) > 20
