"""Pretrained weights load wherever they are (cache, hub, file), and importing the package changes nothing."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from fh_utils.models import pretrained as pretrained_mod
from fh_utils.models.factory import PretrainedUnavailableError, create_model

TINY = "test_resnet"  # 0.5 M parameters; its hub repository is timm/test_resnet.r160_in1k
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def no_network(monkeypatch):
    """Every TCP connection fails at once, as on a machine without network."""

    def refuse(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def _fill_cache(cache, backbone: str) -> dict[str, torch.Tensor]:
    """Save random weights of ``backbone`` in the Hugging Face cache layout; return them."""
    repo = pretrained_mod.hub_repo(backbone)[0]
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(REVISION)
    torch.manual_seed(123)
    state = {k: v.contiguous() for k, v in timm.create_model(backbone).state_dict().items()}
    save_file(state, str(snapshot / "model.safetensors"))
    return state


# Third-party libraries write a few variables of their own at import (torch: KMP_*, TORCHINDUCTOR_CACHE_DIR;
# cv2: LD_LIBRARY_PATH): they are imported first, so the check sees fh_utils' own writes only.
THIRD_PARTY = "import numpy, pandas, torch, timm, cv2, albumentations, huggingface_hub, sklearn, matplotlib"
FH_MODULES = ("fh_utils, fh_utils.models.factory, fh_utils.models.pretrained, fh_utils.data.datasets, "
              "fh_utils.training.engine, fh_utils.training.distill, fh_utils.workbook.workflow, "
              "fh_utils.runner.notebooks, fh_utils.sweeps.trial")  # fmt: skip


def _environment_changes(preamble: str, modules: str) -> dict:
    code = (
        f"import json, os\n{preamble}\nbefore = dict(os.environ)\nimport {modules}\nafter = dict(os.environ)\n"
        "print(json.dumps({k: [before.get(k), after.get(k)] for k in set(before) | set(after)"
        " if before.get(k) != after.get(k)}))\n"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "OMP_WAIT_POLICY", "NO_ALBUMENTATIONS_UPDATE")}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_fh_utils_leaves_the_environment_unchanged():
    packages = "fh_utils, fh_utils.models, fh_utils.training, fh_utils.workbook, fh_utils.runner, fh_utils.sweeps"
    assert _environment_changes("", f"{packages}, fh_utils.leaderboard") == {}
    assert _environment_changes(THIRD_PARTY, FH_MODULES) == {}


def test_pretrained_true_loads_from_the_hugging_face_cache_offline(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    saved = _fill_cache(tmp_path / "hub", TINY)
    model = create_model("st1", TINY, pretrained=True, img_size=64)
    loaded = model.backbone.state_dict()
    compared = [k for k in saved if k in loaded]
    assert len(compared) >= len(loaded) - 2  # all but the classifier, which the backbone has not
    for key in compared:
        torch.testing.assert_close(loaded[key], saved[key], rtol=0, atol=0)


def test_pretrained_true_with_empty_cache_and_no_network_fails_fast_with_the_command(tmp_path, monkeypatch,
                                                                                      no_network):  # fmt: skip
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    start = time.perf_counter()
    with pytest.raises(PretrainedUnavailableError) as err:
        create_model("st1", TINY, pretrained=True, img_size=64)
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "hf download timm/test_resnet.r160_in1k model.safetensors" in message
    assert "pretrained='weights/model.safetensors'" in message and str(tmp_path / "empty") in message


def test_the_hub_is_not_asked_when_the_user_set_it_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    probes = []
    monkeypatch.setattr(pretrained_mod, "hub_reachable", lambda timeout=3.0: probes.append(timeout) or True)
    with pytest.raises(PretrainedUnavailableError, match="HF_HUB_OFFLINE is set"):
        create_model("st1", TINY, pretrained=True, img_size=64)
    assert probes == []


def test_a_reachable_hub_downloads_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(pretrained_mod, "hub_reachable", lambda timeout=3.0: True)
    saved = {}

    def fake_download(backbone):  # stands in for hf_hub_download: the file lands in the cache
        saved.update(_fill_cache(tmp_path / "hub", backbone))
        return pretrained_mod.cached_weights(backbone)

    monkeypatch.setattr(pretrained_mod, "download_weights", fake_download)
    model = create_model("st1", TINY, pretrained=True, img_size=64)
    key = next(k for k in model.backbone.state_dict() if k.endswith("weight"))
    torch.testing.assert_close(model.backbone.state_dict()[key], saved[key], rtol=0, atol=0)
