"""One preprocessing, two paths: cached and uncached crops are equal, so notebook 05 scores what validation scored."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fh_utils.data.cache import CachedSource, CacheParams, CropSpec, cache_size_for
from fh_utils.data.datasets import build_source, create_dataset
from fh_utils.data.reader import read_split
from fh_utils.io import read_json


def _picture(h: int, w: int, seed: int) -> np.ndarray:
    """Texture with edges and noise, so any difference in decoding or resizing shows in the pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), ((x // 7 + y // 5) % 2) * 200], -1)
    return np.clip(base + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def _image_kinds(folder) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(path, box) of every image kind the loader accepts: JPEG big enough for reduced decoding, PNG, RGBA,
    grayscale JPEG and PNG, palette, 16-bit, odd sizes and tiny boxes."""
    out = []

    def add(name, img, box, **save):
        path = folder / name
        img.save(path, **save)
        out.append((str(path), box))

    add("big.jpg", Image.fromarray(_picture(1203, 901, 0)), (101, 77, 877, 1150), quality=92)  # reduce 4 at 56 px
    add("mid.jpg", Image.fromarray(_picture(317, 451, 1)), (13, 9, 440, 300), quality=90)  # reduce 2..4
    add("odd.jpg", Image.fromarray(_picture(97, 131, 2)), (3, 5, 128, 91), quality=85)
    add("tiny_box.jpg", Image.fromarray(_picture(480, 640, 3)), (300, 200, 337, 229))  # box smaller than the side
    add("rgb.png", Image.fromarray(_picture(211, 173, 4)), (10, 20, 170, 200))
    rgba = np.dstack([_picture(150, 190, 5), np.where(np.arange(190)[None, :] % 3 == 0, 0, 255).repeat(150, 0)])
    add("rgba.png", Image.fromarray(rgba.astype(np.uint8), "RGBA"), (0, 0, 190, 150))
    gray = _picture(257, 199, 6)[..., 0]
    add("gray.jpg", Image.fromarray(gray, "L"), (17, 31, 190, 250), quality=90)
    add("gray.png", Image.fromarray(gray, "L"), (0, 0, 199, 257))
    add("palette.png", Image.fromarray(_picture(123, 145, 7)).convert("P"), (5, 5, 140, 120))
    deep = folder / "deep.png"  # 16-bit RGB: PIL cannot write it, OpenCV can
    cv2.imwrite(str(deep), _picture(99, 77, 8).astype(np.uint16) * 257)
    out.append((str(deep), (1, 2, 76, 98)))
    return out


@pytest.mark.parametrize("img_size", [32, 56, 224])
@pytest.mark.parametrize("margin", [0.0, 0.1])
def test_cached_and_uncached_crops_are_equal_for_every_image_kind(tmp_path, img_size, margin):
    specs = [CropSpec(p, b) for p, b in _image_kinds(tmp_path)]
    df = _frame(specs)
    files = build_source(df, img_size, crop_margin=margin, cache=False)
    cached = build_source(df, img_size, crop_margin=margin, cache=True, cache_dir=tmp_path / "cache")
    assert isinstance(cached, CachedSource)
    side = cache_size_for(img_size)
    for crop in (True, False):
        for i in range(len(specs)):
            built = cached.get(i, crop)  # a miss: builds and stores the entry
            assert cached.entry_path(i, crop).is_file()
            loaded = cached.get(i, crop)  # a hit: read back from disk
            uncached = files.get(i, crop)
            assert uncached.shape == (side, side, 3) and uncached.dtype == np.uint8
            assert np.array_equal(uncached, built), (specs[i].path, crop)
            assert np.array_equal(uncached, loaded), (specs[i].path, crop)


def _frame(specs: list[CropSpec]):
    import pandas as pd

    return pd.DataFrame({"path": [s.path for s in specs], "BBox_xmin": [s.box[0] for s in specs],
                         "BBox_ymin": [s.box[1] for s in specs], "BBox_xmax": [s.box[2] for s in specs],
                         "BBox_ymax": [s.box[3] for s in specs]})  # fmt: skip


def test_cache_entries_are_what_the_file_path_computes_with_the_same_params(tmp_path):
    specs = [CropSpec(p, b) for p, b in _image_kinds(tmp_path)[:3]]
    params = CacheParams(size=64, margin=0.05)
    cached = CachedSource(specs, tmp_path / "c", params)
    files = build_source(_frame(specs), 56, crop_margin=0.05)  # cache_size_for(56) == 64
    assert cache_size_for(56) == 64
    for i in range(len(specs)):
        assert np.array_equal(cached.get(i, True), files.get(i, True))


@pytest.mark.parametrize("task", ["st1", "st2"])
def test_datasets_with_and_without_cache_give_equal_tensors(demo_root, tmp_path, task):
    kw = dict(img_size=40, crop_margin=0.05, color_spaces=("rgb", "hsv"))
    df = read_split(demo_root, task, "val")
    # A sample of rows covering JPEG, PNG and RGBA files of the demo data.
    picks = df.groupby(df["path"].str[-3:]).head(6).index
    rows = df.loc[picks].reset_index(drop=True)
    rows.attrs.update(df.attrs)
    plain = create_dataset(demo_root, task, "val", df=rows, cache=False, **kw)
    cached = create_dataset(demo_root, task, "val", df=rows, cache=True, cache_dir=str(tmp_path / "c"), **kw)
    assert {p[-3:] for p in rows["path"]} >= {"jpg", "png"}
    for i in range(len(rows)):
        a, b = plain[i][0], cached[i][0]
        assert a.dtype == torch.uint8 and torch.equal(a, b), rows.loc[i, "path"]


@pytest.mark.parametrize(
    "task, backbone, cache",
    [("st2", "fh_colornet", True), ("st1", "mobilenetv4_conv_small", True), ("st2", "fh_colornet", False)],
)
def test_submission_scores_exactly_what_the_run_validated(demo_root, tmp_path, task, backbone, cache):
    import pandas as pd

    from fh_utils.data.reader import csv_path
    from fh_utils.tasks import get_task
    from fh_utils.workbook import submission, workflow

    limit = 48  # rows of each split: the run validates on the first 48 val rows, so the submission scores those
    params = dict(data_root=str(demo_root), run_name=f"pre-{task}-{int(cache)}", backbone=backbone, img_size=40,
                  epochs=1, batch_size=16, lr=2e-3, scheduler="warmup_cosine", device="cpu", num_workers=0,
                  cache=cache, cache_dir=str(tmp_path / "cache"), crop_margin=0.05, color_baseline=False,
                  limit=limit)  # fmt: skip
    run_dir, _ = workflow.train_from_params(task, params, progress=False)
    val_csv = csv_path(demo_root, get_task(task, demo_root), "val")
    csv = tmp_path / val_csv.name
    pd.read_csv(val_csv).head(limit).to_csv(csv, index=False)
    setup = submission.prepare_submission(str(run_dir), test_csv=str(csv), images_dir=str(demo_root / "val"),
                                          threads=1)  # fmt: skip
    result = submission.predict_submission(setup, batch_size=13, progress=False)  # another batch size on purpose
    metrics = submission.finish_submission(setup, result)
    validated = read_json(run_dir / "metrics.json")
    assert metrics["rows"] == limit and metrics["tta"] == "none"
    assert metrics["score"] == validated["score"]
    for column, head in validated["heads"].items():
        assert metrics["heads"][column]["top1"] == head["top1"]
