"""Sweeps on Optuna: parallel workers, a killed worker, a failing trial, the spec, and notebook 06 over a sweep.

Trials are one-epoch runs on the session's tiny demo data. The two-worker sweep runs notebook 04 itself; the
fault tests run ``tests/notebooks/sweep_trial.ipynb`` (notebook 04's training without its figures) to stay cheap.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fh_utils.io import read_json
from fh_utils.paths import notebooks_dir
from fh_utils.runner.notebooks import UnknownParameterError, run_notebook
from fh_utils.sweeps.coordinator import parse_devices, run_sweep, worker_env
from fh_utils.sweeps.spec import load_spec, parse_assignment
from fh_utils.sweeps.study import open_sweep, sweep_trials

TRIAL_NB = Path(__file__).parent / "notebooks" / "sweep_trial.ipynb"
TINY = {"epochs": 1, "img_size": 32, "batch_size": 16, "limit": 40, "lr": 0.002, "device": "cpu", "num_workers": 0,
        "cache": False, "scheduler": "none"}  # fmt: skip


def test_spec_is_validated_against_the_notebook():
    spec = load_spec({"name": "s", "notebook": "04_train_st2.ipynb", "grid": {"seed": [0, 1], "lr": [0.1, 0.2]}})
    assert spec.total_trials == 4 and spec.grid_points()[1] == {"seed": 0, "lr": 0.2}
    with pytest.raises(UnknownParameterError, match="no_such"):
        load_spec({"name": "s", "notebook": "04_train_st2.ipynb", "grid": {"no_such": [1]}})
    with pytest.raises(ValueError, match="exactly one of"):
        load_spec({"name": "s", "notebook": "04_train_st2.ipynb"})
    with pytest.raises(ValueError, match="set by the sweep"):
        load_spec({"name": "s", "notebook": "04_train_st2.ipynb", "fixed": {"run_name": "x"}, "grid": {"seed": [0]}})
    with pytest.raises(ValueError, match="n_trials"):
        load_spec({"name": "s", "notebook": "04_train_st2.ipynb", "search": {"lr": {"low": 1e-4, "high": 1e-2}}})
    assert parse_assignment("epochs=3") == ("epochs", 3)
    for path in sorted((Path(__file__).parent.parent / "sweeps").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())  # a grid runs every combination once, a search its n_trials
        want = math.prod(len(v) for v in raw["grid"].values()) if "grid" in raw else raw["n_trials"]
        assert load_spec(path).total_trials == want > 1, path


def test_devices_pin_workers_and_share_threads():
    assert parse_devices("cpu", 3) == ([None, None, None], 3)
    assert parse_devices("0,1", None) == (["0", "1"], 2)
    assert parse_devices("0", 4) == (["0"] * 4, 4)
    assert parse_devices("0,0,1,1", None)[0] == ["0", "0", "1", "1"]
    with pytest.raises(ValueError):
        parse_devices("gpu0", 1)
    env = worker_env("1", 2)
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["OMP_NUM_THREADS"] == "2"
    assert worker_env(None, 1)["CUDA_VISIBLE_DEVICES"] == ""


@pytest.fixture(scope="module")
def two_worker_sweep(demo_root):
    spec = {"name": "t-two", "notebook": "04_train_st2.ipynb", "fixed": {**TINY, "data_root": str(demo_root)},
            "grid": {"seed": [0, 1], "split": ["val", "fold:0/2"]}}  # fmt: skip
    return run_sweep(spec, workers=2)


def test_two_workers_finish_every_trial_and_the_study_lists_its_run_folders(two_worker_sweep):
    trials = two_worker_sweep.trials
    assert two_worker_sweep.worker_exit_codes == [0, 0]
    assert len(trials) == 4 and (trials["state"] == "COMPLETE").all(), trials.to_string()
    points = {(r.param_seed, r.param_split) for r in trials.itertuples()}
    assert points == {(0, "val"), (1, "val"), (0, "fold:0/2"), (1, "fold:0/2")}
    for row in trials.itertuples():
        run_dir = Path(row.run_dir)
        assert run_dir.parent.name == "t-two" and (run_dir / "04_train_st2.ipynb").exists()
        assert read_json(run_dir / "metrics.json")["score"] == pytest.approx(row.value)
        config = read_json(run_dir / "config.json")
        assert config["data"]["split"] == row.param_split and config["split"]["split"] == row.param_split
    study = open_sweep("t-two")
    pids = {t.user_attrs["heartbeat"]["pid"] for t in study.get_trials()}
    assert len(pids) == 2, "both workers ran trials"
    fold_config = read_json(Path(trials[trials["param_split"] == "fold:0/2"]["run_dir"].iloc[0]) / "config.json")
    assert set(fold_config["split"]["assignment"]) == {"train", "val"}


def test_notebook_06_compares_the_sweep_under_papermill(two_worker_sweep, _outputs_in_tmp):
    out = _outputs_in_tmp / "runs" / "t-compare"
    run_notebook(notebooks_dir() / "06_compare_runs.ipynb", out / "06_compare_runs.ipynb",
                 {"run_name": "t-compare", "sweep": "t-two", "top_k": 3}, html=False)  # fmt: skip
    table = pd.read_csv(out / "runs.csv")
    assert len(table) == 4 and set(table["sweep"]) == {"t-two"}
    assert {"seed", "split", "score", "baseline_score", "best_epoch", "epochs", "wall_s", "size_mb"} <= set(table)
    top = read_json(out / "top_k.json")
    assert top["task"] == "st2" and len(top["runs"]) == 3
    scores = [r["score"] for r in top["runs"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(table["score"].max())
    assert (out / "figures" / "score_by_recipe.png").exists() and (out / "figures" / "top_curves.png").exists()


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on_and_a_rerun_skips_finished(demo_root):
    # The failing trial first: the worker goes on to the next.
    spec = {"name": "t-fail", "notebook": str(TRIAL_NB), "fixed": {"data_root": str(demo_root)},
            "grid": {"augment": ["bogus", "none"]}}  # fmt: skip
    trials = run_sweep(spec, workers=1).trials.set_index("param_augment")
    assert trials.loc["none", "state"] == "COMPLETE"
    assert trials.loc["bogus", "state"] == "FAIL" and trials.loc["bogus", "outcome"] == "failed"
    assert "bogus" in trials.loc["bogus", "error"]
    executed = Path(trials.loc["bogus", "run_dir"]) / TRIAL_NB.name
    assert executed.exists() and "bogus" in executed.read_text(), "the failing notebook is kept with its error"
    again = run_sweep(spec, workers=1)
    assert len(again.trials) == 2, "finished trials (failed included) are not run again"


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid``, from /proc (a kernel runs in a session of its own: a group kill misses it)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # ended meanwhile
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _exited(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except (OSError, IndexError):
        return True


def test_a_killed_worker_loses_only_its_trial_and_a_rerun_completes_the_study(demo_root, tmp_path):
    spec_path = tmp_path / "t-kill.yaml"
    spec_path.write_text(yaml.safe_dump({"notebook": str(TRIAL_NB), "fixed": {"data_root": str(demo_root), "epochs": 3},
                                         "grid": {"seed": [0, 1]}}))  # fmt: skip
    first_run = Path(os.environ["FH_OUTPUTS"]) / "runs" / "t-kill" / "t0000"
    proc = subprocess.Popen([sys.executable, "-m", "fh_utils", "sweep", str(spec_path), "--workers", "1"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not (first_run / "last.pt").exists():  # mid-trial: epoch 1 of 3 is saved
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
            time.sleep(0.2)
    finally:
        below = _descendants(proc.pid)  # the worker and its kernel
        os.killpg(proc.pid, signal.SIGKILL)  # coordinator and worker; the kernel exits with its parent
        proc.wait()
    deadline = time.monotonic() + 30
    while not all(_exited(pid) for pid in below):  # the kernel notices within a second or so
        assert time.monotonic() < deadline, "the killed worker's kernel is still running"
        time.sleep(0.1)
    before = sweep_trials(open_sweep("t-kill"))
    assert list(before["state"]) == ["RUNNING", "WAITING"]

    result = run_sweep(spec_path, workers=2)  # the lost trial's retry and the other trial side by side
    trials = result.trials
    lost = trials[trials["number"] == 0].iloc[0]
    assert lost["state"] == "FAIL" and lost["outcome"] == "lost"
    done = trials[trials["state"] == "COMPLETE"]
    assert sorted(done["param_seed"]) == [0, 1], "each grid point completed exactly once"
    retry = done[done["retry_of"] == 0].iloc[0]
    assert retry["run_name"] == "t-kill/t0000", "the retry reuses the lost trial's folder"
    history = pd.read_csv(first_run / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3]
    assert "resumed from" in (first_run / "train.log").read_text()
    assert len(run_sweep(spec_path, workers=1).trials) == 3, "a third run has nothing left to do"


def test_epoch_scores_reach_the_study_and_the_median_pruner_stops_a_hopeless_trial(tmp_path, monkeypatch):
    import optuna

    from fh_utils.sweeps import study as sweep_study
    from fh_utils.sweeps import trial as sweep_trial

    url = f"journal://{tmp_path / 'journal.log'}"
    study = optuna.create_study(study_name="t-prune", storage=sweep_study.open_storage(url), direction="maximize")
    for good in (0.8, 0.9):  # two finished trials set the median per epoch
        trial = study.ask()
        for epoch in (1, 2, 3):
            trial.report(good, epoch)
        study.tell(trial, good)
    running = study.ask()
    monkeypatch.delenv(sweep_trial.ENV_TRIAL, raising=False)
    assert sweep_trial.pruning_callbacks() == [], "outside a sweep: no callback"
    monkeypatch.setenv(sweep_trial.ENV_STORAGE, url)
    monkeypatch.setenv(sweep_trial.ENV_STUDY, "t-prune")
    monkeypatch.setenv(sweep_trial.ENV_TRIAL, str(running._trial_id))
    monkeypatch.setenv(sweep_trial.ENV_PRUNER, "none")
    assert sweep_trial.pruning_callbacks() == []
    monkeypatch.setenv(sweep_trial.ENV_PRUNER, "median")
    (report,) = sweep_trial.pruning_callbacks()
    report({"epoch": 1, "val_score": 0.1})  # the warm-up epoch is never pruned
    with pytest.raises(optuna.TrialPruned):
        report({"epoch": 2, "val_score": 0.2})  # its best so far is below the median of the finished trials
    assert study.trials[2].intermediate_values == {1: 0.1, 2: 0.2}


def test_a_trial_whose_worker_died_is_failed_and_retried_once_with_its_parameters(tmp_path):
    import socket

    from fh_utils.sweeps import study as sweep_study
    from fh_utils.sweeps import worker as sweep_worker

    spec = load_spec({"name": "t-lost", "notebook": str(TRIAL_NB), "grid": {"seed": [0, 1]}})
    study = sweep_study.load_study(spec, f"journal://{tmp_path / 'journal.log'}")
    sweep_study.enqueue_grid(study, spec)
    assert sweep_study.enqueue_grid(study, spec) == 0, "a rerun enqueues nothing twice"
    trial = sweep_worker.claim_trial(study, spec)
    sweep_worker.suggest(trial, spec)
    trial.set_user_attr("run_name", "t-lost/t0000")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    beat = {"host": socket.gethostname(), "pid": int(dead.stdout), "time": time.time()}
    study._storage.set_trial_user_attr(trial._trial_id, "heartbeat", beat)
    other = sweep_worker.claim_trial(study, spec)  # alive: this process holds it
    assert sweep_worker.recover_lost_trials(study) == [0]
    assert sweep_worker.recover_lost_trials(study) == [], "recovered once"
    trials = sweep_trials(study)
    assert list(trials["state"]) == ["FAIL", "RUNNING", "WAITING"]
    retry = trials.iloc[2]
    assert retry["retry_of"] == 0 and retry["param_seed"] == trials.iloc[0]["param_seed"]
    claimed = sweep_worker.claim_trial(study, spec)
    assert sweep_worker._trial_run_name(spec, claimed) == ("t-lost/t0000", True), "the retry resumes the lost folder"
    assert sweep_worker.claim_trial(study, spec) is None, "grid exhausted: nothing more to start"
    assert other.number == 1


def test_the_seed_decides_the_initial_weights_so_seed_sweeps_are_reproducible(demo_root):
    import torch

    from fh_utils.workbook import workflow

    def weights(seed: int) -> list:
        params = {"data_root": str(demo_root), "backbone": "fh_colornet", "img_size": 32, "seed": seed,
                  "run_name": f"t-seed-{seed}", "device": "cpu"}  # fmt: skip
        return list(workflow.build_model(workflow.prepare_training("st2", params)).state_dict().values())

    a, b, c = weights(3), weights(3), weights(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_a_running_worker_retries_a_trial_lost_while_it_ran_its_own_before_it_stops(tmp_path, monkeypatch):
    """Lost trials are recovered before every claim, not once at the worker's start.

    The notebook is a stub: while the worker runs trial 0, another worker's trial 1 (claimed, parameters drawn,
    run folder named) loses its worker (a dead pid of this host). The worker must then retry it (trial 2), with
    trial 1's parameters and run folder and ``resume``, and stop only after that.
    """
    import socket

    import optuna

    from fh_utils.sweeps import study as sweep_study
    from fh_utils.sweeps import worker as sweep_worker

    spec = load_spec({"name": "t-relost", "notebook": str(TRIAL_NB), "grid": {"seed": [0, 1]}})
    url = f"journal://{tmp_path / 'journal.log'}"
    sweep_study.enqueue_grid(sweep_study.load_study(spec, url), spec)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ran = []

    def notebook(nb, output, params, timeout=None):
        ran.append((Path(output).relative_to(Path(os.environ["FH_OUTPUTS"]) / "runs").as_posix(), dict(params)))
        if len(ran) == 1:  # meanwhile another worker claims trial 1 and dies
            other_study = sweep_study.load_study(spec, url, worker=1)
            other = sweep_worker.claim_trial(other_study, spec)
            sweep_worker.suggest(other, spec)
            other.set_user_attr("run_name", "t-relost/t0001")
            beat = {"host": socket.gethostname(), "pid": dead.pid, "time": time.time()}
            other_study._storage.set_trial_user_attr(other._trial_id, "heartbeat", beat)
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        (Path(output).parent / "metrics.json").write_text('{"score": 0.5}')

    monkeypatch.setattr(sweep_worker, "execute_trial_notebook", notebook)
    assert sweep_worker.run_worker(spec, url) == {"complete": 2}
    assert ran == [
        ("t-relost/t0000/sweep_trial.ipynb", {"seed": 0, "run_name": "t-relost/t0000"}),
        ("t-relost/t0001/sweep_trial.ipynb", {"seed": 1, "run_name": "t-relost/t0001", "resume": True}),
    ]
    trials = sweep_trials(optuna.load_study(study_name="t-relost", storage=sweep_study.open_storage(url)))
    assert list(zip(trials["number"], trials["state"], trials["outcome"], trials["param_seed"])) == [
        (0, "COMPLETE", "complete", 0),
        (1, "FAIL", "lost", 1),
        (2, "COMPLETE", "complete", 1),
    ]
    assert trials.loc[2, "retry_of"] == 1 and trials.loc[2, "run_name"] == "t-relost/t0001"


# ------------------------------------------------------------------ the worker's decisions, function by function
def test_a_trials_run_name_is_built_by_the_worker_and_parsed_back_by_training_in_one_module():
    from fh_utils.sweeps.trial import split_run_name, trial_run_name

    assert trial_run_name("st2-seeds", 7) == "st2-seeds/t0007"
    assert split_run_name(trial_run_name("st2-seeds", 7)) == ("st2-seeds", "t0007")
    assert split_run_name("plain-run") == ("", "plain-run")
    with pytest.raises(ValueError, match="the sweep part"):
        split_run_name("bad sweep/t0000")


def test_a_trial_is_lost_by_a_dead_pid_of_this_host_or_a_silent_heartbeat_only():
    import socket
    from datetime import datetime
    from types import SimpleNamespace

    from fh_utils.sweeps.worker import _is_lost

    now, here, dead = 10_000.0, socket.gethostname(), 2**22 + 12345  # above pid_max: no such process here

    def trial(beat=None, started=None):
        return SimpleNamespace(user_attrs={"heartbeat": beat} if beat else {},
                               datetime_start=datetime.fromtimestamp(started) if started else None)  # fmt: skip

    assert _is_lost(trial({"host": here, "pid": dead, "time": now}), now, grace=120)
    assert not _is_lost(trial({"host": here, "pid": os.getpid(), "time": now - 119}), now, grace=120)
    assert _is_lost(trial({"host": here, "pid": os.getpid(), "time": now - 121}), now, grace=120)
    assert not _is_lost(trial({"host": "another-machine", "pid": dead, "time": now - 60}), now, grace=120), (
        "a pid of another machine says nothing about it here")  # fmt: skip
    assert _is_lost(trial({"host": "another-machine", "pid": dead, "time": now - 121}), now, grace=120)
    assert not _is_lost(trial(started=now - 60), now, grace=120) and _is_lost(trial(started=now - 121), now, grace=120)


def test_a_search_starts_n_trials_counting_a_lost_and_retried_trial_once(tmp_path):
    import socket

    from fh_utils.sweeps import study as sweep_study
    from fh_utils.sweeps import worker as sweep_worker

    spec = load_spec({"name": "t-count", "notebook": str(TRIAL_NB), "search": {"seed": {"low": 0, "high": 9}},
                      "n_trials": 2})  # fmt: skip
    study = sweep_study.load_study(spec, f"journal://{tmp_path / 'journal.log'}")
    first = sweep_worker.claim_trial(study, spec)
    sweep_worker.suggest(first, spec)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    beat = {"host": socket.gethostname(), "pid": dead.pid, "time": time.time()}
    study._storage.set_trial_user_attr(first._trial_id, "heartbeat", beat)
    assert sweep_worker.recover_lost_trials(study) == [0]
    retry = sweep_worker.claim_trial(study, spec)  # the retry of trial 0 (waiting) first
    assert retry.number == 1 and study._storage.get_trial(retry._trial_id).system_attrs["failed_trial"] == 0
    study.tell(retry, 0.5)
    second = sweep_worker.claim_trial(study, spec)  # trial 0 and its retry are one trial: a second one starts
    assert second is not None and second.number == 2
    assert sweep_worker.claim_trial(study, spec) is None, "n_trials=2 started: nothing more"
    assert [t.number for t in study.get_trials(deepcopy=False)] == [0, 1, 2]


def _stub_trial(tmp_path, monkeypatch, spec_values: dict, threads: int, raise_exc=None):
    """run_trial of a one-point grid with the notebook stubbed: the params it got, the outcome, the trial."""
    from fh_utils.sweeps import study as sweep_study
    from fh_utils.sweeps import worker as sweep_worker

    got = []

    def notebook(nb, output, params, timeout=None):
        got.append(dict(params))
        if raise_exc is not None:
            raise raise_exc
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        (Path(output).parent / "metrics.json").write_text('{"score": 0.5}')

    monkeypatch.setattr(sweep_worker, "execute_trial_notebook", notebook)
    spec = load_spec({"notebook": str(TRIAL_NB), "grid": {"seed": [4]}, **spec_values})
    url = f"journal://{tmp_path / spec.name / 'journal.log'}"
    study = sweep_study.load_study(spec, url)
    sweep_study.enqueue_grid(study, spec)
    trial = sweep_worker.claim_trial(study, spec)
    outcome = sweep_worker.run_trial(study, trial, spec, url, threads=threads)
    return got[0], outcome, study.get_trials(deepcopy=False)[0]


def test_a_trial_gets_the_workers_thread_share_unless_the_spec_fixes_threads(tmp_path, monkeypatch):
    params, outcome, trial = _stub_trial(tmp_path, monkeypatch, {"name": "t-thr-a"}, threads=3)
    assert (params, outcome) == ({"seed": 4, "run_name": "t-thr-a/t0000", "threads": 3}, "complete")
    assert Path(trial.user_attrs["run_dir"]).relative_to(Path(os.environ["FH_OUTPUTS"])) == Path("runs/t-thr-a/t0000")
    params, _, _ = _stub_trial(tmp_path, monkeypatch, {"name": "t-thr-b", "fixed": {"threads": 1}}, threads=3)
    assert params == {"threads": 1, "seed": 4, "run_name": "t-thr-b/t0000"}
    params, _, _ = _stub_trial(tmp_path, monkeypatch, {"name": "t-thr-c"}, threads=0)
    assert params == {"seed": 4, "run_name": "t-thr-c/t0000"}


def test_a_notebook_stopped_by_the_pruner_ends_its_trial_pruned_and_another_error_failed(tmp_path, monkeypatch):
    """papermill names the exception by its class name, as the kernel reports it: ``TrialPruned``."""
    from optuna.trial import TrialState
    from papermill.exceptions import PapermillExecutionError

    pruned = PapermillExecutionError(3, 3, "fit(...)", "TrialPruned", "pruned at epoch 2", [])
    _, outcome, trial = _stub_trial(tmp_path, monkeypatch, {"name": "t-pr"}, threads=0, raise_exc=pruned)
    assert (outcome, trial.state, trial.user_attrs["outcome"]) == ("pruned", TrialState.PRUNED, "pruned")
    assert trial.user_attrs["error"] == "TrialPruned: pruned at epoch 2"
    failed = PapermillExecutionError(3, 3, "fit(...)", "ValueError", "boom", [])
    _, outcome, trial = _stub_trial(tmp_path, monkeypatch, {"name": "t-fl"}, threads=0, raise_exc=failed)
    assert (outcome, trial.state, trial.user_attrs["error"]) == ("failed", TrialState.FAIL, "ValueError: boom")


def test_fixed_values_given_to_the_command_override_the_spec_and_a_swept_name_cannot_be_fixed():
    spec = load_spec({"name": "s", "notebook": str(TRIAL_NB), "fixed": {"epochs": 3, "limit": 8},
                      "grid": {"seed": [0]}}, epochs=1)  # fmt: skip
    assert spec.fixed == {"epochs": 1, "limit": 8}
    with pytest.raises(ValueError, match=r"^sweep 's': \['seed'\] both fixed and swept$"):
        load_spec({"name": "s", "notebook": str(TRIAL_NB), "fixed": {"seed": 1}, "grid": {"seed": [0]}})
    with pytest.raises(ValueError, match=r"^sweep 's': \['seed'\] both fixed and swept$"):
        load_spec({"name": "s", "notebook": str(TRIAL_NB), "grid": {"seed": [0]}}, seed=1)


def test_every_shipped_sweep_spec_loads():
    """A spec in sweeps/ naming a setting no notebook declares (or a notebook that does not exist) is an error."""
    from pathlib import Path

    specs = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))
    assert len(specs) >= 4
    for path in specs:
        load_spec(path)
