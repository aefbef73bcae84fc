"""The crop cache (``fh_utils.data.cache``) as its users rely on it.

Pinned down: the DCT reduction table; a :class:`FileSource` crop equals the hand-made pipeline (decode at the
reduction of the box, crop, one INTER_AREA resize) bit for bit, with every setting passed through; the cache
side; the entry key (its exact on-disk form, that it changes with every input that changes a crop and with
nothing else); a cached crop equals the uncached one on a miss and on a hit, a hit reads the file, a broken
or pickled entry is rebuilt, never unpickled; saves are atomic; ``build_cache`` builds each missing entry once,
counts them, splits the work into picklable jobs, uses the pool only for more than one worker, one OpenCV
thread per job, and shows its progress bar only when asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from fh_utils.data import cache
from fh_utils.data.cache import (
    CachedSource,
    CacheParams,
    CropSpec,
    FileSource,
    build_cache,
    cache_size_for,
    file_source_for,
    reduce_factor,
)
from fh_utils.data.images import DEFAULT_BACKGROUND, crop_box, load_image

# Boxes on the 640x480 JPEG: a tall and a wide one, both offset from the origin, so that using the other side
# (or x1 + x0 for the width) would pick another reduction at target 30 (4 here, 8 with either mistake).
TALL = (40, 100, 200, 420)  # 160 x 320
WIDE = (100, 40, 420, 200)  # 320 x 160
GREEN = (0, 255, 0)


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """Edges and noise, so a different decode scale, crop or interpolation changes the pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), ((x // 7 + y // 5) % 2) * 200], -1)
    return np.clip(base + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def images(tmp_path: Path) -> dict[str, str]:
    """A 640x480 JPEG and an 80x60 RGBA PNG whose every third column is transparent."""
    jpg = tmp_path / "tex.jpg"
    cv2.imwrite(str(jpg), _texture(480, 640, 0), [cv2.IMWRITE_JPEG_QUALITY, 92])
    rgba = np.dstack([_texture(60, 80, 1), np.where(np.arange(80) % 3 == 0, 0, 255)[None, :].repeat(60, 0)])
    png = tmp_path / "alpha.png"
    cv2.imwrite(str(png), rgba.astype(np.uint8))
    return {"jpg": str(jpg), "png": str(png)}


def _by_hand(path, box, reduce, crop, margin=0.0, background=DEFAULT_BACKGROUND, size=None) -> np.ndarray:
    """The documented pipeline, written out: decode at 1/reduce, crop the box (scaled), resize INTER_AREA."""
    img = load_image(path, background=background, reduce=reduce)
    if crop:
        img = crop_box(img, box, margin=margin, scale=1.0 / reduce)
    if size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def _key(spec: CropSpec, crop: bool, params: CacheParams) -> str:
    """The entry key as stored on disk: caches built by earlier versions must keep hitting.

    A stretch entry's key holds the four parameters it held before the letterbox's came (tests/test_letterbox.py).
    """
    st = os.stat(spec.path)
    values = asdict(params)
    if values["resize"] == "stretch":
        values = {k: values[k] for k in ("size", "margin", "background", "version")}
    ident = [os.path.abspath(spec.path), st.st_size, st.st_mtime_ns, list(spec.box), crop, values]
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------- decoding


def test_reduce_factor_is_the_largest_dct_scale_keeping_the_target_at_its_boundaries():
    table = {(31, 32): 1, (63, 32): 1, (64, 32): 2, (127, 32): 2, (128, 32): 4, (255, 32): 4, (256, 32): 8,
             (5000, 32): 8, (40, 5): 8, (39, 5): 4}  # fmt: skip
    assert {k: reduce_factor(*k) for k in table} == table


def test_file_source_defaults_decode_the_full_image_and_crop_the_bare_box(images):
    src = FileSource([CropSpec(images["jpg"], TALL)])
    assert len(src) == 1
    assert (src.margin, src.target_size, src.background, src.size) == (0.0, None, DEFAULT_BACKGROUND, None)
    crop = src.get(0, True)
    assert crop.shape == (320, 160, 3) and crop.dtype == np.uint8
    assert np.array_equal(crop, _by_hand(images["jpg"], TALL, 1, True))
    whole = src.get(0, False)
    assert whole.shape == (480, 640, 3)
    assert np.array_equal(whole, load_image(images["jpg"]))


@pytest.mark.parametrize("box", [TALL, WIDE], ids=["tall", "wide"])
def test_file_source_decodes_at_the_reduction_of_the_shorter_box_side(images, box):
    src = FileSource([CropSpec(images["jpg"], box)], target_size=30)
    crop = src.get(0, True)  # shorter side 160: 160 // 4 = 40 >= 30 > 160 // 8
    assert crop.shape == ((box[3] - box[1]) // 4, (box[2] - box[0]) // 4, 3)
    assert np.array_equal(crop, _by_hand(images["jpg"], box, 4, True))
    whole = src.get(0, False)  # the whole image at the box's reduction
    assert whole.shape == (120, 160, 3)
    assert np.array_equal(whole, _by_hand(images["jpg"], box, 4, False))


def test_file_source_applies_margin_background_and_one_inter_area_resize(images):
    specs = [CropSpec(images["jpg"], WIDE), CropSpec(images["png"], (5, 4, 70, 55))]
    src = FileSource(specs, margin=0.1, target_size=30, background=GREEN, size=24)
    assert (src.specs, src.margin, src.target_size, src.background, src.size) == (specs, 0.1, 30, GREEN, 24)
    for i, (reduce, spec) in enumerate(zip((4, 1), specs)):
        for crop in (True, False):
            got = src.get(i, crop)
            assert got.shape == (24, 24, 3) and got.dtype == np.uint8
            want = _by_hand(spec.path, spec.box, reduce, crop, margin=0.1, background=GREEN, size=24)
            assert np.array_equal(got, want), (spec.path, crop)
    # Without the resize: the margin widens the crop, transparent pixels take the background colour.
    png = FileSource(specs[1:], margin=0.1, background=GREEN).get(0, True)
    assert png.shape == (60, 76, 3)  # the 65 x 51 box plus 10 % each side, clipped to the 80 x 60 image
    assert np.array_equal(png, _by_hand(specs[1].path, specs[1].box, 1, True, margin=0.1, background=GREEN))
    assert tuple(png[0, 3]) == GREEN and tuple(png[0, 4]) != GREEN  # columns 3 and 4: transparent, opaque


def test_file_source_for_passes_every_cache_parameter_through(images):
    specs = [CropSpec(images["png"], (1, 2, 60, 50))]
    params = CacheParams(size=20, margin=0.25, background=GREEN)
    src = file_source_for(specs, params)
    assert type(src) is FileSource
    assert (src.specs, src.margin, src.target_size, src.background, src.size) == (specs, 0.25, 20, GREEN, 20)


def test_cache_side_is_the_training_size_plus_fifteen_percent_rounded():
    assert [cache_size_for(s) for s in (32, 40, 56, 100, 224)] == [37, 46, 64, 115, 258]
    assert type(cache_size_for(56)) is int


# ---------------------------------------------------------------------------------------- entry keys


def test_entry_path_is_the_sha1_of_the_sources_identity_in_a_two_letter_folder(images, tmp_path):
    specs = [CropSpec(images["jpg"], TALL), CropSpec(images["png"], (1, 2, 60, 50))]
    params = CacheParams(size=37, margin=0.05)
    src = CachedSource(specs, tmp_path / "c", params)
    for i, spec in enumerate(specs):
        for crop in (True, False):
            key = _key(spec, crop, params)
            assert src.entry_path(i, crop) == tmp_path / "c" / key[:2] / f"{key}.npy"
    assert _key(specs[0], True, params) != _key(specs[0], False, params)


def test_entry_key_changes_with_every_input_of_a_crop(images, tmp_path):
    path = tmp_path / "copy.png"
    path.write_bytes(Path(images["png"]).read_bytes())
    os.utime(path, ns=(10**18, 10**18))
    params = CacheParams(size=20, margin=0.1)

    def name(spec=CropSpec(str(path), (1, 2, 60, 50)), crop=True, p=params):
        return CachedSource([spec], tmp_path / "c", p).entry_path(0, crop).name

    base = name()
    changed = {
        "crop": name(crop=False),
        "other file": name(spec=CropSpec(images["png"], (1, 2, 60, 50))),
        **{
            f"box[{k}]": name(spec=CropSpec(str(path), tuple(v + (k == j) for j, v in enumerate((1, 2, 60, 50)))))
            for k in range(4)
        },  # fmt: skip
        "size": name(p=CacheParams(size=21, margin=0.1)),
        "margin": name(p=CacheParams(size=20, margin=0.2)),
        "background": name(p=CacheParams(size=20, margin=0.1, background=GREEN)),
        "version": name(p=CacheParams(size=20, margin=0.1, version=2)),
    }
    os.utime(path, ns=(10**18, 10**18 + 1))
    changed["mtime"] = name()
    with open(path, "ab") as fh:  # same mtime, one byte more
        fh.write(b"\0")
    os.utime(path, ns=(10**18, 10**18 + 1))
    changed["file size"] = name()
    assert len({base, *changed.values()}) == 1 + len(changed), changed


def test_entry_key_ignores_how_the_path_is_spelled_the_row_and_the_cache_folder(images, tmp_path, monkeypatch):
    params = CacheParams(size=20, margin=0.0)
    box = (1, 2, 60, 50)
    first = CachedSource([CropSpec(images["png"], box)], tmp_path / "a", params).entry_path(0, True)
    monkeypatch.chdir(Path(images["png"]).parent)
    relative = CachedSource([CropSpec("alpha.png", box)], tmp_path / "a", params).entry_path(0, True)
    other = CachedSource([CropSpec(images["jpg"], TALL), CropSpec(images["png"], box)], tmp_path / "b",
                         CacheParams(size=20, margin=0.0)).entry_path(1, True)  # fmt: skip
    assert relative == first
    assert other.relative_to(tmp_path / "b") == first.relative_to(tmp_path / "a")


# ------------------------------------------------------------------------------------ cached entries


def test_cached_crops_equal_the_uncached_ones_on_a_miss_and_on_a_hit(images, tmp_path):
    specs = [CropSpec(images["jpg"], TALL), CropSpec(images["jpg"], WIDE), CropSpec(images["png"], (5, 4, 70, 55))]
    params = CacheParams(size=30, margin=0.1, background=GREEN)
    folder = tmp_path / "deep" / "er" / "cache"  # parents made
    src = CachedSource(specs, folder, params)
    assert len(src) == 3 and src.specs is specs and src.params == params and src.cache_dir == folder
    CachedSource(specs, folder, params)  # an existing folder is fine
    files = FileSource(specs, margin=0.1, target_size=30, background=GREEN, size=30)
    for i, reduce in enumerate((4, 4, 1)):
        for crop in (True, False):
            want = _by_hand(specs[i].path, specs[i].box, reduce, crop, margin=0.1, background=GREEN, size=30)
            assert np.array_equal(files.get(i, crop), want)
            assert not src.entry_path(i, crop).exists()
            built = src.get(i, crop)  # miss: built and stored
            assert np.array_equal(built, want) and built.dtype == np.uint8
            assert np.array_equal(np.load(src.entry_path(i, crop)), want)
            assert np.array_equal(src.get(i, crop), want)  # hit
    assert len(list(folder.rglob("*.npy"))) == 6
    assert not list(folder.rglob("*.tmp")), "no temporary file left"


def test_a_hit_reads_the_stored_entry_and_a_broken_or_pickled_one_is_rebuilt(images, tmp_path):
    specs = [CropSpec(images["png"], (5, 4, 70, 55))]
    src = CachedSource(specs, tmp_path / "c", CacheParams(size=16, margin=0.0))
    want = src.get(0, True)
    path = src.entry_path(0, True)
    np.save(path, np.zeros((2, 2, 3), np.uint8))
    assert np.array_equal(src.get(0, True), np.zeros((2, 2, 3), np.uint8)), "a hit is read, not recomputed"
    header = path.read_bytes()[:64]
    broken = {
        "empty": b"",
        "truncated": header,
        "not numpy": b"garbage that is no pickle either",
        "pickle": pickle.dumps({"a": 1}),
    }
    for why, data in broken.items():
        path.write_bytes(data)
        assert np.array_equal(src.get(0, True), want), why  # rebuilt in place, in its existing folder
        assert np.array_equal(np.load(path), want), why
    np.save(path, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    assert np.array_equal(src.get(0, True), want), "an object array is never unpickled"
    assert np.array_equal(src.build(0, True), want) and np.array_equal(np.load(path), want)


def test_saving_an_entry_is_atomic_and_refuses_pickles(tmp_path):
    path = tmp_path / "ab" / "entry.npy"
    path.parent.mkdir()
    arr = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    cache._atomic_save(path, arr)
    assert os.listdir(path.parent) == ["entry.npy"]
    loaded = np.load(path, allow_pickle=False)
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, arr)
    cache._atomic_save(path, arr[::-1].copy())  # replaces the old entry
    assert np.array_equal(np.load(path), arr[::-1])
    with pytest.raises(ValueError, match="allow_pickle=False"):
        cache._atomic_save(tmp_path / "ab" / "obj.npy", np.array([{"a": 1}], dtype=object))
    assert os.listdir(path.parent) == ["entry.npy"], "a failed save leaves neither the entry nor a temporary file"


# -------------------------------------------------------------------------------------- build_cache


def _many_specs(tmp_path: Path, n: int) -> list[CropSpec]:
    """``n`` distinct boxes on one tiny PNG: distinct entries, cheap to build."""
    png = tmp_path / "tiny.png"
    cv2.imwrite(str(png), _texture(24, 32, 2))
    return [CropSpec(str(png), (i % 10, i // 10, i % 10 + 8, i // 10 + 10)) for i in range(n)]


class _Pool:
    """Stands in for ProcessPoolExecutor: records its workers and runs the jobs in order, each pickled as a
    real pool would."""

    made: list = []

    def __init__(self, workers):
        _Pool.made.append(workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, jobs):
        return [pickle.loads(pickle.dumps(fn))(pickle.loads(pickle.dumps(job))) for job in jobs]


@pytest.fixture
def threads(monkeypatch) -> list:
    """The cv2.setNumThreads calls (not applied, so the test process keeps its threads)."""
    calls: list = []
    monkeypatch.setattr(cv2, "setNumThreads", calls.append)
    return calls


def test_build_cache_builds_each_missing_entry_once_in_chunks_of_rows(tmp_path, monkeypatch, threads):
    monkeypatch.chdir(tmp_path)
    specs = _many_specs(tmp_path, 130)  # three jobs: 64, 64 and 2 rows
    params = CacheParams(size=8, margin=0.0)
    folder = tmp_path / "c"
    assert build_cache(specs, folder, params, workers=1, progress=False) == 130
    assert threads == [1, 1, 1], "one OpenCV thread per job"
    src = CachedSource(specs, folder, params)
    files = file_source_for(specs, params)
    for i in range(130):
        assert np.array_equal(np.load(src.entry_path(i, True)), files.get(i, True)), i
        assert not src.entry_path(i, False).exists()
    assert len(list(folder.rglob("*.npy"))) == 130 and sorted(os.listdir(tmp_path)) == ["c", "tiny.png"]
    assert build_cache(specs, folder, params, workers=1, progress=False) == 0
    for i in (0, 64, 129):
        src.entry_path(i, True).unlink()
    assert build_cache(specs, folder, params, workers=1, progress=False) == 3
    assert build_cache(specs[:3], folder, params, crops=(True, False), workers=1, progress=False) == 3
    for i in range(3):
        assert np.array_equal(np.load(src.entry_path(i, False)), files.get(i, False))
    assert build_cache([], folder, params, workers=1, progress=False) == 0


def test_build_cache_uses_a_pool_of_the_asked_workers_or_all_cores(tmp_path, monkeypatch, capsys, threads):
    monkeypatch.setattr(cache, "ProcessPoolExecutor", _Pool)
    monkeypatch.setattr(_Pool, "made", [])
    specs = _many_specs(tmp_path, 70)
    params = CacheParams(size=8, margin=0.0)
    monkeypatch.setattr(cache.os, "cpu_count", lambda: 3)
    assert build_cache(specs, tmp_path / "a", params, workers=2) == 70
    last = capsys.readouterr().err.split("\r")[-1]  # the bar counts the pool's rows too
    assert re.match(r"cache: 100%\|[^|]*\| 70/70 \[", last), last
    assert build_cache(specs, tmp_path / "b", params, progress=False) == 70  # default: every core
    assert build_cache(specs, tmp_path / "c", params, workers=1, progress=False) == 70  # one: no pool
    monkeypatch.setattr(cache.os, "cpu_count", lambda: None)
    assert build_cache(specs, tmp_path / "d", params, progress=False) == 70  # unknown core count: one
    assert _Pool.made == [2, 3]
    assert threads == [1] * 8
    assert build_cache(specs, tmp_path / "a", params, workers=2, progress=False) == 0
    src = CachedSource(specs, tmp_path / "b", params)
    assert all(src.entry_path(i, True).is_file() for i in range(70))


def test_build_cache_shows_its_progress_bar_only_when_asked(tmp_path, capsys, threads):
    specs = _many_specs(tmp_path, 70)
    params = CacheParams(size=8, margin=0.0)
    assert build_cache(specs, tmp_path / "a", params, workers=1) == 70  # progress by default
    last = capsys.readouterr().err.split("\r")[-1]
    assert re.match(r"cache: 100%\|[^|]*\| 70/70 \[[^\]]*img/s\]", last), last
    assert build_cache(specs, tmp_path / "b", params, workers=1, progress=False) == 70
    assert capsys.readouterr().err == ""
