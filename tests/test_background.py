"""Background removal: GrabCut masks, rembg without a model, and the resumable mirrored tree."""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fh_utils.data.images import load_image
from fh_utils.prep import background as bg
from fh_utils.prep.background import rembg as bg_rembg  # its module state: the session cache

ST1_COLUMNS = [
    "image_name",
    "BBox_xmin",
    "BBox_ymin",
    "BBox_xmax",
    "BBox_ymax",
    "Daily",
    "Gender",
    "Embellishment",
]
ST2_COLUMNS = ["image_name", "BBox_xmin", "BBox_ymin", "BBox_xmax", "BBox_ymax", "Color"]


# ------------------------------------------------------------------------------------------- fixtures


def synthetic_photo(seed: int, h: int = 400, w: int = 300) -> tuple[np.ndarray, np.ndarray, tuple]:
    """A saturated striped garment (the known foreground) with a head above it, on a cluttered background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = rng.integers(90, 200, 3) + 40 * (xx / w)[..., None] * rng.uniform(-1, 1, 3)
    img = np.clip(img + 40 * (yy / h)[..., None] * rng.uniform(-1, 1, 3), 0, 255).astype(np.uint8)
    s = min(h, w)
    for _ in range(30):
        c = tuple(int(v) for v in rng.integers(70, 200, 3) // 3 + 90)  # muted: unlike the garment
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(s // 40, s // 8))
        cv2.rectangle(img, (x, y), (x + 2 * r, y + r), c, -1) if rng.random() < 0.5 else cv2.circle(
            img, (x, y), r, c, -1
        )
    fg = np.zeros((h, w), np.uint8)
    cx, cy, gw, gh = int(w * 0.5), int(h * 0.55), int(w * 0.3), int(h * 0.35)
    cv2.ellipse(fg, (cx, cy), (gw // 2, gh // 2), 0, 0, 360, 255, -1)
    cv2.rectangle(fg, (cx - gw // 3, cy - gh // 2), (cx + gw // 3, cy), 255, -1)
    hsv = np.zeros((h, w, 3), np.uint8)
    hsv[...] = (int(rng.integers(0, 180)), 230, 210)
    hsv[((yy // 6) % 2).astype(bool), 2] = 150
    garment = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    img[fg > 0] = garment[fg > 0]
    cv2.circle(img, (cx, cy - gh // 2 - s // 12), s // 14, (224, 172, 140), -1)
    img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(fg)
    box = (int(xs.min()) - 6, int(ys.min()) - 6, int(xs.max()) + 7, int(ys.max()) + 7)
    return img, fg > 0, box


def write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, rgb[:, :, ::-1])
    assert ok
    path.write_bytes(buf.tobytes())


def make_root(tmp_path: Path, names: dict[str, list[str]], dataset_dir: bool = False) -> Path:
    """A data root in the official layout; every image is in ST1, the first two of each split also in ST2."""
    root = tmp_path / "data"
    base = root / "Dataset" if dataset_dir else root
    for split, split_names in names.items():
        st1, st2 = [], []
        for i, name in enumerate(split_names):
            img, _, box = synthetic_photo(seed=zlib.crc32(f"{split}/{name}".encode()) % 1000)
            write_image(base / split / name, img)
            st1.append([name, *box, 1, 2, 0])
            if i < 2:
                st2.append([name, *box, 5])
        pd.DataFrame(st1, columns=ST1_COLUMNS).to_csv(base / f"Fashion-How24_sub1_{split}.csv", index=False)
        pd.DataFrame(st2, columns=ST2_COLUMNS).to_csv(base / f"Fashion-How24_sub2_{split}.csv", index=False)
    return root


NAMES = {
    "train": [
        "2BLOUSE 2019/BL00001-1.jpg",
        "2BLOUSE 2019/블라우스 02.png",
        "1209/BO00001-1.jpg",
        "1209/BO00002-1.png",
    ],
    "val": ["2pants 2019/PA00001-1.jpg", "2pants 2019/PA00002-1.png"],
}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a = a > 127 if a.dtype == np.uint8 else a
    b = b > 127 if b.dtype == np.uint8 else b
    return float((a & b).sum() / max(1, (a | b).sum()))


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def output_files(out_root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(out_root)): (p.stat().st_mtime_ns, p.stat().st_ino)
        for p in out_root.rglob("*")
        if p.is_file() and p.name != bg.MANIFEST_NAME
    }


@pytest.fixture(autouse=True)
def no_rembg_model(tmp_path_factory, monkeypatch):
    """Every test sees an empty rembg model folder, so "auto" means GrabCut whatever this machine holds."""
    monkeypatch.setenv("U2NET_HOME", str(tmp_path_factory.mktemp("u2net_empty")))


# -------------------------------------------------------------------------------------------- GrabCut


def test_grabcut_working_size_matches_truth_and_full_resolution():
    img, fg, box = synthetic_photo(seed=3, h=800, w=600)
    fast = bg.grabcut_mask(img, box, work_size=160)
    full = bg.grabcut_mask(img, box, work_size=None, context=None)
    assert fast.shape == fg.shape and fast.dtype == np.uint8
    assert iou(fast, fg) >= 0.8
    assert iou(full, fg) >= 0.8
    assert iou(fast, full) >= 0.8
    assert 0 < np.count_nonzero((fast > 0) & (fast < 255)), "the edge should be feathered (soft)"
    x0, y0, x1, y1 = box
    outside = np.ones_like(fg)
    outside[max(0, y0 - 3) : y1 + 3, max(0, x0 - 3) : x1 + 3] = False
    assert fast[outside].max() == 0, "nothing outside the box (plus the feather) is foreground"


def test_grabcut_is_deterministic():
    img, _, box = synthetic_photo(seed=4)
    first = bg.grabcut_mask(img, box, work_size=200)
    cv2.setRNGSeed(12345)  # whatever the caller did to cv2's RNG before
    assert np.array_equal(first, bg.grabcut_mask(img, box, work_size=200))


def test_grabcut_degenerate_boxes():
    img, _, _ = synthetic_photo(seed=5)
    h, w = img.shape[:2]
    tiny = bg.grabcut_mask(img, (10, 10, 14, 13))
    assert np.count_nonzero(tiny) == 4 * 3 and tiny[10:13, 10:14].min() == 255
    whole = bg.grabcut_mask(img, (0, 0, w, h))  # touches every border: no background to learn from
    assert whole.shape == (h, w) and whole.max() == 255
    corner = bg.grabcut_mask(img, (-20, -20, 150, 200))  # partly outside the image
    assert corner.shape == (h, w) and corner[250:, :].max() == 0
    assert bg.grabcut_mask(img, (500, 500, 600, 600)).min() == 255, "no usable box: keep the whole image"
    assert bg.grabcut_mask(img, (float("nan"), 0, 10, 10)).min() == 255


def test_grabcut_union_of_boxes():
    img, fg, box = synthetic_photo(seed=6)
    x0, y0, x1, y1 = box
    halves = [(x0, y0, x1, (y0 + y1) // 2 + 10), (x0, (y0 + y1) // 2 - 10, x1, y1)]
    assert iou(bg.grabcut_mask(img, halves), fg) >= 0.8


def test_remove_background_fills_background():
    img, fg, box = synthetic_photo(seed=7)
    out, mask = bg.remove_background(img, box, method="grabcut", fill=(0, 255, 0))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[mask == 0] == (0, 255, 0)).all()
    assert np.array_equal(out[mask == 255], img[mask == 255])


# --------------------------------------------------------------------------------------------- rembg


def test_rembg_without_model_fails_clearly_and_auto_falls_back(tmp_path):
    home = Path(os.environ["U2NET_HOME"])
    assert bg.rembg_model_path("u2net") == home / "u2net.onnx"
    assert not bg.rembg_available("u2net")
    img, _, box = synthetic_photo(seed=8)
    start = time.perf_counter()
    with pytest.raises(bg.RembgModelMissingError) as info:
        bg.rembg_mask(img, "u2net")
    assert time.perf_counter() - start < 1.0, "must not try to download"
    msg = str(info.value)
    assert "u2net.onnx" in msg and str(home) in msg and "U2NET_HOME" in msg and "download" in msg
    assert bg.resolve_method("auto") == "grabcut"
    out, mask = bg.remove_background(img, box, method="auto")
    assert np.array_equal(mask, bg.grabcut_mask(img, box))
    root = make_root(tmp_path, {"train": NAMES["train"][:1]})
    with pytest.raises(bg.RembgModelMissingError):
        bg.create_nobg_tree(root, tmp_path / "out", method="rembg", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("env", ["u2net_home", "defaults", "rembg_home"])
def test_rembg_model_path_follows_rembg_rules(tmp_path, monkeypatch, env):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("U2NET_HOME", "REMBG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    if env == "u2net_home":
        monkeypatch.setenv("U2NET_HOME", str(tmp_path / "models"))
    elif env == "rembg_home":
        monkeypatch.setenv("REMBG_HOME", str(tmp_path / "rembg"))
    from rembg.sessions.u2net import U2netSession as session_cls  # rembg is a hard dependency: no skip
    assert bg_rembg._rembg_candidates("u2net") == [
        Path(session_cls.model_dir()) / "u2net.onnx",
        Path(session_cls.legacy_home()) / "u2net.onnx",
    ]
    for place in bg_rembg._rembg_candidates("u2net"):
        place.parent.mkdir(parents=True, exist_ok=True)
        place.write_bytes(b"not really a model")
        assert bg.rembg_available("u2net")
        assert bg.rembg_model_path("u2net") == Path(session_cls.resolve_existing("u2net.onnx"))
        place.unlink()


def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        out += bytes([low | (0x80 if n else 0)])
        if not n:
            return out


def _field(num: int, value: int | str | bytes) -> bytes:
    """One protobuf field: an int as a varint, text or bytes length-delimited."""
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def tiny_u2net_onnx() -> bytes:
    """An ONNX model with U^2-Net's input/output shapes whose "saliency" is the brightness (no onnx package
    here, so the protobuf is written by hand: ModelProto{ir_version, graph{ReduceMean node}, opset 13})."""

    def value_info(name: str, dims: tuple[int, ...]) -> bytes:
        shape = b"".join(_field(1, _field(1, d)) for d in dims)
        return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, shape)))

    axes = _field(1, "axes") + _field(8, 1) + _field(20, 7)
    keepdims = _field(1, "keepdims") + _field(3, 1) + _field(20, 2)
    node = _field(1, "x") + _field(2, "y") + _field(4, "ReduceMean") + _field(5, axes) + _field(5, keepdims)
    io = _field(11, value_info("x", (1, 3, 320, 320))) + _field(12, value_info("y", (1, 1, 320, 320)))
    return _field(1, 7) + _field(7, _field(1, node) + _field(2, "g") + io) + _field(8, _field(2, 13))


def test_rembg_with_model_on_disk_never_downloads(tmp_path, monkeypatch):
    import pooch  # rembg's downloader; rembg is a hard dependency: a broken install fails here, no skip
    import rembg  # noqa: F401

    def no_download(*args, **kwargs):
        raise AssertionError("rembg tried to download a model")

    monkeypatch.setattr(pooch, "retrieve", no_download)
    monkeypatch.setattr(bg_rembg, "_REMBG_SESSIONS", {})  # the cache _rembg_session reads
    home = Path(os.environ["U2NET_HOME"])
    (home / "u2net.onnx").write_bytes(tiny_u2net_onnx())
    assert bg.rembg_available("u2net") and bg.resolve_method("auto") == "rembg"
    img, _, box = synthetic_photo(seed=9)
    img[:100] = 255
    mask = bg.rembg_mask(img)
    assert mask.shape == img.shape[:2] and mask.dtype == np.uint8
    assert mask[:90].mean() > mask[110:].mean(), "the fake model's saliency is the brightness"
    out, mask2 = bg.remove_background(img, box, method="auto")
    assert np.array_equal(mask, mask2) and len(bg_rembg._REMBG_SESSIONS) == 1, "one cached session"
    root = make_root(tmp_path, {"val": NAMES["val"][:1]})
    result = bg.create_nobg_tree(root, tmp_path / "out", workers=1, progress=False)
    assert result["method"] == "rembg" and result["n_done_now"] == 1
    settings = json.loads((tmp_path / "out" / bg.MANIFEST_NAME).read_text())["settings"]
    assert settings["method"] == "rembg" and settings["model_name"] == "u2net"


# ---------------------------------------------------------------------------------------------- tree


def test_tree_mirrors_names_and_leaves_originals_untouched(tmp_path):
    root = make_root(tmp_path, NAMES, dataset_dir=True)
    before = file_hashes(root)
    out = tmp_path / "nobg"
    result = bg.create_nobg_tree(root, out, method="auto", workers=2, progress=False)
    assert file_hashes(root) == before
    expected = {f"{split}/{name}" for split, names in NAMES.items() for name in names}
    assert set(output_files(out)) == expected  # overlapping ST1/ST2 rows give one file each
    assert result["n_total"] == len(expected) == result["n_done_now"]
    assert result["n_failed"] == 0 and result["n_skipped"] == 0 and result["method"] == "grabcut"
    for rel in expected:
        data = (out / rel).read_bytes()
        assert data.startswith(b"\x89PNG" if rel.endswith(".png") else b"\xff\xd8\xff")
        orig = load_image(root / "Dataset" / rel)
        new = load_image(out / rel)
        assert new.shape == orig.shape
        assert (new[:3, :3] >= 250).all(), "the corner is background, filled white"
    manifest = json.loads((out / bg.MANIFEST_NAME).read_text())
    assert manifest["settings"]["method"] == "grabcut" and manifest["settings"]["work_size"] == 320
    assert manifest["settings"]["fill"] == [255, 255, 255] and manifest["source_root"] == str(root.resolve())


def test_default_out_root_is_beside_the_data(tmp_path):
    root = make_root(tmp_path, {"val": NAMES["val"][:1]})
    result = bg.create_nobg_tree(root, workers=1, progress=False)
    assert result["out_root"] == tmp_path / "data_nobg"
    assert (tmp_path / "data_nobg" / "val" / NAMES["val"][0]).is_file()
    pairs = bg.sample_pairs(root, n=3, max_side=100)
    assert len(pairs) == 1 and pairs[0][0].shape == pairs[0][1].shape and max(pairs[0][0].shape) == 100


def test_resume_skips_done_images_and_removes_temp_files(tmp_path):
    root = make_root(tmp_path, {"train": NAMES["train"][:3]})
    out = tmp_path / "nobg"
    first = bg.create_nobg_tree(root, out, workers=1, progress=False)
    done = output_files(out)
    leftover = out / "train" / "1209" / "BO00009-1.jpg.123.tmp"
    leftover.write_bytes(b"\xff\xd8\xff half a jpeg")
    time.sleep(0.01)
    second = bg.create_nobg_tree(root, out, workers=1, progress=False)
    assert second["n_skipped"] == second["n_total"] == first["n_total"] == 3
    assert second["n_done_now"] == 0 and second["n_failed"] == 0
    assert not leftover.exists()
    assert output_files(out) == done, "nothing rewritten"


def test_corrupt_images_are_reported_not_fatal(tmp_path):
    root = make_root(tmp_path, {"train": NAMES["train"]})
    good = root / "train" / NAMES["train"][0]
    good.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # truncated JPEG
    (root / "train" / NAMES["train"][1]).write_bytes(b"")  # zero-byte PNG
    (root / "train" / NAMES["train"][2]).unlink()  # listed but missing
    out = tmp_path / "nobg"
    result = bg.create_nobg_tree(root, out, workers=1, progress=False)
    assert result["n_failed"] == 3 and result["n_done_now"] == 1
    failed = {Path(f).name: err for f, err in result["failures"]}
    assert set(failed) == {Path(n).name for n in NAMES["train"][:3]}
    assert "truncated" in failed[Path(NAMES["train"][0]).name]
    assert set(output_files(out)) == {f"train/{NAMES['train'][3]}"}


def test_manifest_mismatch_is_refused(tmp_path):
    root = make_root(tmp_path, {"val": NAMES["val"]})
    out = tmp_path / "nobg"
    bg.create_nobg_tree(root, out, work_size=320, workers=1, progress=False, limit=1)
    with pytest.raises(bg.ManifestMismatchError, match="work_size"):
        bg.create_nobg_tree(root, out, work_size=160, workers=1, progress=False)
    with pytest.raises(bg.ManifestMismatchError, match="fill"):
        bg.create_nobg_tree(root, out, fill=(0, 0, 0), workers=1, progress=False)
    result = bg.create_nobg_tree(root, out, work_size=160, workers=1, progress=False, overwrite=True)
    assert result["n_done_now"] == 2 and result["n_skipped"] == 0
    assert json.loads((out / bg.MANIFEST_NAME).read_text())["settings"]["work_size"] == 160


def test_refuses_to_write_into_the_data_or_a_foreign_folder(tmp_path):
    root = make_root(tmp_path, {"val": NAMES["val"][:1]})
    with pytest.raises(ValueError, match="overlaps"):
        bg.create_nobg_tree(root, root / "nobg", workers=1, progress=False)
    foreign = tmp_path / "elsewhere"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="no nobg_manifest.json"):
        bg.create_nobg_tree(root, foreign, workers=1, progress=False, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("bad_line,message", [
    ("{name},10.5,20,200,300,1,2,0", r"BBox_xmin must be an integer pixel coordinate, got '10\.5'"),  # not rounded
    ("{name},,20,200,300,1,2,0", r"BBox_xmin is missing"),  # not dropped
    ("../{name},10,20,200,300,1,2,0", r"image_name '\.\./.*' escapes the images folder"),
])  # fmt: skip
def test_the_csvs_are_read_by_the_validated_reader(tmp_path, bad_line, message):
    from fh_utils.data.reader import DataValidationError

    root = make_root(tmp_path, {"train": NAMES["train"][:3]})
    csv = root / "Fashion-How24_sub1_train.csv"
    lines = csv.read_text(encoding="utf-8").splitlines()
    lines[2] = bad_line.format(name=NAMES["train"][1])
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=message) as info:
        bg.create_nobg_tree(root, tmp_path / "out", workers=1, progress=False)
    assert [(p.file, p.row) for p in info.value.problems] == [(str(csv), 3)]
    assert not (tmp_path / "out").exists(), "nothing is written before the CSVs are valid"
