import json

import numpy as np
import pytest
import timm
import torch

from fh_utils.data.datasets import create_loaders
from fh_utils.models.colornet import ColorNet
from fh_utils.models.factory import create_model, load_model, state_dict_size_mb
from fh_utils.training.engine import evaluate, fit

SPACES = ("rgb", "hsv", "lab", "hls", "yuv")


@pytest.mark.parametrize("spaces,size", [(("rgb",), 56), (SPACES, 40)])
def test_create_model_builds_colornet_for_any_size_and_colour_spaces(spaces, size):
    model = create_model("st2", "fh_colornet", img_size=size, color_spaces=spaces).eval()
    x = torch.randint(0, 256, (3, 3 * len(spaces), size, size), dtype=torch.uint8)
    with torch.no_grad():
        out = model(x)["Color"]
    assert out.shape == (3, 18) and torch.isfinite(out).all()
    assert state_dict_size_mb(model) < 1.0  # far under the 25 MB budget


def test_timm_entry_point_follows_timm_conventions():
    features = timm.create_model("fh_colornet", num_classes=0, in_chans=6)
    logits = timm.create_model("fh_colornet", num_classes=7, in_chans=6)
    x = torch.randn(2, 6, 32, 48)
    assert features.eval()(x).shape == (2, features.num_features)
    assert logits.eval()(x).shape == (2, 7)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("fh_colornet", pretrained=True)


def test_attention_maps_are_distributions_over_pixels():
    net = ColorNet(in_chans=3, attention_maps=4).eval()
    maps = net.attention_maps(torch.randn(2, 3, 40, 40))
    assert maps.shape == (2, 4, 40, 40)
    torch.testing.assert_close(maps.sum((2, 3)), torch.ones(2, 4))


def test_uniform_attention_pools_the_mean_pixel_embedding():
    net = ColorNet(in_chans=3, width=8, attention_maps=2).eval()
    with torch.no_grad():
        net.attention.weight.zero_()
        net.attention.bias.zero_()
        x = torch.randn(2, 3, 16, 16)
        pooled = net.forward_features(x)[:, : 2 * 8].view(2, 2, 8)
        mean_pixel = net.pixel(x).mean((2, 3))
    torch.testing.assert_close(pooled[:, 0], mean_pixel)
    torch.testing.assert_close(pooled[:, 1], mean_pixel)


def test_trains_and_reloads_from_a_run_folder(demo_root, tmp_path):
    tiny_loaders = create_loaders(demo_root, "st2", img_size=32, batch_size=16, sampler="balanced", limit=64)
    model = create_model("st2", "fh_colornet", img_size=32)
    fit(model, tiny_loaders, tmp_path / "run", dict(epochs=1, lr=2e-3, scheduler="warmup_cosine", device="cpu"),
        progress=False)  # fmt: skip
    reloaded = load_model(tmp_path / "run")
    assert reloaded.model_config["backbone"] == "fh_colornet"
    # The reloaded best.pt reproduces the score metrics.json reports.
    score = evaluate(reloaded, tiny_loaders["val"], "st2", device="cpu", progress=False)["score"]
    assert score == json.loads((tmp_path / "run" / "metrics.json").read_text())["score"]
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert reloaded(x)["Color"].shape == (2, 18)


@pytest.mark.parametrize("spaces", [("rgb",), ("hsv", "lab")])
def test_attention_figure_of_a_colornet_and_none_for_other_backbones(demo_root, spaces):
    from fh_utils.workbook import evaluation, plots

    val = create_loaders(demo_root, "st2", img_size=32, batch_size=8, color_spaces=spaces, limit=16)["val"].dataset
    model = create_model("st2", "fh_colornet", img_size=32, color_spaces=spaces).eval()
    images, maps = evaluation.attention_samples(model, val, n=3)
    assert len(images) == 3 and images[0].shape == (32, 32, 3) and images[0].dtype == np.uint8
    assert maps.shape == (3, 4, 32, 32)
    fig = plots.attention_grid(images, maps)
    assert len(fig.axes) == 3 * 5
    other = create_model("st2", "mobilenetv4_conv_small", img_size=32, color_spaces=spaces).eval()
    assert evaluation.attention_samples(other, val) is None
