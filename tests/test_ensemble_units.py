"""ST2 ensembles, unit by unit, on tiny untrained run folders written as training writes them (no training).

Pinned down: a member's crop key and the settings, weight, name, size and score it takes from its run folder;
the ST1 refusal and the budget refusal with their exact messages (the 25 MB boundary included); the task the
members must share; the weights of ``build_ensemble``; the exact ``ensemble.pt``, ``manifest.json`` and
``config.json`` a save writes; the load's round trip, its defaults, its refusal of pickled code and its CPU
mapping of GPU-written files; the weighted average against a hand computation.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fh_utils.io import read_json, write_json
from fh_utils.models import ensemble
from fh_utils.models.ensemble import (
    Member,
    average_probabilities,
    build_ensemble,
    check_budget,
    check_ensemble_allowed,
    load_ensemble,
    member_from_run,
    members_task,
    save_ensemble,
)
from fh_utils.models.factory import RulesError, create_model, state_dict_size_mb
from fh_utils.runs import ENSEMBLE_FILE, MANIFEST_FILE
from fh_utils.tasks import Rules, get_task

IMG = 16  # ColorNet runs at any size; 16 px keeps every forward pass a few milliseconds


def _model(task: str = "st2", seed: int = 0, img_size: int = IMG):
    torch.manual_seed(seed)
    return create_model(task, "fh_colornet", img_size=img_size, check_size=False).eval()


def _run(folder: Path, task: str = "st2", seed: int = 0, data: dict | None = None, score: float | None = None,
         img_size: int = IMG) -> Path:  # fmt: skip
    """A run folder as training leaves it: best.pt as the engine's save_weights writes it, config.json, metrics."""
    model = _model(task, seed, img_size)
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "model_config": model.model_config, "epoch": 0, "best_score": 0.0},
               folder / "best.pt")  # fmt: skip
    if data is not None:
        write_json(folder / "config.json", {"task": {"name": task}, "data": data})
    if score is not None:
        write_json(folder / "metrics.json", {"score": score, "epoch": 0})
    return folder


def _batch(seed: int = 0, n: int = 4) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, IMG, IMG), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(_batch())["Color"]


def _stub(img_size=IMG, spaces=("rgb",)):
    """Just what input_key reads of a model."""
    return SimpleNamespace(input_config={"img_size": img_size, "color_spaces": list(spaces)})


# ------------------------------------------------------------------------------------------- Member


def test_a_member_defaults_to_weight_one_and_no_crop_settings():
    m = Member(_stub())
    assert (m.data, m.weight, m.name, m.size_mb, m.score) == ({}, 1.0, "", 0.0, None)
    assert Member(_stub()).data is not m.data  # each member its own dict


def test_input_key_is_size_spaces_margin_whether_crops_are_used_and_the_resize():
    key = Member(_stub()).input_key()
    # Defaults: no margin, crops used (crop_prob 1.0), stretched (no pad colour); typed so keys of JSON-read and live
    # settings compare equal.
    assert key == (IMG, ("rgb",), 0.0, True, "stretch", None)
    assert [type(k) for k in key] == [int, tuple, float, bool, str, type(None)]
    assert Member(_stub(32.0, ("rgb", "hsv")), {"crop_margin": 1, "crop_prob": 0.5}).input_key() == (
        32, ("rgb", "hsv"), 1.0, True, "stretch", None)  # fmt: skip
    assert type(Member(_stub(32.0)).input_key()[0]) is int
    # crop_prob 0 means whole images: a different batch from any member that crops, however small its prob.
    assert Member(_stub(), {"crop_margin": 0.2, "crop_prob": 0.0}).input_key()[:4] == (IMG, ("rgb",), 0.2, False)
    assert Member(_stub(), {"crop_prob": 1e-6}).input_key()[3] is True
    assert Member(_stub(), {"crop_margin": 0.2}).input_key()[:4] == (IMG, ("rgb",), 0.2, True)
    # tests/test_letterbox.py: the letterbox and its pad colour (a stretch ignores the pad colour).


# -------------------------------------------------------------------------------------- member_from_run


def test_a_member_from_a_run_has_its_weights_crop_settings_size_and_score(tmp_path):
    run = _run(tmp_path / "runs" / "a", seed=3, data={"crop_margin": 0.1, "crop_prob": 1, "img_size": IMG},
               score=0.42)  # fmt: skip
    m = member_from_run(run, weight=2)
    assert torch.equal(_logits(m.model), _logits(_model(seed=3)))  # the saved weights, not fresh ones
    assert not m.model.training
    assert m.data == {"crop_margin": 0.1, "crop_prob": 1.0} and type(m.data["crop_prob"]) is float
    assert type(m.weight) is float and m.weight == 2.0
    assert m.name == str(run) and m.score == 0.42
    assert m.size_mb == state_dict_size_mb(_model()) > 0
    assert member_from_run(str(run)).weight == 1.0


def test_a_member_from_a_run_without_config_or_metrics_has_no_settings_and_no_score(tmp_path):
    bare = member_from_run(_run(tmp_path / "bare"))
    assert bare.data == {} and bare.score is None and bare.weight == 1.0
    # A config without a data section, metrics without a score, a data section with one of the two settings.
    run = _run(tmp_path / "partial", data={"crop_margin": 0.3})
    write_json(run / "metrics.json", {"epoch": 2})
    partial = member_from_run(run)
    assert partial.data == {"crop_margin": 0.3} and partial.score is None
    write_json(run / "config.json", {"task": {"name": "st2"}})
    assert member_from_run(run).data == {}
    write_json(run / "config.json", {"data": {"crop_prob": 0}})
    assert member_from_run(run).data == {"crop_prob": 0.0}


def _gpu_tagged_save(monkeypatch, save):
    """Run ``save`` as on a GPU machine: every tensor's storage is tagged ``cuda:0`` in the file."""
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA-tagged file loads anyway where CUDA exists")
def test_a_run_and_an_ensemble_written_on_a_gpu_load_on_the_cpu_only_scoring_machine(tmp_path, monkeypatch):
    model = _model(seed=1)
    run = tmp_path / "gpu-run"
    run.mkdir()
    _gpu_tagged_save(monkeypatch, lambda: torch.save({"model": model.state_dict(), "model_config": model.model_config},
                                                     run / "best.pt"))  # fmt: skip
    with pytest.raises(RuntimeError, match="CUDA"):  # the file really is a GPU one
        torch.load(run / "best.pt", weights_only=True)
    m = member_from_run(run)
    assert torch.equal(_logits(m.model), _logits(model))
    _gpu_tagged_save(monkeypatch, lambda: save_ensemble([m], tmp_path / "gpu-ens"))
    assert torch.equal(_logits(load_ensemble(tmp_path / "gpu-ens")[0].model), _logits(model))


# ------------------------------------------------------------------------------------------------ rules


ST1_REFUSAL = ("st1: the competition rules forbid ensembles for this sub-task (one model per submission; 2 runs "
               "given); submit one run, or pass enforce_rules=False to experiment outside the rules")  # fmt: skip


def test_st1_refuses_two_models_by_default_and_allows_one_or_rules_off():
    st1 = get_task("st1")
    with pytest.raises(RulesError) as err:
        check_ensemble_allowed(st1, 2)
    assert str(err.value) == ST1_REFUSAL
    with pytest.raises(RulesError, match=r"\(one model per submission; 5 runs given\)"):
        check_ensemble_allowed(st1, 5, enforce_rules=True)
    assert check_ensemble_allowed(st1, 1) is None  # one model is no ensemble
    assert check_ensemble_allowed(st1, 2, enforce_rules=False) is None
    assert check_ensemble_allowed(get_task("st2"), 3) is None


def test_the_budget_error_names_the_total_each_member_and_the_budget():
    st2 = get_task("st2")
    members = [Member(_stub(), size_mb=10, name="/x/runs/a"), Member(_stub(), size_mb=16.004, name="runs/b")]
    with pytest.raises(RulesError) as err:
        check_budget(members, st2)
    assert str(err.value) == ("st2: the ensemble's members sum to 26.00 MB (a 10.00, b 16.00), over the 25 MB "
                              "budget; drop members or pass size_budget=False")  # fmt: skip
    total = check_budget(members, st2, size_budget=False)
    assert type(total) is float and total == 26.004
    assert check_budget(members[:1], st2) == 10.0 and type(check_budget(members[:1], st2)) is float


def test_the_budget_allows_exactly_25_mb_and_uses_the_task_s_own_budget():
    st2 = get_task("st2")
    assert check_budget([Member(_stub(), size_mb=12.5), Member(_stub(), size_mb=12.5)], st2) == 25.0
    with pytest.raises(RulesError, match=r"sum to 25\.00 MB \(a 25\.00\)"):
        check_budget([Member(_stub(), size_mb=25.001, name="a")], st2)
    small = replace(st2, rules=Rules(size_budget_mb=2.5))
    with pytest.raises(RulesError, match=r"^st2: .* sum to 3\.00 MB \(m 3\.00\), over the 2\.5 MB budget;"):
        check_budget([Member(_stub(), size_mb=3.0, name="m")], small, True)


# ------------------------------------------------------------------------------------------ members_task


def _cfg_stub(task: str, class_names=None):
    cfg = {"task": task} if class_names is None else {"task": task, "class_names": class_names}
    return Member(SimpleNamespace(model_config=cfg))


def test_members_must_share_task_and_class_names():
    with pytest.raises(ValueError) as err:
        members_task([_cfg_stub("st2"), _cfg_stub("st1"), _cfg_stub("st2")])
    assert str(err.value) == ("ensemble members were trained for different tasks or classes: "
                              "['[\"st1\", null]', '[\"st2\", null]']")  # fmt: skip
    names = list(get_task("st2").heads[0].class_names)
    renamed = names[:-1] + ["Charcoal"]
    with pytest.raises(ValueError, match="different tasks or classes"):
        members_task([_cfg_stub("st2", {"Color": names}), _cfg_stub("st2", {"Color": renamed})])
    # Agreeing members: their task, with the class names they were trained with.
    task = members_task([_cfg_stub("st2", {"Color": renamed}), _cfg_stub("st2", {"Color": renamed})])
    assert task.name == "st2" and task.heads[0].class_names == tuple(renamed)
    assert members_task([_cfg_stub("st1")]).name == "st1"


# ---------------------------------------------------------------------------------------- build_ensemble


def test_build_ensemble_loads_the_runs_in_order_with_their_weights(tmp_path):
    runs = [_run(tmp_path / "a", seed=1, data={"crop_margin": 0.1}), _run(tmp_path / "b", seed=2)]
    members = build_ensemble(runs)
    assert [m.name for m in members] == [str(r) for r in runs]
    assert [m.weight for m in members] == [1.0, 1.0]
    assert [m.data for m in members] == [{"crop_margin": 0.1}, {}]
    assert torch.equal(_logits(members[1].model), _logits(_model(seed=2)))
    weighted = build_ensemble(runs, weights=(3, 1))
    assert [m.weight for m in weighted] == [3.0, 1.0] and all(type(m.weight) is float for m in weighted)
    assert [m.weight for m in build_ensemble(runs, weights=[])] == [1.0, 1.0]  # empty: equal weights


def test_build_ensemble_names_a_wrong_weight_count_and_an_empty_list(tmp_path):
    runs = [_run(tmp_path / "a"), _run(tmp_path / "b")]
    with pytest.raises(ValueError, match=r"^1 weights for 2 runs$"):
        build_ensemble(runs, weights=[1.0])
    with pytest.raises(ValueError, match=r"^3 weights for 2 runs$"):
        build_ensemble(runs, weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"^an ensemble needs at least one run folder$"):
        build_ensemble([])
    with pytest.raises(ValueError, match="different tasks"):
        build_ensemble([runs[0], _run(tmp_path / "st1", task="st1")], enforce_rules=False)


def test_build_ensemble_applies_the_st1_rule_and_the_budget_unless_told_not_to(tmp_path, monkeypatch):
    st1 = [_run(tmp_path / "s1", task="st1"), _run(tmp_path / "s2", task="st1")]
    with pytest.raises(RulesError, match="forbid ensembles"):
        build_ensemble(st1)
    assert len(build_ensemble(st1, enforce_rules=False)) == 2
    runs = [_run(tmp_path / "a"), _run(tmp_path / "b")]
    monkeypatch.setattr(ensemble, "state_dict_size_mb", lambda model: 13.0)  # each member as if 13 MB
    with pytest.raises(RulesError, match=r"sum to 26\.00 MB \(a 13\.00, b 13\.00\), over the 25 MB budget"):
        build_ensemble(runs)
    assert [m.size_mb for m in build_ensemble(runs, size_budget=False)] == [13.0, 13.0]
    with pytest.raises(RulesError, match="forbid ensembles"):  # the rule comes first, budget or not
        build_ensemble(st1, size_budget=False)


# ------------------------------------------------------------------------------------------ save / load


@pytest.fixture()
def two_members(tmp_path) -> list[Member]:
    a = member_from_run(_run(tmp_path / "runs" / "a", seed=1, data={"crop_margin": 0.1, "crop_prob": 1.0},
                             score=0.5), weight=3)  # fmt: skip
    b = member_from_run(_run(tmp_path / "runs" / "b", seed=2, data={"crop_prob": 0.0}), weight=1)
    # Names of a fixed length: ensemble.pt then has the same size on every machine (see the file_mb check).
    a.name, b.name = "outputs/runs/a", "outputs/runs/b"
    return [a, b]


def test_save_ensemble_writes_the_exact_manifest_and_config(two_members, tmp_path):
    a, b = two_members
    folder = tmp_path / "outputs" / "runs" / "ens"  # parents made as needed
    path = save_ensemble(two_members, folder, extra={"score": 0.7, "note": "val"})
    assert path == folder / ENSEMBLE_FILE == folder / "ensemble.pt" and path.is_file()
    member_rows = [
        {"run": a.name, "weight": 3.0, "size_mb": round(a.size_mb, 4), "score": 0.5, "backbone": "fh_colornet",
         "img_size": IMG, "color_spaces": ["rgb"], "crop_margin": 0.1, "crop_prob": 1.0},
        {"run": b.name, "weight": 1.0, "size_mb": round(b.size_mb, 4), "score": None, "backbone": "fh_colornet",
         "img_size": IMG, "color_spaces": ["rgb"], "crop_prob": 0.0},
    ]  # fmt: skip
    assert read_json(folder / MANIFEST_FILE) == {
        "task": "st2", "members": member_rows, "size_mb": round(a.size_mb + b.size_mb, 4),
        "file_mb": round(path.stat().st_size / 1e6, 4), "budget_mb": 25.0, "score": 0.7, "note": "val",
    }  # fmt: skip
    assert read_json(folder / "config.json") == {"run": {"kind": "ensemble", "members": 2}, "task": {"name": "st2"}}
    assert MANIFEST_FILE == "manifest.json"
    assert path.stat().st_size % 100, "a size in whole hundreds of bytes could not tell 4 decimals of MB from 5"
    # Without extra: nothing more in the manifest; saving into an existing folder replaces its files.
    save_ensemble(two_members[1:], tmp_path / "one")
    save_ensemble(two_members[1:], tmp_path / "one")
    assert set(read_json(tmp_path / "one" / "manifest.json")) == {"task", "members", "size_mb", "file_mb",
                                                                 "budget_mb"}  # fmt: skip


def test_ensemble_pt_holds_every_member_in_plain_containers(two_members, tmp_path):
    path = save_ensemble(two_members, tmp_path / "ens")
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == {"kind", "task", "members"} and (state["kind"], state["task"]) == ("ensemble", "st2")
    assert len(state["members"]) == 2
    for saved, m in zip(state["members"], two_members):
        assert set(saved) == {"model", "model_config", "data", "weight", "name", "size_mb", "score"}
        assert saved["model_config"] == m.model.model_config and saved["data"] == m.data
        assert (saved["weight"], saved["name"], saved["size_mb"], saved["score"]) == (m.weight, m.name, m.size_mb,
                                                                                      m.score)  # fmt: skip
        ref = m.model.state_dict()
        assert set(saved["model"]) == set(ref) and all(torch.equal(saved["model"][k], ref[k]) for k in ref)


def test_a_saved_ensemble_loads_back_from_its_file_or_folder(two_members, tmp_path):
    path = save_ensemble(two_members, tmp_path / "ens")
    for source in (path, path.parent, str(path.parent)):
        loaded = load_ensemble(source)
        assert [(m.data, m.weight, m.name, m.size_mb, m.score) for m in loaded] == [
            (m.data, m.weight, m.name, m.size_mb, m.score) for m in two_members]  # fmt: skip
        for got, want in zip(loaded, two_members):
            assert not got.model.training
            assert got.model.model_config == want.model.model_config
            assert torch.equal(_logits(got.model), _logits(want.model))


def test_load_ensemble_defaults_for_a_member_saved_with_weights_only(tmp_path):
    model = _model(seed=4)
    path = tmp_path / "minimal.pt"
    torch.save({"members": [{"model": model.state_dict(), "model_config": model.model_config},
                            {"model": model.state_dict(), "model_config": model.model_config, "weight": 2,
                             "size_mb": 1, "data": {"crop_margin": 0.5}}]}, path)  # fmt: skip
    first, second = load_ensemble(path)
    assert (first.data, first.weight, first.name, first.size_mb, first.score) == ({}, 1.0, "", 0.0, None)
    assert type(second.weight) is float and second.weight == 2.0
    assert type(second.size_mb) is float and second.size_mb == 1.0 and second.data == {"crop_margin": 0.5}
    assert torch.equal(_logits(first.model), _logits(model)) and not first.model.training


class _NotATensor:
    """Pickled code: a weights-only load refuses it."""


def test_load_ensemble_refuses_a_file_with_pickled_code_even_where_torch_s_default_is_off(tmp_path, monkeypatch):
    path = tmp_path / "ensemble.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save({"kind": "ensemble", "task": "st2", "members": [], "code": _NotATensor()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_ensemble(tmp_path)
    # This variable turns torch.load's default to unpickling anything; an explicit weights_only=True still holds.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(pickle.UnpicklingError):
        load_ensemble(path)


# ----------------------------------------------------------------------------------------- the average


def test_average_probabilities_is_the_normalised_weighted_mean():
    a = {"Color": np.array([[1.0, 0.0], [0.5, 0.5]]), "Daily": np.array([[0.2, 0.8]])}
    b = {"Color": np.array([[0.0, 1.0], [0.1, 0.9]]), "Daily": np.array([[0.6, 0.4]])}
    mean = average_probabilities([a, b], [3, 1])
    assert set(mean) == {"Color", "Daily"}
    # By hand: 3/4 of a plus 1/4 of b.
    np.testing.assert_allclose(mean["Color"], [[0.75, 0.25], [0.4, 0.6]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean["Daily"], [[0.3, 0.7]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(average_probabilities([a, b], [2.0, 2.0])["Color"], [[0.5, 0.5], [0.3, 0.7]],
                               rtol=0, atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(average_probabilities([b], [0.25])["Color"], b["Color"], rtol=0, atol=1e-12)
    # The columns are the first member's.
    assert set(average_probabilities([{"Color": a["Color"]}, b], [1, 1])) == {"Color"}


def test_average_probabilities_refuses_weights_that_do_not_sum_above_zero():
    p = [{"Color": np.ones((1, 2))}] * 2
    for weights in ([0, 0], [1.0, -1.0], [-1, -2]):
        with pytest.raises(ValueError) as err:
            average_probabilities(p, weights)
        assert str(err.value) == f"ensemble weights must sum to more than 0, got {weights}"
    np.testing.assert_allclose(average_probabilities(p, [1e-9, 0])["Color"], np.ones((1, 2)))
