"""int8 export, unit by unit, on tiny untrained run folders written as training writes them (no training).

Pinned down: which Linear layers are quantised (not those a ``q_bias`` parent reads directly); the int8 copy's
layers, dtype, configs and outputs close to the float model's; the exact ``model_int8.pt``, ``config.json`` (the
run's, kind ``int8``) and ``export.json`` an export writes, its default folder, the crop settings it keeps; the
load's round trip from file or folder, its refusal of other files (exact message) and of pickled code, and its
CPU mapping of GPU-written files; no quantisation warnings reach the user.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from fh_utils.io import read_json, write_json
from fh_utils.models.export import INT8_KIND, export_int8, load_int8, quantizable_linears, quantize_int8
from fh_utils.models.factory import create_model, load_model, state_dict_size_mb
from fh_utils.runs import INT8_FILE

IMG = 16  # ColorNet runs at any size; 16 px keeps every forward pass a few milliseconds
DYNAMIC_LINEAR = torch.ao.nn.quantized.dynamic.Linear


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("st2", "fh_colornet", img_size=IMG, check_size=False).eval()


RUN_CONFIG = {"task": {"name": "st2"}, "run": {"name": "r", "kind": "train"},
              "data": {"crop_margin": 0.4, "crop_prob": 0.5, "img_size": IMG, "batch_size": 8}}  # fmt: skip


def _run(folder: Path, seed: int = 0, config: dict | None = RUN_CONFIG) -> Path:
    """A run folder as training leaves it: best.pt as the engine's save_weights writes it, and config.json."""
    model = _model(seed)
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "model_config": model.model_config, "epoch": 0, "best_score": 0.0},
               folder / "best.pt")  # fmt: skip
    if config is not None:
        write_json(folder / "config.json", config)
    return folder


def _state(path: Path) -> dict:
    """The saved dict of an export, as a weights-only load reads it (torch warns about the int8 storages)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def _batch(n: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, IMG, IMG), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(_batch())["Color"]


class _Attention(nn.Module):
    """Like timm's EVA attention: reads ``self.qkv.weight`` itself, with a separately stored ``q_bias``."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(4, 12, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(4))
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        return self.proj(nn.functional.linear(x, self.qkv.weight)[:, :4] + self.q_bias)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.block = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 4)))
        self.attn = _Attention()
        self.norm = nn.LayerNorm(4)

    def forward(self, x):
        return self.norm(self.attn(self.block(self.fc(x))))


# ---------------------------------------------------------------------------------------- quantisation


def test_quantizable_linears_names_every_linear_but_those_a_q_bias_parent_reads():
    assert quantizable_linears(_Net()) == ["fc", "block.0", "block.2.0"]
    assert quantizable_linears(nn.Linear(2, 2)) == []  # the root itself has no parent that could replace it
    assert quantizable_linears(_model()) == ["heads.Color"]  # ColorNet: convolutions, one Linear head


def test_quantize_int8_replaces_those_linears_by_int8_ones_and_leaves_the_rest():
    net = _Net().train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = quantize_int8(net)
    assert caught == []  # torch's notice about eager quantisation moving to torchao stays inside
    assert not q.training
    assert isinstance(q.fc, DYNAMIC_LINEAR) and isinstance(q.block[0], DYNAMIC_LINEAR)
    assert isinstance(q.block[2][0], DYNAMIC_LINEAR) and q.fc.weight().dtype == torch.qint8
    assert type(q.attn.qkv) is nn.Linear and type(q.attn.proj) is nn.Linear  # read as .weight: kept float
    assert type(q.norm) is nn.LayerNorm and type(net.fc) is nn.Linear  # the source model is not changed
    assert q.model_config == {} and q.input_config == {}  # a plain module has none: empty, not an error
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(q(x), net.eval()(x), atol=0.05)


def test_an_int8_fashionhownet_keeps_its_configs_and_predicts_close_to_fp32():
    model = _model(seed=2)
    q = quantize_int8(model)
    assert q.model_config == model.model_config and q.input_config == model.input_config
    assert q.model_config is not model.model_config  # copies: editing one leaves the other
    assert isinstance(q.heads["Color"], DYNAMIC_LINEAR) and q.heads["Color"].weight().dtype == torch.qint8
    ref, out = _logits(model), _logits(q)
    assert not torch.equal(ref, out)  # really quantised
    assert torch.allclose(ref, out, atol=0.05 * ref.abs().max().item())
    assert torch.allclose(ref.softmax(1), out.softmax(1), atol=0.01)


# ------------------------------------------------------------------------------------------------ export


def test_export_writes_model_int8_pt_with_the_run_s_crop_settings(tmp_path):
    run = _run(tmp_path / "runs" / "r", seed=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_int8(run)
    assert caught == []
    assert path == tmp_path / "runs" / "r-int8" / INT8_FILE and INT8_FILE == "model_int8.pt"
    state = _state(path)
    assert set(state) == {"kind", "model", "model_config", "data", "source"}
    assert state["kind"] == INT8_KIND == "int8_dynamic"
    assert state["model_config"] == _model().model_config and state["source"] == str(run)
    assert state["data"] == {"crop_margin": 0.4, "crop_prob": 0.5}  # the crop settings only, as the run had them
    q = quantize_int8(load_model(run))
    assert set(state["model"]) == set(q.state_dict())


def test_export_writes_the_run_s_config_as_int8_and_the_sizes(tmp_path):
    run = _run(tmp_path / "r", seed=3)
    path = export_int8(run, tmp_path / "exports" / "small")  # parents made as needed
    out = tmp_path / "exports" / "small"
    assert path == out / INT8_FILE
    assert read_json(out / "config.json") == {**RUN_CONFIG, "run": {"name": "r", "kind": "int8", "source": str(run)}}
    fp32 = load_model(run)
    assert read_json(out / "export.json") == {
        "source": str(run), "fp32_mb": round(state_dict_size_mb(fp32), 4),
        "int8_mb": round(state_dict_size_mb(quantize_int8(fp32)), 4), "file_mb": round(path.stat().st_size / 1e6, 4),
        "quantization": "int8_dynamic",
    }  # fmt: skip
    assert read_json(run / "config.json") == RUN_CONFIG  # the source run is left as it was
    # Exporting again (a retrained run) overwrites the folder's files.
    assert export_int8(run, out) == path and read_json(out / "config.json")["run"]["kind"] == "int8"


def test_export_of_a_run_without_config_or_crop_settings(tmp_path):
    bare = _run(tmp_path / "bare", config=None)
    path = export_int8(str(bare))
    assert read_json(path.parent / "config.json") == {"run": {"kind": "int8", "source": str(bare)}}
    assert _state(path)["data"] == {}
    assert load_int8(path)[1] == {}
    one = _run(tmp_path / "one", config={"data": {"crop_margin": 0.25}})
    assert load_int8(export_int8(one))[1] == {"crop_margin": 0.25}
    nodata = _run(tmp_path / "nodata", config={"task": {"name": "st2"}})
    path = export_int8(nodata)
    assert load_int8(path)[1] == {}
    assert read_json(path.parent / "config.json") == {"task": {"name": "st2"},
                                                      "run": {"kind": "int8", "source": str(nodata)}}  # fmt: skip


# -------------------------------------------------------------------------------------------------- load


def test_load_int8_gives_back_the_exported_model_and_settings_from_file_or_folder(tmp_path):
    run = _run(tmp_path / "r", seed=5)
    path = export_int8(run)
    want = _logits(quantize_int8(load_model(run)))
    fp32 = _logits(load_model(run))
    for source in (path, path.parent, str(path)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, data = load_int8(source)
        assert caught == []
        assert data == {"crop_margin": 0.4, "crop_prob": 0.5}
        assert not model.training and isinstance(model.heads["Color"], DYNAMIC_LINEAR)
        assert model.model_config == _model().model_config and model.input_config == _model().input_config
        got = _logits(model)
        assert torch.equal(got, want)  # the saved int8 weights, not a fresh quantisation of random ones
        assert torch.allclose(got.softmax(1), fp32.softmax(1), atol=0.01)


def test_load_int8_refuses_a_file_that_is_not_an_int8_export(tmp_path):
    run = _run(tmp_path / "r")
    with pytest.raises(ValueError) as err:
        load_int8(run / "best.pt")
    assert str(err.value) == f"{run / 'best.pt'} is not an int8 export (kind None)"
    folder = tmp_path / "ens"
    folder.mkdir()
    torch.save({"kind": "ensemble", "members": []}, folder / INT8_FILE)
    with pytest.raises(ValueError) as err:
        load_int8(folder)  # the folder stands for its model_int8.pt, named in the message
    assert str(err.value) == f"{folder / INT8_FILE} is not an int8 export (kind 'ensemble')"
    # An export written without crop settings loads with none (the scorer's defaults apply).
    path = export_int8(run)
    state = _state(path)
    del state["data"]
    torch.save(state, path)
    assert load_int8(path)[1] == {}


class _NotATensor:
    """Pickled code: a weights-only load refuses it."""


def test_load_int8_refuses_a_file_with_pickled_code_even_where_torch_s_default_is_off(tmp_path, monkeypatch):
    path = export_int8(_run(tmp_path / "r"))
    state = _state(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save({**state, "code": _NotATensor()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_int8(path)
    # This variable turns torch.load's default to unpickling anything; an explicit weights_only=True still holds.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(pickle.UnpicklingError):
        load_int8(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA-tagged file loads anyway where CUDA exists")
def test_a_run_and_an_export_written_on_a_gpu_load_on_the_cpu_only_scoring_machine(tmp_path, monkeypatch):
    run = tmp_path / "gpu-run"
    run.mkdir()
    model = _model(seed=6)
    with monkeypatch.context() as m:  # every tensor's storage tagged cuda:0 in the file, as a GPU machine writes it
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save({"model": model.state_dict(), "model_config": model.model_config}, run / "best.pt")
        with pytest.raises(RuntimeError, match="CUDA"):  # the file really is a GPU one
            torch.load(run / "best.pt", weights_only=True)
        path = export_int8(run)
    assert torch.equal(_logits(load_int8(path)[0]), _logits(quantize_int8(model)))
