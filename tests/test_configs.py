"""One configuration object per concern: strict, saved in config.json, reloadable, reachable from the notebooks."""

import dataclasses

import pytest
import torch

from fh_utils.config import UnknownSettingError
from fh_utils.data.config import DataConfig
from fh_utils.data.datasets import create_loaders
from fh_utils.data.workers import resolve_num_workers
from fh_utils.io import read_json
from fh_utils.models import create_model
from fh_utils.models.config import DEFAULT_BACKBONE, ModelConfig, backbone_defaults
from fh_utils.paths import notebooks_dir
from fh_utils.runner.notebooks import notebook_parameters
from fh_utils.training.config import TrainConfig
from fh_utils.training.engine import fit
from fh_utils.training.optim import default_lr
from fh_utils.workbook import workflow

API_ONLY = {"head_weights"}  # a dict: not a notebook literal (documented in TrainConfig's docstring)


def test_fit_refuses_an_unknown_setting_and_names_the_known_ones(demo_root, tmp_path):
    loaders = create_loaders(demo_root, "st2", img_size=32, batch_size=16, limit=32)
    model = create_model("st2", "fh_colornet", img_size=32)
    with pytest.raises(UnknownSettingError, match=r"\['warmup'\].*warmup_epochs"):
        fit(model, loaders, tmp_path / "run", epochs=1, warmup=2, progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_data_config_refuses_unknown_keys_and_bad_choices(demo_root):
    with pytest.raises(UnknownSettingError, match="img_sise"):
        create_loaders(demo_root, "st2", img_sise=32)
    with pytest.raises(UnknownSettingError):
        DataConfig.from_dict({"data_root": str(demo_root), "batchsize": 8})
    with pytest.raises(ValueError, match="sampler"):
        DataConfig(sampler="oversample")


@pytest.mark.parametrize("notebook,task", [("03_train_st1.ipynb", "st1"), ("04_train_st2.ipynb", "st2")])
def test_every_train_config_field_is_a_notebook_parameter(notebook, task):
    declared = set(notebook_parameters(notebooks_dir() / notebook))
    wanted = {f.name for f in dataclasses.fields(TrainConfig)} - API_ONLY - {"loss"}  # loss comes from `imbalance`
    assert wanted - declared == set()
    # and every declared parameter is routed somewhere: none is dropped
    routable = set(workflow.training_parameter_names())
    assert declared - routable == set()


def test_unknown_notebook_parameter_is_an_error(demo_root):
    with pytest.raises(UnknownSettingError, match="warmup"):
        workflow.prepare_training("st2", {"data_root": str(demo_root), "warmup": 2})


def test_run_config_json_reloads_into_the_same_configs(demo_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FH_OUTPUTS", str(tmp_path / "out"))
    params = dict(data_root=str(demo_root), run_name="cfg", backbone="fh_colornet", img_size=32, epochs=1,
                  batch_size=16, limit=48, device="cpu", num_workers=0, cache=False, imbalance="logit_adjust",
                  grad_clip=1.0, weight_decay=0.01, early_stopping=3, ema=True, ema_decay=0.9)  # fmt: skip
    setup = workflow.prepare_training("st2", params)
    assert setup.data.sampler == "shuffle" and setup.train.loss == "logit_adjust"
    assert setup.train.grad_clip == 1.0 and setup.train.ema_decay == 0.9 and setup.train.early_stopping == 3
    run_dir, _ = workflow.train_from_params("st2", params, progress=False)
    config = read_json(run_dir / "config.json")
    assert DataConfig.from_dict(config["data"]) == setup.data
    assert TrainConfig.from_dict(config["train"]) == setup.train
    assert ModelConfig.from_dict(config["model"]) == setup.model and config["model"]["pretrained"] is False
    assert config["model"]["task"] == "st2" and config["model"]["in_chans"] == 3  # the built model's record
    assert (config["data"]["img_size"], config["data"]["color_spaces"]) == (32, ["rgb"])  # from the model's
    assert config["model"]["backbone"] == "fh_colornet" and config["run"]["imbalance"] == "logit_adjust"
    assert config["data"]["num_workers"] == 0


def test_auto_workers_are_resolved_and_recorded(demo_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FH_OUTPUTS", str(tmp_path / "out"))
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert resolve_num_workers(-1, "cpu") == 0
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert 1 <= resolve_num_workers(-1, "cuda", cache=False) <= 8
    assert resolve_num_workers(3, "cpu") == 3
    setup = workflow.prepare_training("st2", {"data_root": str(demo_root), "num_workers": -1, "device": "cpu"})
    assert setup.data.num_workers == resolve_num_workers(-1, "cpu", cache=False)


def test_a_backbone_that_cannot_run_at_the_size_fails_in_create_model_with_a_size_that_works():
    with pytest.raises(ValueError, match=r"'efficientformerv2_s1' cannot run at img_size=112 px.*img_size=224 works"):
        create_model("st2", "efficientformerv2_s1", img_size=112)
    model = create_model("st2", "efficientformerv2_s1", img_size=224)
    assert model(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))["Color"].shape == (1, 18)


def test_model_config_takes_its_backbones_defaults_and_refuses_unknown_settings():
    assert ModelConfig() == ModelConfig(DEFAULT_BACKBONE, False, 224, ("rgb",), False, 0.0)
    defaults = backbone_defaults("resnet18.a1_in1k")  # not in the table: the generic row
    assert ModelConfig("resnet18.a1_in1k").img_size == defaults.img_size == 224
    assert backbone_defaults("eva02_tiny_patch14_224") is backbone_defaults(DEFAULT_BACKBONE)  # arch, no tag
    cfg = ModelConfig("fh_colornet", img_size=56, color_spaces="RGB, hsv")
    assert cfg.color_spaces == ("rgb", "hsv")
    assert cfg.data_settings() == {"img_size": 56, "color_spaces": ("rgb", "hsv")}
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and cfg.replace(drop_rate=0.2).drop_rate == 0.2
    with pytest.raises(UnknownSettingError, match=r"\['dropout'\]"):
        ModelConfig.from_dict({"backbone": "fh_colornet", "dropout": 0.1})
    with pytest.raises(ValueError, match="colour space"):
        ModelConfig(color_spaces="rgb,xyz")
    # lr = 0: the backbone's fine-tuning rate with pretrained weights, its from-scratch rate without
    assert default_lr(ModelConfig(pretrained=True)) == 5e-6 and default_lr(ModelConfig()) == 1e-4


def test_a_model_section_written_before_model_config_existed_still_loads():
    old = {"task": "st2", "backbone": "fh_colornet", "img_size": 56, "in_chans": 15,
           "color_spaces": ["rgb", "hsv", "lab", "hls", "yuv"], "color_hist": True, "drop_rate": 0.0,
           "class_names": {"Color": ["Red"]}}  # fmt: skip
    cfg = ModelConfig.from_dict(old)
    assert cfg == ModelConfig("fh_colornet", False, 56, ("rgb", "hsv", "lab", "hls", "yuv"), True, 0.0)
    model = create_model("st2", **cfg.model_kwargs(), check_size=False)
    assert model.model_config["in_chans"] == 15 and model.input_config["img_size"] == 56
