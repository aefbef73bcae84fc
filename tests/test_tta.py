"""Test-time augmentation: views, averaged probabilities, flip invariance, the notebook parameter."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fh_utils.training.tta import TTA_MODES, TTAModel, check_tta, tta_views, with_tta


class MeanColour(nn.Module):
    """Flip-invariant by construction: a linear head on the mean colour of the image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        return {"Color": self.head(x.float().mean((2, 3)) / 255)}


class LeftHalf(nn.Module):
    """Not flip-invariant: looks at the left half only."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        return {"Color": self.head(x.float()[..., : x.shape[-1] // 2].mean((2, 3)) / 255)}


def _batch(n=5, size=20):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_modes_and_views():
    x = _batch()
    assert TTA_MODES == ("none", "hflip", "hflip+crops")
    assert [len(tta_views(x, m)) for m in TTA_MODES] == [1, 2, 6]
    assert all(v.shape == x.shape for v in tta_views(x, "hflip+crops"))
    assert torch.equal(tta_views(x, "hflip")[1], x.flip(-1))
    with pytest.raises(ValueError, match="tta must be one of"):
        check_tta("colour-jitter")
    model = MeanColour()
    assert with_tta(model, "none") is model and isinstance(with_tta(model, "hflip"), TTAModel)


def test_mode_names_defaults_and_what_the_wrapper_carries():
    assert check_tta("") == check_tta(None) == "none" and check_tta(" HFlip ") == "hflip"
    model = MeanColour()
    model.model_config, model.input_config = {"task": "st2"}, {"img_size": 20}
    assert TTAModel(model).mode == "hflip"  # the default mode
    wrapped = with_tta(model, "hflip+crops")
    assert wrapped.model is model and wrapped.mode == "hflip+crops"
    assert wrapped.model_config is model.model_config and wrapped.input_config is model.input_config
    bare = TTAModel(LeftHalf())
    assert bare.model_config == {} and bare.input_config == {}
    x = _batch()
    with torch.no_grad():
        assert torch.equal(wrapped(x)["Color"], TTAModel(model, "hflip+crops")(x)["Color"])


def test_hflip_changes_nothing_for_a_flip_invariant_model():
    x, model = _batch(), MeanColour().eval()
    with torch.no_grad():
        plain = model(x)["Color"].softmax(1)
        tta = TTAModel(model, "hflip")(x)["Color"].softmax(1)
    assert torch.allclose(plain, tta, atol=1e-6)


def test_tta_averages_the_probabilities_of_the_views():
    x, model = _batch(), LeftHalf().eval()
    with torch.no_grad():
        plain = model(x)["Color"].softmax(1)
        mirrored = model(x.flip(-1))["Color"].softmax(1)
        tta = TTAModel(model, "hflip")(x)["Color"].softmax(1)
        crops = TTAModel(model, "hflip+crops")(x)["Color"].softmax(1)
    assert not torch.allclose(plain, mirrored, atol=1e-4)  # the check below can fail
    assert torch.allclose(tta, (plain + mirrored) / 2, atol=1e-6)
    assert not torch.allclose(crops, tta, atol=1e-5)
    # "hflip+crops" is the mean over the batch, its mirror and the four corners, each corner cut by hand.
    corners = [_resized(x[..., :18, :18]), _resized(x[..., :18, 2:]), _resized(x[..., 2:, :18]),
               _resized(x[..., 2:, 2:])]  # fmt: skip
    with torch.no_grad():
        by_hand = sum(model(v)["Color"].softmax(1) for v in [x, x.flip(-1), *corners]) / 6
        out = TTAModel(model, "hflip+crops")(x)["Color"]
    assert torch.allclose(crops, by_hand, atol=1e-6)
    assert torch.allclose(out.exp(), by_hand, atol=1e-6), "the output is log(mean probabilities) itself"


def _resized(crop: torch.Tensor, size: int = 20) -> torch.Tensor:
    return torch.nn.functional.interpolate(crop.float(), size=(size, size), mode="bilinear", align_corners=False)


class Quadrant(nn.Module):
    """Looks at one quadrant of the input only, so each corner crop gives it another picture."""

    def __init__(self, rows: slice, cols: slice):
        super().__init__()
        torch.manual_seed(2)
        self.head, self.rows, self.cols = nn.Linear(3, 4), rows, cols

    def forward(self, x):
        return {"Color": self.head(x.float()[..., self.rows, self.cols].mean((2, 3)) / 255)}


def test_the_four_crops_are_the_four_corners():
    """On a 20 px batch the 90 % crops are 18 px: top-left, top-right, bottom-left, bottom-right, each resized
    back; no two are alike, and a model that sees one quadrant only tells them apart."""
    x = _batch()
    views = tta_views(x, "hflip+crops")
    want = [_resized(x[..., :18, :18]), _resized(x[..., :18, 2:]), _resized(x[..., 2:, :18]), _resized(x[..., 2:, 2:])]
    for got, expected in zip(views[2:], want):
        assert torch.equal(got, expected)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(views[2 + i], views[2 + j]), (i, j)
    model = Quadrant(slice(0, 2), slice(0, 2)).eval()  # the top-left 2x2 pixels: in one corner crop only
    with torch.no_grad():
        outs = [model(v)["Color"] for v in views[2:]]
    assert all(not torch.allclose(outs[0], o, atol=1e-4) for o in outs[1:])


def test_evaluate_and_predict_see_the_averaged_probabilities():
    from fh_utils.tasks import get_task
    from fh_utils.training.engine import evaluate

    task = get_task("st2")
    model = LeftHalf().eval()
    model.head = nn.Linear(3, 18)
    x = _batch(8)
    loader = DataLoader(TensorDataset(x, torch.zeros(8, 1, dtype=torch.long)), batch_size=3)
    res = evaluate(TTAModel(model, "hflip"), loader, task, device="cpu", progress=False)
    with torch.no_grad():
        expected = (model(x)["Color"].softmax(1) + model(x.flip(-1))["Color"].softmax(1)) / 2
    assert torch.allclose(torch.from_numpy(res["probabilities"]["Color"]), expected, atol=1e-6)


def test_tta_is_a_notebook_parameter_routed_to_the_run(demo_root):
    from fh_utils.workbook.workflow import prepare_training

    base = dict(data_root=str(demo_root), backbone="fh_colornet", img_size=32, device="cpu", num_workers=0)
    assert prepare_training("st2", {**base, "run_name": "tta-default"}).run["tta"] == "none"
    assert prepare_training("st2", {**base, "run_name": "tta-flip", "tta": "hflip"}).run["tta"] == "hflip"
    with pytest.raises(ValueError, match="tta must be one of"):
        prepare_training("st2", {**base, "run_name": "tta-bad", "tta": "jitter"})
