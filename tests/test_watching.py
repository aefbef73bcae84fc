"""Watching runs: TensorBoard scalars of every run, run states, and the read-only sweep dashboard.

Event files are read back with TensorBoard's own readers (the accumulator a TensorBoard server uses, and the raw
event-file loader, which shows a duplicated step the accumulator would hide). The browser tests are in
``tests/test_watching_browser.py`` (slow).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pandas as pd
import pytest
from test_interruptions import _kill_when, _start_python

from fh_utils.io import write_json
from fh_utils.runs import read_run_state, write_run_state
from fh_utils.training.tensorboard import read_scalars, tb_dir

SCALARS = {"loss/train", "loss/val", "score/val", "train/lr", "train/img_per_s", "top1/Color", "score/baseline"}
HISTORY_TAGS = {"loss/train": "train_loss", "loss/val": "val_loss", "score/val": "val_score", "train/lr": "lr",
                "train/img_per_s": "train_img_per_s", "top1/Color": "val_Color_top1", "loss/train_ce": "train_ce",
                "loss/train_kd": "train_kd"}  # fmt: skip
TINY_FIT = dict(lr=2e-3, threads=1, scheduler="none")


def _loaders(root: Path, limit: int = 48):
    from fh_utils.data.datasets import create_loaders

    return create_loaders(root, "st2", img_size=16, batch_size=16, limit=limit, cache=False, num_workers=0)


def _tiny_fit(root: Path, run_dir: Path, epochs: int = 2, **kwargs):
    from fh_utils.models.factory import create_model
    from fh_utils.training.engine import fit, seed_everything

    seed_everything(0)
    model = create_model("st2", "fh_colornet", img_size=16)
    return fit(model, _loaders(root), run_dir, dict(epochs=epochs, **TINY_FIT), progress=False, **kwargs)


def raw_scalar_events(run_dir: Path) -> list[tuple[str, int, float]]:
    """Every scalar event of every event file, as written (no purging, no de-duplication)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    out = []
    for path in sorted(tb_dir(run_dir).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    out.append((value.tag, event.step, float(tensor_util.make_ndarray(value.tensor))))
    return out


def _states_text(run_dir: Path) -> list[tuple[int, str]]:
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(tb_dir(run_dir)), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors("run/state/text_summary")]


def _assert_scalars_match_history(run_dir: Path, tags: set[str]) -> None:
    history = pd.read_csv(run_dir / "history.csv")
    scalars = read_scalars(run_dir)
    assert set(scalars) == tags
    for tag, points in scalars.items():
        assert [s for s, _ in points] == list(history["epoch"]), tag
        if tag in HISTORY_TAGS:
            assert [v for _, v in points] == pytest.approx(list(history[HISTORY_TAGS[tag]]), rel=1e-6), tag
    raw = raw_scalar_events(run_dir)
    assert len(raw) == len({(tag, step) for tag, step, _ in raw}) == len(tags) * len(history), "a duplicated step"


def test_a_two_epoch_run_writes_exactly_the_expected_scalars_into_its_own_tb_folder(demo_root, tmp_path):
    run_dir = tmp_path / "runs" / "two"
    _tiny_fit(demo_root, run_dir, extra_metrics={"baseline_score": 0.25})
    _assert_scalars_match_history(run_dir, SCALARS)
    assert read_scalars(run_dir)["score/baseline"] == [(1, 0.25), (2, 0.25)], "the colour baseline: a flat line"
    assert len(list(tb_dir(run_dir).glob("events.out.tfevents.*"))) == 1
    assert {p.relative_to(tmp_path).parts[:3] for p in tmp_path.rglob("events.out.tfevents.*")} == {
        ("runs", "two", "tb")}, "event files outside the run's tb/"  # fmt: skip
    assert read_run_state(run_dir)["state"] == "finished"
    assert _states_text(run_dir) == [(0, "**running**"), (2, "**finished**")]

    # Distilled from that run: both loss terms as well; no colour baseline passed, no baseline line.
    student = tmp_path / "runs" / "student"
    _tiny_fit(demo_root, student, teacher=str(run_dir), distill_alpha=0.5)
    tags = (SCALARS - {"score/baseline"}) | {"loss/train_ce", "loss/train_kd"}
    _assert_scalars_match_history(student, tags)


def test_run_states_finished_failed_pruned_and_killed(demo_root, tmp_path):
    import optuna

    def fail(row):
        raise ValueError("boom after epoch 1")

    with pytest.raises(ValueError, match="boom"):
        _tiny_fit(demo_root, tmp_path / "failed", callbacks=[fail])
    record = read_run_state(tmp_path / "failed")
    assert record["state"] == "failed" and "boom after epoch 1" in record["error"] and record["epoch"] == 1

    def prune(row):
        raise optuna.TrialPruned("hopeless")

    with pytest.raises(optuna.TrialPruned):
        _tiny_fit(demo_root, tmp_path / "pruned", callbacks=[prune])
    assert read_run_state(tmp_path / "pruned")["state"] == "pruned"
    assert _states_text(tmp_path / "pruned")[-1] == (1, "**pruned**")

    live = tmp_path / "live"
    live.mkdir()
    write_run_state(live, "running", epoch=3)
    assert read_run_state(live)["state"] == "running", "this process is alive"
    assert read_run_state(live, now=time.time() + 3600)["state"] == "killed", "a heartbeat an hour old"
    dead = json.loads((live / "state.json").read_text())
    dead["pid"] = 2**22 + 12345  # above pid_max: no such process on this host
    write_json(live / "state.json", dead)
    assert read_run_state(live)["state"] == "killed"
    assert read_run_state(tmp_path / "nothing")["state"] == "unknown"


_KILL_SCRIPT = """
import sys
import time
from fh_utils.data import datasets
sys.path.insert(0, "tests")
from test_watching import _tiny_fit
root, run_dir, marker = sys.argv[1], sys.argv[2], sys.argv[3]
out = open(marker, "ab", buffering=0)
serve = datasets.FashionHowDataset.__getitem__
def counted(self, i):
    if self.train:
        out.write(b".")
        time.sleep(0.01)  # a window of a second per epoch for the kill to land in
    return serve(self, i)
datasets.FashionHowDataset.__getitem__ = counted
_tiny_fit(root, run_dir, epochs=3)
"""


def test_a_run_killed_mid_epoch_then_resumed_has_each_epoch_once_in_its_event_file(demo_root, tmp_path):
    run_dir, marker, rows = tmp_path / "cut", tmp_path / "served", 48  # 3 steps an epoch
    proc = _start_python(_KILL_SCRIPT.replace("sys.argv[1], sys.argv[2], sys.argv[3]",
                                              f"{str(demo_root)!r}, {str(run_dir)!r}, {str(marker)!r}"))  # fmt: skip
    _kill_when(proc, lambda: marker.exists() and marker.stat().st_size >= rows + 20, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert rows < marker.stat().st_size < 2 * rows, "the kill landed inside epoch 2"
    assert [s for s, _ in read_scalars(run_dir)["score/val"]] == [1], "epoch 1 was on disk before the kill"
    assert read_run_state(run_dir)["state"] == "killed", "its pid is gone"

    from fh_utils.models.factory import create_model
    from fh_utils.training.engine import fit, seed_everything

    seed_everything(0)
    model = create_model("st2", "fh_colornet", img_size=16)
    fit(model, _loaders(demo_root), run_dir, dict(epochs=3, **TINY_FIT), progress=False, resume=True)
    _assert_scalars_match_history(run_dir, SCALARS - {"score/baseline"})
    assert [s for s, _ in read_scalars(run_dir)["score/val"]] == [1, 2, 3]
    assert len(list(tb_dir(run_dir).glob("events.out.tfevents.*"))) == 1, "the old event file is replaced"
    record = read_run_state(run_dir)
    assert record["state"] == "finished" and record["resumed_from"] == "killed"
    assert [s for s, _ in _states_text(run_dir)] == [1, 3] and "was killed" in _states_text(run_dir)[0][1]


def test_notebook_06_tables_each_runs_state_and_top_k_takes_finished_runs_only(tmp_path):
    from fh_utils.workbook import compare

    root = tmp_path / "runs"
    for name, score, state in [("done", 0.5, "finished"), ("half", 0.9, "running"), ("cut", 0.8, "killed")]:
        folder = root / name
        folder.mkdir(parents=True)
        write_json(folder / "metrics.json", {"score": score, "task": "st2", "epoch": 1})
        write_json(folder / "state.json", {"state": state, "host": socket.gethostname(), "pid": os.getpid(),
                                           "heartbeat": time.time()})  # fmt: skip
    frame = compare.collect_runs(root)
    assert dict(zip(frame["run"], frame["state"])) == {"done": "finished", "half": "running", "cut": "killed"}
    assert "state" in compare.comparison_table(frame)
    assert list(compare.top_k_runs(frame, 3)["run"]) == ["done"]
    assert list(compare.top_k_runs(frame, 3, states=None)["run"]) == ["half", "cut", "done"]
    top = json.loads(compare.write_top_k(tmp_path, frame, 3).read_text())
    assert [(r["run"], r["state"]) for r in top["runs"]] == [("done", "finished")]


def _tiny_study(journal: Path, name: str = "watch-sweep", run_root: Path | None = None) -> None:
    import optuna

    from fh_utils.workbook.sweeps import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=open_storage(f"journal://{journal}"), direction="maximize")
    for number, scores in enumerate([[0.2, 0.4], [0.3, 0.5], [0.1, 0.6]]):
        trial = study.ask({"seed": optuna.distributions.IntDistribution(0, 9)})
        run_dir = (run_root or journal.parent) / f"t{number:04d}"
        trial.set_user_attr("run_name", f"{name}/t{number:04d}")
        trial.set_user_attr("run_dir", str(run_dir))
        for epoch, score in enumerate(scores, start=1):
            trial.report(score, epoch)
        study.tell(trial, scores[-1])


def test_the_dashboard_opens_a_sweeps_study_read_only(tmp_path, monkeypatch):
    import optuna

    from fh_utils.workbook import dashboard

    monkeypatch.setenv("FH_OUTPUTS", str(tmp_path))
    journal = tmp_path / "sweeps" / "watch-sweep" / "journal.log"
    journal.parent.mkdir(parents=True)
    _tiny_study(journal, run_root=tmp_path / "runs" / "watch-sweep")
    write_run_state(tmp_path / "runs" / "watch-sweep" / "t0001", "finished")
    digest = hashlib.sha256(journal.read_bytes()).hexdigest()
    for target in ("watch-sweep", str(journal), str(journal.parent), f"journal://{journal}"):
        assert dashboard.resolve_storage(target) == f"journal://{journal.resolve()}"
    with pytest.raises(FileNotFoundError, match="watch-sweep"):
        dashboard.resolve_storage("no-such-sweep")

    storage = dashboard.open_read_only(dashboard.resolve_storage("watch-sweep"))
    study = optuna.load_study(study_name="watch-sweep", storage=storage)
    trials = study.get_trials()
    assert [t.intermediate_values for t in trials] == [{1: 0.2, 2: 0.4}, {1: 0.3, 2: 0.5}, {1: 0.1, 2: 0.6}]
    assert [t.user_attrs["run_state"] for t in trials] == ["not started", "finished", "not started"]
    for name in dashboard.WRITE_METHODS:
        with pytest.raises(dashboard.ReadOnlyStorageError):
            getattr(storage, name)(0, "x", 1)
    with pytest.raises(dashboard.ReadOnlyStorageError):
        study.set_user_attr("note", "from a dashboard")
    with pytest.raises(dashboard.ReadOnlyStorageError):
        storage._inner._backend.append_logs([{"op_code": 0}])  # even below the wrapper: the journal refuses

    # The dashboard's own API over HTTP: the three trials with their curves; its write endpoints fail.
    from wsgiref.simple_server import make_server

    server = make_server("127.0.0.1", 0, dashboard.dashboard_app("watch-sweep"),
                         handler_class=dashboard._quiet_handler())  # fmt: skip
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        studies = json.loads(urlopen(f"{base}/api/studies", timeout=30).read())["study_summaries"]
        assert [s["study_name"] for s in studies] == ["watch-sweep"]
        detail = json.loads(urlopen(f"{base}/api/studies/{studies[0]['study_id']}?after=0", timeout=30).read())
        assert [[v["value"] for v in t["intermediate_values"]] for t in detail["trials"]] == [[0.2, 0.4], [0.3, 0.5],
                                                                                               [0.1, 0.6]]
        attrs = {a["key"]: a["value"] for a in detail["trials"][1]["user_attrs"]}
        assert attrs["run_state"] == "finished"
        writes = [("PUT", f"/api/studies/{studies[0]['study_id']}/note", {"version": 0, "body": "x"}),
                  ("DELETE", f"/api/studies/{studies[0]['study_id']}", None),
                  ("POST", "/api/studies", {"study_name": "new", "directions": ["minimize"]}),
                  ("POST", f"/api/trials/{detail['trials'][0]['trial_id']}/tell", {"state": "Fail"}),
                  ("POST", f"/api/trials/{detail['trials'][0]['trial_id']}/user-attrs", {"user_attrs": {"a": 1}})]
        for method, path, body in writes:
            data = json.dumps(body).encode() if body is not None else None
            request = Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
            with pytest.raises(HTTPError):
                urlopen(request, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert hashlib.sha256(journal.read_bytes()).hexdigest() == digest, "the dashboard changed the journal"
    assert sorted(p.name for p in journal.parent.iterdir()) == ["journal.log"], "no lock file, nothing else"


def test_sweep_trial_states_come_from_the_study(tmp_path, monkeypatch):
    from fh_utils.workbook.dashboard import combined_state, trial_states

    monkeypatch.setenv("FH_OUTPUTS", str(tmp_path))
    journal = tmp_path / "sweeps" / "s" / "journal.log"
    journal.parent.mkdir(parents=True)
    _tiny_study(journal, name="s")
    assert trial_states("s") == {f"s/t{i:04d}": ("COMPLETE", None) for i in range(3)}
    assert trial_states("absent") == {}
    assert combined_state("running", ("COMPLETE", None)) == "finished"
    assert combined_state("killed", ("RUNNING", None)) == "killed"
    assert combined_state("running", ("FAIL", "lost")) == "killed"
    assert combined_state("finished", ("FAIL", "no_validation")) == "finished"
    assert combined_state("running", None) == "running"


def test_commands_listen_on_loopback_and_make_has_the_targets():
    from fh_utils.paths import PROJECT_ROOT
    from fh_utils.workbook.dashboard import board_command

    cmd = board_command("/x/runs", port=6123)
    assert cmd[:3] == [sys.executable, "-m", "tensorboard.main"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "6123"
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    for target in ("board:", "tensorboard:", "dashboard:"):
        assert f"\n{target}" in makefile, target
    # Importing the engine (or the watch it starts) does not load TensorBoard: it is imported when a run writes.
    code = "import sys, fh_utils.training.engine, fh_utils.training.watch; print('tensorboard' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
