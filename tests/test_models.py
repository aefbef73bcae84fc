import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from fh_utils.models.factory import (
    PretrainedUnavailableError,
    RulesError,
    create_model,
    load_model,
    state_dict_size_mb,
)
from fh_utils.tasks import ST1, ST2

REPO = Path(__file__).resolve().parent.parent

# (backbone, input size): EfficientFormerV2 needs a multiple of 32, EVA02 of its 14 px patch.
BACKBONES = [
    ("eva02_tiny_patch14_224.mim_in22k", 112),
    ("mobilenetv4_conv_small", 96),
    ("convnextv2_femto", 96),
    ("efficientformerv2_s1", 128),
]


@pytest.mark.parametrize("backbone,size", BACKBONES)
@pytest.mark.parametrize("task", ["st1", "st2"])
def test_any_backbone_gives_one_head_per_label(backbone, size, task):
    model = create_model(task, backbone, img_size=size).eval()
    x = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    with torch.no_grad():
        out = model(x)
    expected = ST1 if task == "st1" else ST2
    assert list(out) == expected.label_columns
    for head in expected.heads:
        assert out[head.column].shape == (2, head.num_classes)
        assert torch.isfinite(out[head.column]).all()


def test_multi_colour_space_input_and_histogram_features():
    spaces = ("rgb", "hsv", "lab", "hls", "yuv")
    model = create_model("st2", "mobilenetv4_conv_small", img_size=64, color_spaces=spaces, color_hist=True)
    assert model.model_config["in_chans"] == 15 and model.input_config["color_spaces"] == list(spaces)
    out = model(torch.randint(0, 256, (2, 15, 64, 64), dtype=torch.uint8))
    assert out["Color"].shape == (2, 18)


def test_model_over_budget_is_refused_unless_budget_is_off():
    with pytest.raises(RulesError, match=r"exceeds the 25 MB budget"):
        create_model("st1", "resnet50", img_size=64)
    model = create_model("st1", "resnet50", img_size=64, size_budget=False)
    assert state_dict_size_mb(model) > 25


def _saved_backbone(tmp_path, suffix):
    net = timm.create_model("mobilenetv4_conv_small", pretrained=False)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(net.state_dict(), str(path))
    else:
        torch.save(net.state_dict(), path)
    return net, path


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_from_local_file(tmp_path, suffix):
    net, path = _saved_backbone(tmp_path, suffix)
    model = create_model("st1", "mobilenetv4_conv_small", pretrained=str(path), img_size=64)
    assert torch.equal(model.backbone.conv_stem.weight, net.conv_stem.weight)


def test_st2_refuses_pretrained_weights_unless_rules_are_off(tmp_path):
    net, path = _saved_backbone(tmp_path, ".pth")
    with pytest.raises(RulesError, match="forbids outside pretrained weights"):
        create_model("st2", "mobilenetv4_conv_small", pretrained=str(path))
    model = create_model("st2", "mobilenetv4_conv_small", pretrained=str(path), enforce_rules=False, img_size=64)
    assert torch.equal(model.backbone.conv_stem.weight, net.conv_stem.weight)  # the file's weights, loaded


def test_missing_pretrained_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_model("st1", "mobilenetv4_conv_small", pretrained=str(tmp_path / "nope.pth"))


# A network that black-holes every connection: name lookups answer with an unroutable address (TEST-NET-1) and
# a connect hangs until the caller's timeout, or 60 s without one, as a dropped SYN does. Installed in a fresh
# interpreter, before anything imports the hub client, so HF_HUB_OFFLINE=0 really is in force there.
_BLACK_HOLE = """
import json, socket, sys, time

def getaddrinfo(host, port, *args, **kwargs):
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port or 443))]

def connect(self, address):
    timeout = self.gettimeout()
    time.sleep(60 if timeout is None else min(timeout, 60))
    raise TimeoutError("timed out (black-holed network)")

socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
from fh_utils.models.factory import create_model
start = time.perf_counter()
try:
    create_model("st1", "eva02_tiny_patch14_224.mim_in22k", pretrained=True)
    error = None
except Exception as err:
    error = [type(err).__name__, str(err)]
print(json.dumps({"seconds": time.perf_counter() - start, "error": error}))
"""


def test_pretrained_true_with_the_hub_unreachable_fails_fast_and_says_what_to_do(tmp_path):
    """The whole create_model(pretrained=True) path (our check, timm, the hub client) on a network that drops
    every packet: it must fail within seconds, with the way out in the message, and never download."""
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", _BLACK_HOLE], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["error"] is not None, "pretrained=True succeeded on a black-holed network"
    kind, message = result["error"]
    assert kind == PretrainedUnavailableError.__name__, result
    assert "pretrained='weights/model.safetensors'" in message
    assert result["seconds"] < 15, result


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = create_model("st2", "mobilenetv4_conv_small", img_size=64).eval()
    torch.save({"model": model.state_dict(), "model_config": model.model_config, "ema": None}, tmp_path / "best.pt")
    loaded = load_model(tmp_path)
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(model(x)["Color"], loaded(x)["Color"])
