"""Watching runs in a real browser (slow): TensorBoard over a finished run, optuna-dashboard over a 3-trial sweep.

Each server is started as a user starts it (``python -m fh_utils board`` / ``python -m fh_utils dashboard``, what
``make board`` and ``make dashboard`` run) on a free loopback port, with ``FH_OUTPUTS`` in the session's temp
folder. Debian's Chromium, driven by Playwright, loads each page; the checks read the page's own API responses
(the values it draws) and its rendered text, then a screenshot is taken. Without Chromium the tests are skipped:
``apt-get install chromium``.

``FH_SCREENSHOT_TO=docs`` also copies the screenshots there (``docs/tensorboard_run.png``,
``docs/optuna_dashboard_sweep.png``: the README's pictures).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

import pandas as pd
import pytest

from fh_utils.paths import PROJECT_ROOT

CHROMIUM = Path(os.environ.get("FH_CHROMIUM", "/usr/bin/chromium"))
VIEWPORT = {"width": 1280, "height": 800}
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: apt-get install chromium"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="no Playwright: pip install -e '.[dev]'"),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(args: list[str], probe: str, log: Path, timeout: float = 180.0) -> subprocess.Popen:
    """Start ``python -m fh_utils ARGS`` and wait until ``probe`` answers 200."""
    out = open(log, "wb")  # noqa: SIM115  (closed by the caller's _stop)
    proc = subprocess.Popen([sys.executable, "-m", "fh_utils", *args], cwd=PROJECT_ROOT, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    proc.log = out  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if urlopen(probe, timeout=5).status == 200:
                return proc
        except (URLError, ConnectionError, TimeoutError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise AssertionError(f"{args} did not answer at {probe}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    proc.log.close()  # type: ignore[attr-defined]


def _browse(tmp_path: Path, url: str, act, shot: Path) -> list[tuple[str, object]]:
    """Load ``url`` in Chromium, run ``act(page)``, screenshot it; returns the page's JSON responses (url, body)."""
    from playwright import sync_api

    responses: list = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            page.on("response", lambda r: responses.append(r))
            page.goto(url, wait_until="domcontentloaded", timeout=120_000)
            act(page)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shot))
            bodies = []
            for r in responses:
                if "json" in (r.headers.get("content-type") or ""):
                    try:
                        bodies.append((r.url, r.json()))
                    except Exception:  # noqa: BLE001, S112  (a response the page discarded)
                        continue
        finally:
            browser.close()
    assert shot.stat().st_size > 20_000, "the screenshot is (nearly) empty"
    return bodies


def _keep_screenshot(shot: Path) -> None:
    if os.environ.get("FH_SCREENSHOT_TO"):
        folder = PROJECT_ROOT / os.environ["FH_SCREENSHOT_TO"]
        folder = folder.parent if folder.suffix == ".png" else folder  # the JupyterLab test's form: a file
        target = folder / shot.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_tensorboard_shows_a_finished_runs_score_curve(demo_root, _outputs_in_tmp, tmp_path):
    from test_watching import _tiny_fit

    run_dir = _outputs_in_tmp / "runs" / "watch-run"
    _tiny_fit(demo_root, run_dir, epochs=3, extra_metrics={"baseline_score": 0.2})
    history = pd.read_csv(run_dir / "history.csv")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    board = _serve(["board", "--port", str(port)], f"{base}/data/runs", tmp_path / "board.log")
    try:
        deadline = time.monotonic() + 120
        while "watch-run/tb" not in json.loads(urlopen(f"{base}/data/runs", timeout=10).read()):
            assert time.monotonic() < deadline, "TensorBoard never listed the run"
            time.sleep(1)

        def act(page):
            page.get_by_text("watch-run/tb").first.wait_for(state="visible", timeout=120_000)
            page.get_by_role("combobox", name="Filter tags (regex)").fill("score")
            page.get_by_text("score/val").first.wait_for(state="visible", timeout=60_000)
            page.keyboard.press("Escape")  # the tag suggestions
            page.get_by_label("Toggle settings side pane").click()  # close the settings pane: wider charts
            page.wait_for_timeout(3000)  # the charts' data requests

        bodies = _browse(tmp_path, f"{base}/?darkMode=false#timeseries", act, tmp_path / "tensorboard_run.png")
    finally:
        _stop(board)
    assert "finished" in (tmp_path / "board.log").read_text(), "make board lists each run's state"
    curves = {}
    for url, body in bodies:
        if url.endswith("/timeseries/timeSeries"):
            for series in body:
                for run, points in (series.get("runToSeries") or {}).items():
                    curves[(run, series["tag"])] = [(p["step"], p["value"]) for p in points]
    assert [s for s, _ in curves[("watch-run/tb", "score/val")]] == [1, 2, 3]
    assert [v for _, v in curves[("watch-run/tb", "score/val")]] == pytest.approx(list(history["val_score"]))
    assert [v for _, v in curves[("watch-run/tb", "score/baseline")]] == pytest.approx([0.2] * 3)
    _keep_screenshot(tmp_path / "tensorboard_run.png")


def test_optuna_dashboard_shows_a_three_trial_sweep_without_touching_it(demo_root, _outputs_in_tmp, tmp_path):
    from fh_utils.sweeps.coordinator import run_sweep
    from fh_utils.sweeps.study import JOURNAL_FILE, sweep_dir

    trial_nb = Path(__file__).parent / "notebooks" / "sweep_trial.ipynb"
    spec = {"name": "watch-sweep", "notebook": str(trial_nb), "pruner": "median",
            "fixed": {"data_root": str(demo_root), "epochs": 2}, "grid": {"seed": [0, 1, 2]}}  # fmt: skip
    result = run_sweep(spec, workers=1)
    assert len(result.trials) == 3 and result.worker_exit_codes == [0]
    journal = sweep_dir("watch-sweep") / JOURNAL_FILE
    digest = hashlib.sha256(journal.read_bytes()).hexdigest()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(["dashboard", "watch-sweep", "--port", str(port)], f"{base}/api/studies", tmp_path / "dash.log")
    try:
        studies = json.loads(urlopen(f"{base}/api/studies", timeout=30).read())["study_summaries"]
        study_id = next(s["study_id"] for s in studies if s["study_name"] == "watch-sweep")

        def act(page):
            page.get_by_text("3 Trials").first.wait_for(state="visible", timeout=120_000)
            page.get_by_text("run_state").first.wait_for(state="visible", timeout=60_000)
            page.wait_for_timeout(1000)
            text.append(page.inner_text("body"))

        text: list[str] = []
        url = f"{base}/dashboard/studies/{study_id}/trials"  # the trial list: states, epoch scores, run states
        bodies = _browse(tmp_path, url, act, tmp_path / "optuna_dashboard_sweep.png")
    finally:
        _stop(server)
    for number in range(3):
        assert f"Trial {number}" in text[0]
    assert "Intermediate Values" in text[0]
    details = [body for url, body in bodies if url.split("?")[0].endswith(f"/api/studies/{study_id}")]
    assert details, "the page never asked for the study"
    by_number = {t["number"]: t for body in details for t in body["trials"]}  # later polls send new trials only
    trials = list(by_number.values())
    assert sorted(by_number) == [0, 1, 2]
    for t in trials:
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        assert attrs["run_state"] in ("finished", "pruned"), attrs
        steps = [v["step"] for v in t["intermediate_values"]]
        assert steps[0] == 1 and len(steps) in (1, 2), "the epoch scores reported for pruning"
    assert hashlib.sha256(journal.read_bytes()).hexdigest() == digest, "the dashboard changed the study"
    assert "read-only" in (tmp_path / "dash.log").read_text()
    _keep_screenshot(tmp_path / "optuna_dashboard_sweep.png")
