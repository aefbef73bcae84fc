"""Letterbox preprocessing (``DataConfig.resize="letterbox"``): keep the crop's aspect, pad to the square.

Pinned down: :func:`fh_utils.data.images.letterbox` itself (pad rows exactly the pad colour, the content a plain
resize of the crop to the kept-aspect size); the setting's validation; the cache key (letterbox and pad colour in
it, a stretch key as before); one preprocessing: the eval crops of a letterbox run are bit-identical between the
validation loader (cached and not), notebook 05's Predictor and the packaged submission's ``predict_test_set``,
and a member without the keys (an older run) still stretches; the settings survive a saved ensemble, an int8
export and the packaged ``config.json``. Tiny synthetic images and an untrained 32 px ``fh_colornet``: no training.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from fh_utils.data.cache import CachedSource, CacheParams, CropSpec, file_source_for
from fh_utils.data.config import DataConfig
from fh_utils.data.images import letterbox
from fh_utils.io import read_json, write_json

PAD = (255, 128, 0)  # a pad colour no channel of which is 0: a fill left at 0 shows
IMG = 32
LETTERBOX = {"img_size": IMG, "crop_margin": 0.1, "resize": "letterbox", "pad_value": list(PAD)}
# A wide box on a JPEG large enough for a reduced decode, a tall one, a near-square PNG, a whole image.
IMAGES = [("wide.jpg", (400, 1200), (100, 50, 1100, 350)), ("tall.png", (90, 40), (2, 3, 38, 88)),
          ("mid.jpg", (120, 160), (10, 20, 150, 110)), ("whole.png", (30, 70), (0, 0, 70, 30))]  # fmt: skip


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """Edges and noise, so a different decode scale, crop or interpolation changes the pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), ((x // 7 + y // 5) % 2) * 200], -1)
    return np.clip(base + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------- the function


def test_a_wide_crop_is_resized_keeping_its_aspect_and_padded_above_and_below_with_the_pad_colour():
    img = _texture(30, 90, 0)  # 3:1
    out = letterbox(img, 45, PAD)
    assert out.shape == (45, 45, 3) and out.dtype == np.uint8
    want = cv2.resize(img, (45, 15), interpolation=cv2.INTER_AREA)  # the kept-aspect size
    assert np.array_equal(out[15:30], want)
    pad = np.concatenate([out[:15], out[30:]]).reshape(-1, 3)
    assert (pad == PAD).all()


def test_a_tall_crop_is_padded_left_and_right_the_odd_pixel_after_and_a_grey_level_fills_all_channels():
    img = _texture(50, 21, 1)
    out = letterbox(img, 20, (7, 7, 7))  # content 20 x round(21 * 20 / 50) = 8 px wide, 12 columns of pad
    assert np.array_equal(out[:, 6:14], cv2.resize(img, (8, 20), interpolation=cv2.INTER_AREA))
    assert (out[:, :6] == 7).all() and (out[:, 14:] == 7).all()
    square = _texture(16, 16, 2)
    assert np.array_equal(letterbox(square, 16), square) and letterbox(square, 16) is not square
    # Without a size: padded to the longer side at the decoded size, no resize.
    raw = letterbox(img, None, PAD)
    assert raw.shape == (50, 50, 3) and np.array_equal(raw[:, 14:35], img)


def test_resize_and_pad_value_are_validated_and_travel_through_config_json():
    cfg = DataConfig(resize="letterbox", pad_value=255)
    assert cfg.pad_value == (255, 255, 255) and cfg.to_dict()["pad_value"] == [255, 255, 255]
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    assert DataConfig(pad_value=[1, 2, 3]).pad_value == (1, 2, 3)
    assert (DataConfig().resize, DataConfig().pad_value) == ("stretch", (0, 0, 0))  # old runs: stretched
    with pytest.raises(ValueError, match="resize must be one of .*'crop'"):
        DataConfig(resize="crop")
    for bad in (256, -1, (1, 2), "255", True, (0, 0, 1.5)):
        with pytest.raises(ValueError, match="pad_value must be a grey level 0-255 or an RGB triple"):
            DataConfig(pad_value=bad)


def test_a_letterbox_run_s_training_affine_fills_with_the_pad_colour_a_stretch_run_s_with_zero(tmp_path):
    from fh_utils.data.datasets import create_dataset

    rows = pd.DataFrame({"path": [], "BBox_xmin": [], "BBox_ymin": [], "BBox_xmax": [], "BBox_ymax": [], "Color": []})
    for data, fill in (({"resize": "letterbox", "pad_value": PAD}, PAD), ({"pad_value": PAD}, 0)):
        ds = create_dataset(DataConfig(data_root=str(tmp_path), **data), "st2", "train", df=rows)
        (affine,) = [t for t in ds.transform.pipeline.transforms if type(t).__name__ == "Affine"]
        assert affine.fill == fill


def test_the_cache_key_holds_the_letterbox_and_its_pad_colour_a_stretch_key_neither(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), _texture(40, 90, 3))
    specs = [CropSpec(str(path), (5, 5, 85, 30))]

    def entry(**kw):
        return CachedSource(specs, tmp_path / "c", CacheParams(size=37, margin=0.0, **kw)).entry_path(0, True).name

    names = {"stretch": entry(), "letterbox": entry(resize="letterbox"),
             "letterbox pad": entry(resize="letterbox", pad_value=PAD)}  # fmt: skip
    assert len(set(names.values())) == 3, names
    assert entry(pad_value=PAD) == names["stretch"]  # a stretch never reads the pad colour
    params = CacheParams(size=37, margin=0.0, resize="letterbox", pad_value=PAD)
    cached = CachedSource(specs, tmp_path / "c", params)
    built, loaded, files = cached.get(0, True), cached.get(0, True), file_source_for(specs, params).get(0, True)
    assert np.array_equal(built, files) and np.array_equal(loaded, files)
    stretched = CachedSource(specs, tmp_path / "c", CacheParams(size=37, margin=0.0)).get(0, True)
    assert (built[0] == PAD).all() and built.shape == stretched.shape and not np.array_equal(built, stretched)


# ------------------------------------------------------------------------------- one preprocessing


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> dict[str, Path]:
    """A data root whose val rows are also laid out as the test set, and an untrained letterbox "run"."""
    from fh_utils.models.factory import create_model

    root = tmp_path_factory.mktemp("lb")
    data = root / "data"
    (data / "val").mkdir(parents=True)
    rows = []
    for name, (h, w), box in IMAGES:
        img = _texture(h, w, len(rows))
        cv2.imwrite(str(data / "val" / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        rows.append(f"{name},{box[0]},{box[1]},{box[2]},{box[3]},{len(rows) % 18}")
    text = "\n".join(["image_name,BBox_xmin,BBox_ymin,BBox_xmax,BBox_ymax,Color", *rows]) + "\n"
    (data / "Fashion-How24_sub2_val.csv").write_text(text, encoding="utf-8")
    test = root / "aif"  # the platform's /aif/Dataset layout: the val rows, labels kept (scored when present)
    (test / "test").mkdir(parents=True)
    for f in (data / "val").iterdir():
        (test / "test" / f.name).write_bytes(f.read_bytes())
    (test / "Fashion-How24_sub2_test.csv").write_text(text, encoding="utf-8")
    run = root / "run"
    run.mkdir()
    model = create_model("st2", "fh_colornet", img_size=IMG, size_budget=False, check_size=False)
    torch.save({"model": model.state_dict(), "model_config": model.model_config}, run / "best.pt")
    cfg = DataConfig(data_root=str(data), **LETTERBOX)
    write_json(run / "config.json", {"task": {"name": "st2"}, "data": cfg.to_dict()})
    return {"data": data, "test": test, "run": run, "root": root}


def _val_crops(setting, cache: bool, **data) -> torch.Tensor:
    """The crops notebook 04's validation scores: ``create_loaders``' val loader, as the engine iterates it."""
    from fh_utils.data.datasets import create_loaders

    cfg = DataConfig(data_root=str(setting["data"]), cache=cache, cache_dir=str(setting["root"] / "cache"), **data)
    return torch.cat([x for x, _ in create_loaders(cfg, "st2", splits=("val",))["val"]])


@pytest.fixture
def served(monkeypatch) -> list:
    """Every crop tensor the Predictor builds, per ``create_dataset`` call (the crops its members are fed)."""
    from fh_utils.inference import predictor

    made, create = [], predictor.create_dataset

    def spy(*args, **kwargs):
        made.append(create(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(predictor, "create_dataset", spy)
    return made


def _stacked(dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def test_letterbox_eval_crops_are_identical_in_validation_notebook_05_and_the_packaged_submission(
    setting, served, tmp_path
):
    from fh_utils.inference.aif import predict_test_set
    from fh_utils.leaderboard.package import package_submission
    from fh_utils.workbook import submission

    val = _val_crops(setting, cache=True, **LETTERBOX)
    assert torch.equal(val, _val_crops(setting, cache=False, **LETTERBOX))
    stretched = _val_crops(setting, cache=False, img_size=IMG, crop_margin=0.1)
    assert val.shape == stretched.shape == (4, 3, IMG, IMG) and not torch.equal(val, stretched)
    wide = val[0].permute(1, 2, 0).numpy()  # 1000 x 300 box plus 10 %: the top rows are pad
    assert (wide[:6].reshape(-1, 3) == PAD).all() and not (wide[IMG // 2] == PAD).all(axis=1).any()

    test_csv, images = setting["test"] / "Fashion-How24_sub2_test.csv", setting["test"] / "test"
    setup = submission.prepare_submission(str(setting["run"]), test_csv=str(test_csv), images_dir=str(images),
                                          threads=1)  # fmt: skip
    submission.predict_submission(setup, batch_size=3, progress=False)  # notebook 05
    package = package_submission(str(setting["run"]), out_dir=tmp_path / "sub")
    assert read_json(package.folder / "model" / "config.json")["data"]["resize"] == "letterbox"
    frame = predict_test_set(package.folder / "model", setting["test"])  # the packaged task.ipynb's function
    assert len(frame) == 4 and len(served) == 2
    for dataset in served:
        assert torch.equal(_stacked(dataset), val)


def test_a_member_without_the_keys_stretches_as_its_older_run_validated(setting, served):
    from fh_utils.inference.predictor import Predictor
    from fh_utils.models.ensemble import Member, member_from_run

    model = member_from_run(setting["run"]).model
    Predictor([Member(model, {"crop_margin": 0.1})]).predict_csv(
        setting["test"] / "Fashion-How24_sub2_test.csv", setting["test"] / "test")  # fmt: skip
    assert torch.equal(_stacked(served[0]), _val_crops(setting, cache=False, img_size=IMG, crop_margin=0.1))


def test_a_letterbox_member_keeps_it_through_a_saved_ensemble_and_an_int8_export(setting, tmp_path):
    from fh_utils.inference.predictor import load_members
    from fh_utils.models.ensemble import Member, load_ensemble, member_from_run, save_ensemble
    from fh_utils.models.export import export_int8

    member = member_from_run(setting["run"])
    want = {"crop_margin": 0.1, "crop_prob": 1.0, "resize": "letterbox", "pad_value": PAD}
    assert member.data == want
    key = member.input_key()
    assert key[4:] == ("letterbox", PAD)
    stretch = Member(member.model, {"crop_margin": 0.1, "pad_value": PAD})
    assert stretch.input_key()[4:] == ("stretch", None) and stretch.input_key() != key  # never one batch
    assert Member(member.model, {**want, "pad_value": [255, 128, 1]}).input_key() != key  # another pad colour
    save_ensemble([member, member], tmp_path / "ens")
    for loaded in load_ensemble(tmp_path / "ens"):
        assert loaded.data == want and loaded.input_key() == key
    export_int8(setting["run"], tmp_path / "int8")
    (int8,) = load_members(tmp_path / "int8")
    assert int8.data == want and int8.input_key() == key
