"""Image loader edge cases not in the bad-input corpus: reduced decodes, crops with margins, header sizes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from fh_utils.data.images import crop_box, image_size, load_image


def _gradient(h: int, w: int) -> np.ndarray:
    """Smooth RGB image (JPEG-friendly, so reduced and full decodes can be compared)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack(
        [x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) * 255 // (h + w)], -1
    ).astype(np.uint8)


@pytest.fixture
def jpeg(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(_gradient(203, 301)).save(path, quality=95)
    return path


@pytest.mark.parametrize("reduce", [2, 4, 8])
def test_reduced_jpeg_decode_is_about_1_over_reduce(jpeg, reduce):
    full = load_image(jpeg)
    small = load_image(jpeg, reduce=reduce)
    assert small.dtype == np.uint8 and small.shape[2] == 3
    h, w = full.shape[:2]
    assert abs(small.shape[0] - h / reduce) < 1 and abs(small.shape[1] - w / reduce) < 1
    # Same picture: compare with the full decode shrunk to the same size.
    ref = cv2.resize(full, small.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(ref.astype(int) - small.astype(int)).mean() < 4


def test_reduce_1_is_the_full_decode(jpeg):
    assert np.array_equal(load_image(jpeg, reduce=1), load_image(jpeg))
    assert load_image(jpeg).shape == (203, 301, 3)


@pytest.mark.parametrize("reduce", [2, 4])
def test_reduce_on_png_resizes_to_1_over_reduce(tmp_path, reduce):
    path = tmp_path / "x.png"
    Image.fromarray(_gradient(203, 301)).save(path)
    assert load_image(path, reduce=reduce).shape == (203 // reduce, 301 // reduce, 3)


def test_reduced_decode_ignores_exif_orientation_too(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 CCW to display
    Image.fromarray(_gradient(40, 80)).save(path, exif=exif)
    assert load_image(path).shape == (40, 80, 3)
    assert load_image(path, reduce=2).shape == (20, 40, 3)
    assert image_size(path) == (80, 40)


def test_background_colour_of_transparent_pixels(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[1, 1] = (9, 8, 7, 255)
    path = tmp_path / "t.png"
    Image.fromarray(rgba, "RGBA").save(path)
    img = load_image(str(path), background=(0, 128, 255))  # str paths are fine too
    assert tuple(img[0, 0]) == (0, 128, 255)
    assert tuple(img[1, 1]) == (9, 8, 7)


def test_crop_box_without_margin_is_the_box():
    img = _gradient(80, 100)
    crop = crop_box(img, (10, 20, 50, 60))
    assert crop.shape == (40, 40, 3)
    assert np.array_equal(crop, img[20:60, 10:50])
    assert np.shares_memory(crop, img)  # a view, no copy


@pytest.mark.parametrize(
    "box,margin,expected",
    [
        ((10, 20, 50, 60), 0.5, (0, 0, 70, 80)),  # grows by 20 px a side, clipped at the top-left
        ((60, 10, 100, 70), 0.25, (50, 0, 100, 80)),  # clipped at right, top and bottom
        ((30, 30, 50, 50), 0.1, (28, 28, 52, 52)),  # inside: grows by 2 px a side
        ((0, 0, 100, 80), 1.0, (0, 0, 100, 80)),  # whole image: nothing to grow into
    ],
    ids=["clip_top_left", "clip_right_top_bottom", "inside", "whole_image"],
)
def test_crop_box_margin_is_clipped_to_the_image(box, margin, expected):
    img = _gradient(80, 100)
    xa, ya, xb, yb = expected
    assert np.array_equal(crop_box(img, box, margin=margin), img[ya:yb, xa:xb])


def test_crop_box_scale_maps_stored_coordinates_onto_a_reduced_decode(jpeg):
    small = load_image(jpeg, reduce=2)
    crop = crop_box(small, (20, 40, 120, 140), scale=0.5)
    assert np.array_equal(crop, small[20:70, 10:60])


@pytest.mark.parametrize(
    "name,array,mode",
    [
        ("rgb.jpg", _gradient(37, 53), None),
        ("rgb.png", _gradient(37, 53), None),
        ("gray.jpg", _gradient(37, 53)[..., 0], "L"),
        ("gray.png", _gradient(37, 53)[..., 0], "L"),
        ("rgba.png", np.dstack([_gradient(37, 53), _gradient(37, 53)[..., :1]]), "RGBA"),
        ("cmyk.jpg", _gradient(37, 53), "CMYK"),
    ],
)
def test_image_size_matches_the_decoded_shape(tmp_path, name, array, mode):
    path = tmp_path / name
    im = Image.fromarray(array)
    (im.convert(mode) if mode else im).save(path)
    w, h = image_size(path)
    assert load_image(path).shape == (h, w, 3) == (37, 53, 3)


def test_image_size_of_a_16bit_png_matches_the_decoded_shape(tmp_path):
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), np.full((37, 53, 3), 40000, np.uint16))
    w, h = image_size(path)
    img = load_image(path)
    assert img.shape == (h, w, 3) == (37, 53, 3)
    assert img.dtype == np.uint8 and int(img[0, 0, 0]) == 40000 >> 8


def test_jpeg_with_data_after_its_end_marker_loads_but_a_cut_one_does_not(tmp_path):
    import cv2
    import numpy as np
    import pytest

    from fh_utils.data.images import ImageLoadError, image_size, load_image

    ok, buf = cv2.imencode(".jpg", np.full((40, 30, 3), 90, np.uint8))
    trailer = tmp_path / "trailer.jpg"
    trailer.write_bytes(buf.tobytes() + b"SEFT" + bytes(300))  # e.g. a phone's appended metadata
    assert load_image(trailer).shape == (40, 30, 3)
    assert image_size(trailer) == (30, 40)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(ImageLoadError, match="cut.jpg: truncated JPEG"):
        load_image(cut)
    with pytest.raises(ImageLoadError, match="cut.jpg: truncated JPEG"):
        image_size(cut)
