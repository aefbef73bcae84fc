"""rembg for real: a tiny stand-in for U^2-Net, exported by torch to ONNX, run by rembg's own custom-model session.

Notebook 02's rembg path (``create_nobg_tree(method="rembg")``) calls rembg, reads its mask and writes the
mirrored tree; the real model (``u2net.onnx``, 176 MB) downloads on first use, which never happens here. The
stand-in has U^2-Net's interface (input ``1x3x320x320`` float, seven ``1x1x320x320`` saliency maps, the first
one fused) and a rule we can check: bright pixels are foreground. The other six maps say the opposite, so a
mask read from the wrong output fails.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fh_utils.data.images import load_image
from fh_utils.prep import background as bg
from fh_utils.prep.background import rembg as bg_rembg  # its module state: the session cache


class TinyU2Net(nn.Module):
    """Saliency = sigmoid(k * (mean of the normalised channels - c)): bright is foreground (d0); d1..d6 inverted."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        d0 = torch.sigmoid(8.0 * (x.mean(1, keepdim=True) - 0.5))
        return (d0, *[1.0 - d0] * 6)


def export_tiny_u2net(path: Path) -> Path:
    """Write the stand-in as ONNX (TorchScript exporter: no onnxscript needed), input named as U^2-Net's."""
    pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package (dev extra)")
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f"d{i}" for i in range(7)]
    torch.onnx.export(TinyU2Net().eval(), (torch.zeros(1, 3, 320, 320),), str(path), dynamo=False,
                      input_names=["input.1"], output_names=names, opset_version=17)  # fmt: skip
    return path


def _photo(seed: int, h: int = 120, w: int = 90) -> np.ndarray:
    """A bright garment (a light rectangle with stripes) on a dark, noisy background."""
    rng = np.random.default_rng(seed)
    img = rng.integers(10, 50, (h, w, 3)).astype(np.uint8)
    img[30:90, 20:70] = (235, 225, 215)
    img[30:90:6, 20:70] = (200, 210, 230)
    return img


def _root(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A data root in the official layout: two PNGs (lossless, so outputs compare exactly) per split."""
    root = tmp_path / "data"
    images = {}
    for split in ("train", "val"):
        rows = []
        for name in (f"tops/{split}_1.png", f"tops/{split} 2.png"):
            img = _photo(zlib.crc32(name.encode()) % 1000)
            (root / split / name).parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / split / name), img[:, :, ::-1])
            images[f"{split}/{name}"] = img
            rows.append([name, 20, 30, 70, 90, 1, 2, 0])
        columns = ["image_name", "BBox_xmin", "BBox_ymin", "BBox_xmax", "BBox_ymax", "Daily", "Gender",
                   "Embellishment"]  # fmt: skip
        pd.DataFrame(rows, columns=columns).to_csv(root / f"Fashion-How24_sub1_{split}.csv", index=False)
    return root, images


@pytest.fixture()
def tiny_model(tmp_path, monkeypatch) -> Path:
    """The stand-in inside an empty $U2NET_HOME (rembg accepts a custom model only under its model folders)."""
    import pooch  # rembg's downloader: a test that reaches it has gone wrong

    def no_download(*args, **kwargs):
        raise AssertionError("rembg tried to download a model")

    home = tmp_path / "u2net_home"
    monkeypatch.setenv("U2NET_HOME", str(home))
    monkeypatch.setattr(pooch, "retrieve", no_download)
    monkeypatch.setattr(bg_rembg, "_REMBG_SESSIONS", {})  # the cache _rembg_session reads
    return export_tiny_u2net(home / "tiny_u2net.onnx")


def test_rembg_custom_session_masks_the_bright_garment(tiny_model):
    img = _photo(0)
    assert bg.rembg_model_path(str(tiny_model)) == tiny_model and bg.rembg_available(str(tiny_model))
    assert bg.resolve_method("auto", str(tiny_model)) == "rembg"
    mask = bg.rembg_mask(img, str(tiny_model))
    assert mask.shape == img.shape[:2] and mask.dtype == np.uint8
    inside, outside = mask[36:84, 26:64], np.concatenate([mask[:20].ravel(), mask[100:].ravel()])
    assert inside.min() > 200 and outside.max() < 40, (inside.min(), outside.max())  # d0, not d1..d6
    session = next(iter(bg_rembg._REMBG_SESSIONS.values()))
    assert type(session).__name__ == "U2netCustomSession" and len(bg_rembg._REMBG_SESSIONS) == 1


def test_notebook_02_rembg_path_writes_the_mirrored_tree_from_rembg_s_mask(tiny_model, tmp_path):
    root, images = _root(tmp_path)
    out = tmp_path / "nobg"
    fill = (0, 255, 0)
    result = bg.create_nobg_tree(root, out, method="rembg", model_name=str(tiny_model), fill=fill, workers=1,
                                 progress=False)  # fmt: skip
    assert result["method"] == "rembg" and result["n_done_now"] == len(images) == 4 and not result["failures"]
    settings = json.loads((out / bg.MANIFEST_NAME).read_text())["settings"]
    assert settings["method"] == "rembg" and settings["model_name"] == str(tiny_model)
    for rel, img in images.items():
        written = load_image(out / rel)
        want = bg.blend_fill(img, bg.rembg_mask(img, str(tiny_model)), fill)
        assert np.array_equal(written, want), rel
        assert np.abs(written[50, 40].astype(int) - img[50, 40]).max() <= 2, "the garment is kept"
        assert tuple(written[5, 5]) == fill and tuple(written[110, 80]) == fill, "the background is filled"
    again = bg.create_nobg_tree(root, out, method="rembg", model_name=str(tiny_model), fill=fill, workers=1,
                                progress=False)  # fmt: skip
    assert again["n_skipped"] == 4 and again["n_done_now"] == 0


def test_a_custom_model_outside_rembg_s_folders_or_missing_is_refused(tiny_model, tmp_path):
    with pytest.raises(bg.RembgModelMissingError, match="not found"):
        bg.resolve_method("rembg", str(tmp_path / "nowhere.onnx"))
    outside = tmp_path / "elsewhere" / "tiny.onnx"
    outside.parent.mkdir()
    outside.write_bytes(tiny_model.read_bytes())
    with pytest.raises(ValueError, match="model_path must be within"):
        bg.rembg_mask(_photo(1), str(outside))
