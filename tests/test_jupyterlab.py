"""The workbook as a person meets it: a real JupyterLab server, its REST API, its kernel, and a real browser.

One server per module (``jupyter lab --no-browser`` on a free loopback port with a token, ``FH_OUTPUTS`` in a
temp folder, the user's Jupyter config and settings out of the way). The first test lists ``notebooks/`` through
the REST API and runs notebook 01 on the tiny demo data in a kernel started by the server, over the kernel's
websocket, the way the JupyterLab frontend does (papermill is not involved). The second opens notebook 03 in
headless Chromium (Debian's ``chromium`` driven by Playwright; no browser download) and checks the screenshot;
without Chromium it is skipped: ``apt-get install chromium``. The server is shut down through the API and must
exit with status 0.

``FH_SCREENSHOT_TO=docs/jupyterlab_notebook03.png`` also copies the screenshot there (the README's picture).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.request import Request, urlopen

import nbformat
import pytest

from fh_utils.paths import PROJECT_ROOT

JUPYTER = Path(sys.executable).with_name("jupyter")
CHROMIUM = Path(os.environ.get("FH_CHROMIUM", "/usr/bin/chromium"))
NOTEBOOKS = ["01_eda.ipynb", "02_remove_background.ipynb", "03_train_st1.ipynb", "04_train_st2.ipynb",
             "05_submission.ipynb"]  # fmt: skip
EDA_OVERRIDES = {"run_name": "lab-eda", "samples_per_class": 2, "swatch_boxes_per_class": 3}
VIEWPORT = {"width": 1280, "height": 800}
CELL_TIMEOUT = 300  # s; notebook 01's cells take seconds on the tiny data
MAKE_LAB_FLAGS = ["--MappingKernelManager.default_kernel_name=python3", "--KernelManager.transport=ipc"]
LAB_SETTINGS = {  # user settings of the test's JupyterLab (its own settings folder)
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},  # never write into notebooks/
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},  # no "notified about news?" toast
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """A running ``jupyter lab`` process and how to reach it."""

    proc: subprocess.Popen
    url: str
    token: str
    log: Path
    outputs: Path

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> dict | list | None:
        data = None if body is None else json.dumps(body).encode()
        req = Request(f"{self.url}{path}", data=data, method=method,
                      headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})  # fmt: skip
        with urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> LabServer:
    """``jupyter lab`` on the repository, as ``make lab`` starts it; shut down through the API afterwards."""
    tmp = tmp_path_factory.mktemp("lab")
    port, token = _free_port(), uuid.uuid4().hex
    # FH_OUTPUTS reaches the kernels; the user's Jupyter config, runtime files and settings stay untouched.
    env = {**os.environ, "FH_OUTPUTS": str(tmp / "outputs"), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter")}  # fmt: skip  # the workbook's kernelspec first
    cmd = [
        str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={PROJECT_ROOT}",
        "--MappingKernelManager.default_kernel_name=python3", "--KernelManager.transport=ipc",
        f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # offline: no PyPI queries from the extension panel
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI often run as root (make lab does the same)
    assert set(MAKE_LAB_FLAGS) <= set(cmd)
    for name, values in LAB_SETTINGS.items():
        path = tmp / "settings" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    log = tmp / "server.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT)
    server = LabServer(proc, f"http://127.0.0.1:{port}", token, log, tmp / "outputs")
    deadline = time.monotonic() + 120
    while True:
        try:
            server.api("GET", "/api/status", timeout=5)
            break
        except (URLError, ConnectionError, TimeoutError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"jupyter lab did not start (exit {proc.poll()}):\n{server.log_text()[-3000:]}")
            time.sleep(0.5)
    try:
        yield server
    finally:
        if proc.poll() is None:
            try:
                server.api("POST", "/api/shutdown")
                proc.wait(timeout=60)
            except Exception:
                proc.kill()
                proc.wait()
                raise
        assert proc.returncode == 0, f"jupyter lab exited with {proc.returncode}:\n{server.log_text()[-3000:]}"


class KernelSocket:
    """Executes code in a server-side kernel over ``/api/kernels/<id>/channels`` (Jupyter protocol 5, JSON)."""

    def __init__(self, lab: LabServer, kernel_id: str) -> None:
        import websocket  # websocket-client

        self.session = uuid.uuid4().hex
        ws_url = lab.url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels?session_id={self.session}"
        self.ws = websocket.create_connection(ws_url, header=[f"Authorization: token {lab.token}"], timeout=30)

    def execute(self, code: str, timeout: float = CELL_TIMEOUT) -> dict:
        """Run ``code``; returns ``{"status", "stdout", "errors"}`` once the reply and the idle status arrived."""
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "session": self.session, "username": "test",
                  "version": "5.3", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": False, "stop_on_error": True}  # fmt: skip
        self.ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                                 "channel": "shell", "buffers": []}))  # fmt: skip
        result: dict = {"status": None, "stdout": "", "errors": []}
        idle, deadline = False, time.monotonic() + timeout
        while result["status"] is None or not idle:
            self.ws.settimeout(max(1.0, deadline - time.monotonic()))
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, body = msg["header"]["msg_type"], msg["content"]
            if kind == "execute_reply":
                result["status"] = body["status"]
            elif kind == "status" and body["execution_state"] == "idle":
                idle = True
            elif kind == "stream" and body["name"] == "stdout":
                result["stdout"] += body["text"]
            elif kind == "error":
                result["errors"].append(f"{body['ename']}: {body['evalue']}")
        return result

    def close(self) -> None:
        self.ws.close()


@pytest.mark.slow  # a server start and notebook 01 in its kernel: about a minute on 2 cores
def test_rest_api_lists_the_notebooks_and_a_server_kernel_runs_notebook_01(lab: LabServer, demo_root: Path):
    listing = lab.api("GET", "/api/contents/notebooks")
    assert listing["type"] == "directory"
    assert set(NOTEBOOKS) <= {item["name"] for item in listing["content"] if item["type"] == "notebook"}
    assert lab.api("GET", "/api/kernelspecs")["default"] == "python3"

    kernel = lab.api("POST", "/api/kernels", {"name": "python3", "path": "notebooks"})
    ks = KernelSocket(lab, kernel["id"])
    try:
        probe = ks.execute("import os, sys; print(os.getcwd()); print(sys.executable); print(os.environ['FH_OUTPUTS'])")
        cwd, python, outputs = probe["stdout"].split()
        assert Path(cwd) == PROJECT_ROOT / "notebooks" and Path(outputs) == lab.outputs
        assert Path(python).parent == Path(sys.executable).parent  # the workbook's own environment

        nb = nbformat.read(PROJECT_ROOT / "notebooks" / "01_eda.ipynb", as_version=4)
        overrides = {**EDA_OVERRIDES, "data_root": str(demo_root)}
        injected = "\n".join(f"{k} = {v!r}" for k, v in overrides.items())  # what papermill would inject
        ran = 0
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            res = ks.execute(cell.source)
            assert res["status"] == "ok" and not res["errors"], f"cell {cell.get('id')}: {res['errors']}"
            ran += 1
            if "parameters" in cell.metadata.get("tags", []):
                assert ks.execute(injected)["status"] == "ok"
        assert ran == sum(c.cell_type == "code" for c in nb.cells)
        assert str(demo_root) in ks.execute("print(root)")["stdout"]
    finally:
        ks.close()
        lab.api("DELETE", f"/api/kernels/{kernel['id']}")
    figures = sorted(p.name for p in (lab.outputs / "runs" / "lab-eda" / "figures").glob("*.png"))
    assert len(figures) >= 6, figures
    assert "Traceback" not in lab.log_text()
    assert "without encryption" not in lab.log_text()  # --KernelManager.transport=ipc, as make lab runs it


def _non_white_fraction(png: Path) -> float:
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return float((pixels.min(axis=2) < 235).mean())


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: apt-get install chromium")
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="no Playwright: pip install -e '.[dev]'")
def test_browser_renders_notebook_03(lab: LabServer, tmp_path: Path):
    from playwright import sync_api

    notebook = PROJECT_ROOT / "notebooks" / "03_train_st1.ipynb"
    before = hashlib.sha256(notebook.read_bytes()).hexdigest()
    url = f"{lab.url}/lab/tree/notebooks/03_train_st1.ipynb?token={lab.token}"
    shot = tmp_path / "jupyterlab_notebook03.png"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]  # fmt: skip
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=args,
            viewport=VIEWPORT, device_scale_factor=1,
        )  # fmt: skip
        try:
            page = context.new_page()
            page.goto(url, wait_until="domcontentloaded", timeout=120_000)
            # What a person sees: the first (markdown) cell rendered as its title (JupyterLab hides that cell's
            # editor once rendered, so no editor of it is ever visible), then a code cell's editor with the
            # parameters in it.
            title = json.loads(notebook.read_text(encoding="utf-8"))["cells"][0]["source"]
            title = ("".join(title) if isinstance(title, list) else title).splitlines()[0].lstrip("# ").strip()
            heading = page.locator(".jp-NotebookPanel .jp-MarkdownCell .jp-RenderedMarkdown h1")
            heading.filter(has_text=title).first.wait_for(state="visible", timeout=120_000)
            code = page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputArea-editor .cm-content")
            code.first.wait_for(state="visible", timeout=60_000)
            code.filter(has_text="backbone = ").first.wait_for(state="visible", timeout=60_000)
            # The kernel starts with the notebook; the toolbar shows its name once connected.
            page.get_by_text("Python 3 (fashion-how)").first.wait_for(state="visible", timeout=120_000)
            page.wait_for_timeout(1500)  # let the last layout pass and fonts settle before the picture
            page.screenshot(path=str(shot))
        finally:
            context.close()

    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (VIEWPORT["width"], VIEWPORT["height"])
    assert shot.stat().st_size > 20_000
    assert _non_white_fraction(shot) > 0.03, "the screenshot is (nearly) blank"
    assert hashlib.sha256(notebook.read_bytes()).hexdigest() == before, "opening the notebook changed the file"
    if os.environ.get("FH_SCREENSHOT_TO"):
        target = PROJECT_ROOT / os.environ["FH_SCREENSHOT_TO"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_make_lab_starts_the_server_as_this_test_does():
    recipe = re.search(r"^lab:.*\n((?:\t.*\n)+)", (PROJECT_ROOT / "Makefile").read_text(), re.M)
    assert recipe, "no lab target in the Makefile"
    text = recipe.group(1)
    for flag in [*MAKE_LAB_FLAGS, "--ServerApp.root_dir=.", "--LabApp.default_url=/lab/tree/notebooks", "--allow-root"]:
        assert flag in text, flag
    assert "JUPYTER_PATH=$(CURDIR)/$(VENV)/share/jupyter" in text  # the workbook's kernelspec wins
