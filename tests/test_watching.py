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

    from fh_utils.sweeps.study import open_storage

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

    from fh_utils.sweeps import dashboard

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
    from fh_utils.sweeps.dashboard import combined_state, trial_states

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
    from fh_utils.sweeps.dashboard import board_command

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


# ------------------------------------------------------------------ run state and the watch, function by function
def _running_record(run_dir: Path, **fields) -> dict:
    record = write_run_state(run_dir, "running", epoch=1)
    record.update(fields)
    write_json(run_dir / "state.json", record)
    return record


def test_a_running_run_is_killed_only_past_150_s_of_silence_or_by_a_dead_pid_of_this_host(tmp_path):
    record = _running_record(tmp_path / "r")
    beat = record["heartbeat"]
    assert read_run_state(tmp_path / "r", now=beat + 149)["state"] == "running"  # five missed beats are not enough
    assert read_run_state(tmp_path / "r", now=beat + 151)["state"] == "killed"
    assert read_run_state(tmp_path / "r", now=beat + 60, stale_s=30)["state"] == "killed"
    elsewhere = _running_record(tmp_path / "other", host="another-machine", pid=2**22 + 12345)
    assert read_run_state(tmp_path / "other", now=elsewhere["heartbeat"] + 10)["state"] == "running", (
        "a pid of another machine says nothing about it here")  # fmt: skip
    _running_record(tmp_path / "dead", pid=2**22 + 12345)  # this host, a pid above pid_max
    assert read_run_state(tmp_path / "dead", now=beat + 10)["state"] == "killed"


def test_a_state_write_merges_its_fields_over_the_previous_record(tmp_path):
    first = write_run_state(tmp_path, "running", epoch=0, epochs=3, error=None, resumed_from="killed")
    second = write_run_state(tmp_path, "running", epoch=2)
    final = write_run_state(tmp_path, "failed", epoch=2, error="ValueError: boom")
    stable = {"host": socket.gethostname(), "pid": os.getpid()}
    kept = {"epochs": 3, "resumed_from": "killed", **stable}  # written once, kept by the later writes

    def fields(record: dict) -> dict:
        return {k: v for k, v in record.items() if k != "heartbeat"}

    assert fields(first) == {"state": "running", "epoch": 0, "error": None, **kept}
    assert fields(second) == {"state": "running", "epoch": 2, "error": None, **kept}
    assert fields(final) == {"state": "failed", "epoch": 2, "error": "ValueError: boom", **kept}
    assert json.loads((tmp_path / "state.json").read_text()) == final
    with pytest.raises(ValueError, match="'done' is not one of"):
        write_run_state(tmp_path, "done")


def test_a_run_folder_without_state_json_is_finished_when_its_history_has_every_epoch(tmp_path):
    write_json(tmp_path / "config.json", {"train": {"epochs": 2}})
    pd.DataFrame({"epoch": [1]}).to_csv(tmp_path / "history.csv", index=False)
    assert read_run_state(tmp_path) == {"state": "unknown", "age_s": None}
    pd.DataFrame({"epoch": [1, 2]}).to_csv(tmp_path / "history.csv", index=False)
    assert read_run_state(tmp_path) == {"state": "finished", "age_s": None}


def test_the_heartbeat_writes_what_update_hands_it_at_once_and_nothing_after_stop(tmp_path):
    from fh_utils.runs import RunHeartbeat

    heart = RunHeartbeat(tmp_path, interval=3600)  # only an update wakes it in this test
    heart.beat(epoch=0, epochs=2)
    heart.start()
    heart.update(epoch=1)
    deadline = time.monotonic() + 10
    while read_run_state(tmp_path).get("epoch") != 1:
        assert time.monotonic() < deadline, "update() did not wake the heartbeat thread"
        time.sleep(0.01)
    heart.stop()
    heart.join(timeout=10)
    write_run_state(tmp_path, "finished", epoch=2)
    heart.beat(epoch=5)  # a beat after stop (e.g. one already woken) must not overwrite the final state
    record = read_run_state(tmp_path)
    assert (record["state"], record["epoch"], record["epochs"]) == ("finished", 2, 2)


def test_the_newest_run_with_the_file_is_found_by_task_and_a_miss_names_the_folder(tmp_path):
    from fh_utils.runs import latest_run

    for name, task, mtime in [("old", "st2", 1_000), ("new", "st2", 3_000), ("st1", "st1", 5_000),
                              ("other", "st2", 9_000)]:  # fmt: skip
        folder = tmp_path / "sweep" / name if name == "new" else tmp_path / name
        folder.mkdir(parents=True)
        write_json(folder / "config.json", {"task": {"name": task}})
        (folder / ("last.pt" if name != "other" else "best.pt")).write_bytes(b"x")
        os.utime(folder / ("last.pt" if name != "other" else "best.pt"), (mtime, mtime))
    assert latest_run("st2", "last.pt", tmp_path) == tmp_path / "sweep" / "new"  # sweep trials nest one deeper
    assert latest_run(None, "last.pt", tmp_path) == tmp_path / "st1"
    with pytest.raises(FileNotFoundError) as info:
        latest_run("st1", "best.pt", tmp_path)
    assert str(info.value) == (f"no run of task st1 with best.pt under {tmp_path}; train one with notebook 03/04")


def test_list_runs_names_nested_trials_by_their_path_under_the_root(tmp_path):
    from fh_utils.runs import list_runs

    for rel, score in [("b", 0.5), ("sw/t0001", 0.7)]:
        write_json(tmp_path / rel / "metrics.json", {"score": score, "task": "st2", "epoch": 2})
        write_json(tmp_path / rel / "config.json", {"model": {"backbone": "fh_colornet", "img_size": 32}})
        write_run_state(tmp_path / rel, "finished")
    frame = list_runs(tmp_path)
    assert list(frame.columns) == ["run", "state", "task", "backbone", "img_size", "epoch", "score", "baseline_score"]
    rows = frame.drop(columns="baseline_score").values.tolist()
    assert rows == [["b", "finished", "st2", "fh_colornet", 32, 2, 0.5],
                    ["sw/t0001", "finished", "st2", "fh_colornet", 32, 2, 0.7]]  # fmt: skip


def test_an_exception_leaving_the_loop_names_the_final_state():
    from fh_utils.training.watch import final_state

    class TrialPruned(Exception):  # optuna's is recognised by its name, without importing optuna
        pass

    assert [final_state(e) for e in (None, TrialPruned("x"), KeyboardInterrupt(), ValueError("x"))] == [
        "finished", "pruned", "killed", "failed"]  # fmt: skip


def test_each_epoch_reaches_state_json_through_the_heartbeat_while_the_run_goes_on(tmp_path):
    from fh_utils.training.watch import RunWatch

    history: list[dict] = []
    with RunWatch(tmp_path, history, epochs=3, tensorboard=False, heartbeat=3600) as watch:
        assert read_run_state(tmp_path)["epoch"] == 0
        history.append({"epoch": 1})
        watch.on_epoch(history[-1])
        deadline = time.monotonic() + 10
        while read_run_state(tmp_path).get("epoch") != 1:
            assert time.monotonic() < deadline, "epoch 1 never reached state.json while the run was going on"
            time.sleep(0.01)
        assert read_run_state(tmp_path)["state"] == "running"
    assert read_run_state(tmp_path)["state"] == "finished"


def test_a_history_row_becomes_its_scalars_without_missing_values_and_with_a_zero_baseline():
    from fh_utils.training.tensorboard import epoch_scalars

    row = {"epoch": 2, "lr": 0.01, "train_loss": 1.5, "val_loss": float("nan"), "val_score": None,
           "val_Color_top1": 0.25, "val_Color_acsa": 0.2, "train_img_per_s": 100.0, "seconds": 3.0}  # fmt: skip
    assert epoch_scalars(row, {"baseline_score": 0.0}) == {"train/lr": 0.01, "loss/train": 1.5, "top1/Color": 0.25,
                                                           "train/img_per_s": 100.0, "score/baseline": 0.0}  # fmt: skip
    assert "score/baseline" not in epoch_scalars(row, {"baseline_score": None})
