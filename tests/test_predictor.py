"""``Predictor.predict_csv`` on a test CSV (no label columns): every row predicted in order, or a clear error.

A row is never dropped silently: a missing image is a ``DataValidationError`` naming the CSV, the row's line and
the image; an image whose header reads but whose pixels do not decode (it passes validation, fails at prediction)
is one too, with the CSV line and the image file. Each test builds a tiny untrained ST2 model and a few 32 x 32
images in ``tmp_path`` (fast: no training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fh_utils.data.reader import DataProblem, DataValidationError
from fh_utils.inference.predictor import Predictor
from fh_utils.models.ensemble import Member
from fh_utils.models.factory import create_model

TEST_HEADER = "image_name,BBox_xmin,BBox_ymin,BBox_xmax,BBox_ymax"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    model = create_model("st2", "fh_colornet", img_size=32, size_budget=False, check_size=False)
    return Predictor([Member(model.eval())])


def _images(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _csv(path: Path, names: list[str]) -> Path:
    path.write_text("\n".join([TEST_HEADER, *(f"{n},2,2,30,30" for n in names)]) + "\n", encoding="utf-8")
    return path


def test_a_test_csv_without_labels_is_predicted_row_for_row_in_its_order(predictor, tmp_path):
    names = ["c.png", "a.png", "b.png"]
    images = _images(tmp_path / "test", names)
    prediction = predictor.predict_csv(_csv(tmp_path / "Fashion-How24_sub2_test.csv", names), images)
    assert list(prediction.frame.columns) == ["image_name", "color"]
    assert prediction.frame["image_name"].tolist() == names
    assert prediction.frame["color"].tolist() == prediction.probabilities["Color"].argmax(1).tolist()
    assert prediction.rows["line"].tolist() == [2, 3, 4]


def test_a_missing_image_is_an_error_naming_the_csv_its_line_and_the_image_not_a_skipped_row(predictor, tmp_path):
    images = _images(tmp_path / "test", ["a.png", "c.png"])
    csv = _csv(tmp_path / "Fashion-How24_sub2_test.csv", ["a.png", "b.png", "c.png"])
    with pytest.raises(DataValidationError) as info:
        predictor.predict_csv(csv, images)
    assert info.value.problems == [DataProblem(str(csv), 3, f"image not found: {images / 'b.png'}")]
    assert f"{csv}:3: image not found: {images / 'b.png'}" in str(info.value)


def test_an_image_that_validates_but_does_not_decode_is_an_error_naming_the_csv_line_and_the_image(
    predictor, tmp_path
):
    images = _images(tmp_path / "test", ["a.png", "b.png", "c.png"])
    data = bytearray((images / "c.png").read_bytes())
    start = data.find(b"IDAT") + 8
    data[start : start + 32] = bytes(32)  # header and IEND intact: its size reads, its pixels do not decode
    (images / "c.png").write_bytes(bytes(data))
    csv = _csv(tmp_path / "Fashion-How24_sub2_test.csv", ["a.png", "b.png", "c.png"])
    with pytest.raises(DataValidationError) as info:
        predictor.predict_csv(csv, images)
    message = f"{images / 'c.png'}: not a decodable image (corrupt, or not a JPEG/PNG file)"
    assert info.value.problems == [DataProblem(str(csv), 4, message)]


def test_a_folder_s_model_file_is_best_pt_then_ensemble_pt_then_model_int8_pt(tmp_path):
    from fh_utils.runs import model_file

    assert model_file(tmp_path) is None
    for name in ("model_int8.pt", "ensemble.pt", "best.pt"):
        (tmp_path / name).write_bytes(b"x")
    assert model_file(tmp_path) == tmp_path / "best.pt"  # a run folder that also holds its int8 export
    (tmp_path / "best.pt").unlink()
    assert model_file(tmp_path) == tmp_path / "ensemble.pt"
    (tmp_path / "ensemble.pt").unlink()
    assert model_file(tmp_path) == tmp_path / "model_int8.pt"


def test_a_member_whose_run_trained_on_whole_images_is_fed_whole_images(predictor, tmp_path):
    """crop_prob 0 in the run's settings: the crops of its boxes are never taken, at any box."""
    images = _images(tmp_path / "test", ["a.png", "b.png"])
    boxed = _csv(tmp_path / "boxed.csv", ["a.png", "b.png"])  # boxes 2..30 of 32 px images
    whole = tmp_path / "whole.csv"
    whole.write_text("\n".join([TEST_HEADER, "a.png,0,0,32,32", "b.png,0,0,32,32"]) + "\n", encoding="utf-8")
    model = predictor.members[0].model
    uncropped = Predictor([Member(model, {"crop_prob": 0.0})]).predict_csv(boxed, images).probabilities["Color"]
    full_box = predictor.predict_csv(whole, images).probabilities["Color"]
    cropped = predictor.predict_csv(boxed, images).probabilities["Color"]
    assert np.array_equal(uncropped, full_box)
    assert not np.allclose(uncropped, cropped)
