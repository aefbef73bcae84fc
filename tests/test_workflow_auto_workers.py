"""``num_workers = -1`` (the training notebooks' default) means automatic; config.json records the number chosen."""

from __future__ import annotations

import json

import pytest

from fh_utils.data import workers
from fh_utils.data.workers import resolve_num_workers
from fh_utils.workbook import workflow


@pytest.mark.parametrize("cores,device,cache,expected", [
    (1, "cpu", False, 0),
    (2, "cpu", True, 0),  # a worker competes with training on 2 cores
    (2, "cuda", False, 0),
    (None, "cpu", False, 0),  # os.cpu_count() may not know
    (8, "cpu", True, 4),  # half the cores on CPU (the other half trains)
    (16, "cpu", False, 8),
    (16, "cpu", True, 4),  # cached crops are cheap to load: fewer workers
    (4, "cuda", False, 3),  # all cores but the main process when a GPU trains
    (64, "cuda", False, 8),
])  # fmt: skip
def test_auto_is_chosen_from_the_cores_device_and_cache(monkeypatch, cores, device, cache, expected):
    monkeypatch.setattr(workers.os, "cpu_count", lambda: cores)
    assert resolve_num_workers(-1, device, cache) == expected


@pytest.mark.parametrize("value", [0, 1, 3, 12])
def test_an_explicit_number_is_kept(monkeypatch, value):
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 2)
    assert resolve_num_workers(value, "cpu", True) == value


def test_the_training_notebooks_default_to_auto():
    from fh_utils.paths import notebooks_dir
    from fh_utils.runner.notebooks import notebook_parameters

    for name in ("03_train_st1.ipynb", "04_train_st2.ipynb"):
        assert notebook_parameters(notebooks_dir() / name)["num_workers"]["default"] == "-1", name


def test_config_json_records_the_resolved_number(demo_root, monkeypatch):
    params = {"data_root": str(demo_root), "run_name": "auto-workers", "backbone": "fh_colornet", "img_size": 32,
              "epochs": 1, "batch_size": 16, "device": "cpu", "num_workers": -1, "limit": 32,
              "augment": "none"}  # fmt: skip
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 16)
    setup = workflow.prepare_training("st2", {**params, "cache": True})
    assert setup.data.num_workers == 4 and setup.sections()["data"]["num_workers"] == 4  # sections -> config.json
    assert "4 loader workers" in setup.describe()
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 2)  # end to end without starting worker processes
    run_dir, _ = workflow.train_from_params("st2", {**params, "color_baseline": False}, progress=False)
    assert json.loads((run_dir / "config.json").read_text())["data"]["num_workers"] == 0


def test_a_gpu_trial_gets_the_workers_that_keep_up_with_its_gpu(monkeypatch):
    """With the cache, ceil(headroom * GPU img/s / crops/s of one worker) for the nearest measured side, never
    more than the trial's cores leave beside its main process (issue 22)."""
    monkeypatch.setattr(workers, "GPU_TRAIN_IMG_PER_S", {56: 4000.0, 224: 1000.0})
    monkeypatch.setattr(workers, "CACHED_CROPS_PER_S_PER_WORKER", {56: 1000.0, 224: 500.0})
    monkeypatch.setattr(workers, "LOADER_HEADROOM", 1.25)
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 16)
    assert resolve_num_workers(-1, "cuda", True, img_size=56) == 5  # ceil(1.25 * 4000 / 1000)
    assert resolve_num_workers(-1, "cuda", True, img_size=64) == 5  # 64 px: the 56 px figures
    assert resolve_num_workers(-1, "cuda", True, img_size=224) == 3  # ceil(1.25 * 1000 / 500)
    assert resolve_num_workers(-1, "cuda", True, img_size=56, cores=4) == 3  # a sweep trial's share of 4 cores
    assert resolve_num_workers(-1, "cuda", False, img_size=224, cores=4) == 3  # no cache: every spare core
    assert resolve_num_workers(-1, "cuda", True, img_size=56, cores=2) == 0
    assert workers.workers_to_keep_up(10.0, 1000.0) == 1  # a slow GPU still gets a worker


def test_a_sweep_trials_threads_are_the_cores_its_workers_come_from(demo_root, monkeypatch):
    params = {"data_root": str(demo_root), "run_name": "auto-threads", "backbone": "fh_colornet", "img_size": 32,
              "device": "cpu", "num_workers": -1, "cache": True}  # fmt: skip
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 16)
    assert workflow.prepare_training("st2", params).data.num_workers == 4
    assert workflow.prepare_training("st2", {**params, "threads": 4}).data.num_workers == 2  # 4 cores: half
