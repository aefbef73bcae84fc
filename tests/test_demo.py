"""Tests of the synthetic demo dataset: layout, determinism, class frequencies, reuse and learnability."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, cross_val_score
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fh_utils.data.images import crop_box, image_size, load_image
from fh_utils.prep.demo import (
    DEMO_MANIFEST,
    DEMO_VERSION,
    demo_palette,
    ensure_demo_dataset,
    generate_demo_dataset,
    render_image,
)
from fh_utils.prep.demo import dataset as demo_dataset
from fh_utils.prep.demo import plan as demo_plan
from fh_utils.tasks import COLOR, REAL_TRAIN_COUNTS, ST1, ST2

FOLDERS = {
    "1209", "20200112_up", "2BLOUSE 2019", "2CARDIGON 2019", "2COAT 2019", "2JACKET 2019", "2JUMPER 2019",
    "2KINT", "2ONEPIECE 2019", "2SHIRT 2019", "2SKIRT2019", "2Sweater 2019", "2VEST 2019", "2pants 2019",
}  # fmt: skip
BOX = ["BBox_xmin", "BBox_ymin", "BBox_xmax", "BBox_ymax"]
ST1_COLUMNS = ["image_name", *BOX, "Daily", "Gender", "Embellishment"]  # spelled out: the real header
ST2_COLUMNS = ["image_name", *BOX, "Color"]
TINY = {"scale": 0.05, "size_range": (128, 192), "progress": False}  # fast trees for the file-level tests


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """A tree at the default image sizes, large enough for the distribution and learnability checks."""
    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "data", seed=0, scale=0.1, progress=False)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """A small tree generated with two worker processes (the determinism test compares it to one worker)."""
    return generate_demo_dataset(tmp_path_factory.mktemp("tiny") / "data", seed=0, workers=2, **TINY)


def read(root: Path, task, split: str) -> pd.DataFrame:
    return pd.read_csv(root / task.csv_name(split))


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------------ layout


def test_layout_csvs_folders_and_images(demo_root: Path):
    for task, columns in ((ST1, ST1_COLUMNS), (ST2, ST2_COLUMNS)):
        for split in ("train", "val"):
            with open(demo_root / task.csv_name(split), newline="", encoding="utf-8") as f:
                assert next(csv.reader(f)) == columns
    for split in ("train", "val"):
        assert {p.name for p in (demo_root / split).iterdir()} <= FOLDERS
    assert {p.name for p in (demo_root / "train").iterdir()} == FOLDERS  # 225 images cover all 14 folders
    names = {p.relative_to(demo_root / "train").as_posix() for p in (demo_root / "train").rglob("*.*")}
    assert any(n.endswith(".png") for n in names)
    assert sum(n.endswith(".jpg") for n in names) > 0.85 * len(names)
    assert all(n.split("/")[1][:2].isalpha() and "-" in n for n in names)  # e.g. 1209/BO00001-1.jpg


def test_every_listed_image_loads_and_boxes_are_tight_and_valid(demo_root: Path):
    for task in (ST1, ST2):
        for split in ("train", "val"):
            df = read(demo_root, task, split)
            assert df["image_name"].is_unique
            assert all(df[c].dtype.kind == "i" for c in BOX)
            for row in df.itertuples(index=False):
                path = demo_root / split / row.image_name
                w, h = image_size(path)
                x0, y0, x1, y1 = row.BBox_xmin, row.BBox_ymin, row.BBox_xmax, row.BBox_ymax
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (row.image_name, (x0, y0, x1, y1), (w, h))
                assert (x1 - x0) * (y1 - y0) < 0.8 * w * h  # around the garment, not the whole photo
    df = read(demo_root, ST2, "val")
    for name in df["image_name"]:
        img = load_image(demo_root / "val" / name)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def test_rgba_pngs_have_a_transparent_background(demo_root: Path):
    rgba = []
    for path in sorted(demo_root.rglob("*.png")):
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw.ndim == 3 and raw.shape[2] == 4:
            rgba.append((path, raw))
    assert rgba, "expected at least one RGBA png"
    path, raw = rgba[0]
    transparent = raw[:, :, 3] == 0
    assert 0.1 < transparent.mean() < 0.98  # a cut-out figure on a transparent background
    assert (load_image(path)[transparent] == 255).all()  # the loader composites it onto white


def test_manifest_says_synthetic_and_matches_the_csvs(demo_root: Path):
    manifest = json.loads((demo_root / DEMO_MANIFEST).read_text())
    assert manifest["synthetic"] is True and "synthetic" in manifest["note"].lower()
    assert (manifest["seed"], manifest["scale"], manifest["size_range"]) == (0, 0.1, [400, 900])
    assert manifest["version"] == DEMO_VERSION
    assert manifest["counts"]["st1_train_rows"] == len(read(demo_root, ST1, "train"))
    assert manifest["counts"]["st2_val_rows"] == len(read(demo_root, ST2, "val"))
    assert not any(k in json.dumps(manifest).lower() for k in ("time", "date"))  # no timestamps: reproducible


def test_pools_overlap_and_folders_carry_no_label(demo_root: Path):
    st1, st2 = read(demo_root, ST1, "train"), read(demo_root, ST2, "train")
    shared = set(st1["image_name"]) & set(st2["image_name"])
    assert 0 < len(shared) < min(len(st1), len(st2))
    both = st1.merge(st2, on="image_name", suffixes=("", "_2"))
    assert (both[BOX].values == both[[c + "_2" for c in BOX]].values).all()  # one image, one box
    # The folder predicts the colour no better than chance (largest-folder share of a class stays low).
    st2 = st2.assign(folder=st2["image_name"].str.split("/").str[0])
    purity = st2.groupby("folder")["Color"].agg(lambda s: s.value_counts().iloc[0] / len(s))
    assert purity.mean() < 0.5


# ---------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_whatever_the_workers(tiny_root: Path, tmp_path: Path):
    again = generate_demo_dataset(tmp_path / "again", seed=0, workers=1, **TINY)
    assert tree_hashes(again) == tree_hashes(tiny_root)


def test_other_seed_differs(tiny_root: Path, tmp_path: Path):
    other = tree_hashes(generate_demo_dataset(tmp_path / "other", seed=1, workers=1, **TINY))
    assert other[DEMO_MANIFEST] != tree_hashes(tiny_root)[DEMO_MANIFEST]
    ref = tree_hashes(tiny_root)
    shared = set(other) & set(ref)
    assert sum(other[k] == ref[k] for k in shared if k != DEMO_MANIFEST) == 0


# -------------------------------------------------------------------------------------- distributions


def test_every_class_present_and_st2_val_balanced(demo_root: Path, tiny_root: Path):
    for root in (demo_root, tiny_root):
        for task in (ST1, ST2):
            train = read(root, task, "train")
            for head in task.heads:
                counts = np.bincount(train[head.column], minlength=head.num_classes)
                assert len(counts) == head.num_classes and (counts >= 1).all(), (root, head.column, counts)
        val_counts = np.bincount(read(root, ST2, "val")["Color"], minlength=len(COLOR))
        assert (val_counts == val_counts[0]).all() and val_counts[0] >= 1


def test_class_frequencies_follow_the_real_imbalance(demo_root: Path):
    color = np.bincount(read(demo_root, ST2, "train")["Color"], minlength=len(COLOR))
    assert COLOR[int(np.argmax(color))] == "Black"
    assert color.max() >= 20 * color.min()  # real: 2525 Black vs 43 Mustard
    real = np.asarray(REAL_TRAIN_COUNTS["Color"])
    assert np.corrcoef(color, real)[0, 1] > 0.95
    st1_train, st1_val = read(demo_root, ST1, "train"), read(demo_root, ST1, "val")
    for head in ST1.heads:  # ST1 val has the train distribution; majority classes agree with the real ones
        real_major = int(np.argmax(REAL_TRAIN_COUNTS[head.column]))
        assert st1_train[head.column].value_counts().idxmax() == real_major
        assert st1_val[head.column].value_counts().idxmax() == real_major


def test_row_counts_scale_and_keep_one_per_class():
    plans = demo_plan.make_plans(seed=0, scale=1.0)
    assert len(plans["train"]["st1"]) == 1500 and len(plans["train"]["st2"]) == 1500
    assert len(plans["val"]["st1"]) == 400 and len(plans["val"]["st2"]) == 18 * 22
    for scale in (0.05, 0.001):
        plans = demo_plan.make_plans(seed=0, scale=scale)
        for split in ("train", "val"):
            plan = plans[split]
            for head in ST1.heads:
                assert set(plan["labels"][head.column][plan["st1"]]) == set(range(head.num_classes))
            assert set(plan["labels"]["Color"][plan["st2"]]) == set(range(len(COLOR)))


# ---------------------------------------------------------------------------------- reuse and safety


def test_ensure_reuses_a_matching_tree_and_regenerates_on_change(tmp_path: Path):
    root = ensure_demo_dataset(tmp_path / "data", seed=0, scale=0.05, size_range=(128, 192), progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert ensure_demo_dataset(root, seed=0, scale=0.05, size_range=(128, 192), progress=False) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == mtimes
    ensure_demo_dataset(root, seed=2, scale=0.05, size_range=(128, 192), progress=False)
    assert json.loads((root / DEMO_MANIFEST).read_text())["seed"] == 2
    # A missing image also triggers regeneration.
    victim = next(root.glob("train/*/*.jpg"))
    victim.unlink()
    ensure_demo_dataset(root, seed=2, scale=0.05, size_range=(128, 192), progress=False)
    assert victim.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_refuses_to_replace_other_folders(tmp_path: Path):
    precious = tmp_path / "real"
    precious.mkdir()
    (precious / "Fashion-How24_sub1_train.csv").write_text("image_name\n")
    for call in (
        lambda: generate_demo_dataset(precious, overwrite=True, **TINY),
        lambda: ensure_demo_dataset(precious, **TINY),
    ):
        with pytest.raises(FileExistsError, match="not a demo dataset"):
            call()
    assert [p.name for p in precious.iterdir()] == ["Fashion-How24_sub1_train.csv"]
    root = generate_demo_dataset(tmp_path / "demo", workers=1, **TINY)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_demo_dataset(root, **TINY)
    with pytest.raises(ValueError):
        generate_demo_dataset(tmp_path / "bad", **(TINY | {"scale": 0}))


def test_interrupted_generation_leaves_no_partial_tree(tmp_path: Path, monkeypatch):
    root = generate_demo_dataset(tmp_path / "data", seed=0, workers=1, **TINY)
    before = tree_hashes(root)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_dataset, "write_csvs", boom)  # the name generate_demo_dataset calls
    with pytest.raises(KeyboardInterrupt):
        generate_demo_dataset(root, seed=1, overwrite=True, workers=1, **TINY)
    with pytest.raises(KeyboardInterrupt):
        generate_demo_dataset(tmp_path / "fresh", seed=1, workers=1, **TINY)
    assert tree_hashes(root) == before  # the old tree is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no new tree, no temporary folder


# -------------------------------------------------------------------------------------- learnability


def box_crop(root: Path, split: str, row) -> np.ndarray:
    img = load_image(root / split / row.image_name)
    return crop_box(img, (row.BBox_xmin, row.BBox_ymin, row.BBox_xmax, row.BBox_ymax))


def centre_colour(crop: np.ndarray) -> np.ndarray:
    h, w = crop.shape[:2]
    return np.median(crop[int(h * 0.3) : int(h * 0.6), int(w * 0.3) : int(w * 0.7)].reshape(-1, 3), axis=0)


def st1_features(crop: np.ndarray) -> np.ndarray:
    """Box aspect, a coarse map of garment-coloured pixels (silhouette) and gradient statistics (pattern)."""
    h, w = crop.shape[:2]
    ref = centre_colour(crop)
    small = cv2.resize(crop, (24, 48), interpolation=cv2.INTER_AREA).astype(np.float32)
    silhouette = (np.abs(small - ref).sum(axis=2) < 60).reshape(6, 8, 3, 8).mean(axis=(1, 3)).ravel()
    centre = crop[int(h * 0.25) : int(h * 0.75), int(w * 0.3) : int(w * 0.7)]
    gray = cv2.cvtColor(cv2.resize(centre, (64, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    gx = cv2.Sobel(gray.astype(np.float32), cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(gray.astype(np.float32), cv2.CV_32F, 0, 1)
    mag = np.hypot(gx, gy)
    orient = np.histogram(np.arctan2(gy, gx) % np.pi, bins=6, range=(0, np.pi), weights=mag)[0]
    orient = orient / (mag.sum() + 1)
    grads = [np.log1p(mag.mean()), np.log1p(np.abs(gx).mean()), np.log1p(np.abs(gy).mean())]
    grads.append((mag > 40).mean())
    return np.r_[np.log(h / w), silhouette, grads, orient, gray.std() / 64]


def test_colour_is_learnable_from_the_box_centre(demo_root: Path):
    """Median RGB of the box centre + nearest centroid: chance is 1/18 = 0.056; require 0.4 on ST2 val."""
    train, val = read(demo_root, ST2, "train"), read(demo_root, ST2, "val")
    x_train = np.array([centre_colour(box_crop(demo_root, "train", r)) for r in train.itertuples()])
    x_val = np.array([centre_colour(box_crop(demo_root, "val", r)) for r in val.itertuples()])
    accuracy = (NearestCentroid().fit(x_train, train["Color"]).predict(x_val) == val["Color"]).mean()
    assert accuracy >= 0.4, accuracy


def test_daily_and_gender_are_learnable_from_simple_features(demo_root: Path):
    """Hand-made features + logistic regression, 5-fold CV on ST1 train+val: well above the majority rate."""
    rows = [(s, r) for s in ("train", "val") for r in read(demo_root, ST1, s).itertuples()]
    x = np.array([st1_features(box_crop(demo_root, s, r)) for s, r in rows])
    labels = pd.concat([read(demo_root, ST1, s) for s in ("train", "val")], ignore_index=True)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    for column, margin in (("Daily", 0.1), ("Gender", 0.25)):
        y = labels[column].to_numpy()
        majority = np.bincount(y).max() / len(y)
        accuracy = cross_val_score(clf, x, y, cv=KFold(5, shuffle=True, random_state=0)).mean()
        assert accuracy >= majority + margin, (column, accuracy, majority)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 0


@pytest.mark.parametrize("index", range(4))
def test_each_label_changes_only_its_own_factor(index: int):
    """Counterfactual renders: the same image with one label changed differs only inside the garment box."""
    base = {"Daily": 1, "Gender": 1, "Embellishment": 0, "Color": 3}
    img, box = render_image(7, "train", index, base, (300, 400))
    x0, y0, x1, y1 = box
    outside = np.ones(img.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    amount = {}
    for column, value in (("Color", 12), ("Daily", 3), ("Embellishment", 1), ("Embellishment", 2)):
        other, other_box = render_image(7, "train", index, base | {column: value}, (300, 400))
        diff = changed(img, other)
        assert other_box == box and not diff[outside].any(), column
        amount[column, value] = diff.mean()
    ys, xs = np.nonzero(changed(img, render_image(7, "train", index, base | {"Color": 12}, (300, 400))[0]))
    tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert np.abs(tight - box).max() <= 1, (tight, box)  # the box is tight around the garment
    assert 0 < amount["Embellishment", 1] < amount["Embellishment", 2]  # one motif < many motifs
    assert amount["Daily", 3] > amount["Embellishment", 2]  # a pattern covers more fabric than motifs
    sexy, sexy_box = render_image(7, "train", index, base | {"Gender": 4}, (300, 400))
    elegant, elegant_box = render_image(7, "train", index, base | {"Gender": 3}, (300, 400))
    height = lambda b: b[3] - b[1]  # noqa: E731
    assert height(sexy_box) < height(box) < height(elegant_box)  # crop top < straight top < long dress


def test_palette_covers_the_colour_classes_with_distinct_colours():
    palette = demo_palette()
    assert tuple(palette) == COLOR
    rgb = np.array(list(palette.values()), float)
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=2) + np.eye(len(rgb)) * 1e9
    assert dist.min() > 30  # near colours (Beige/Ivory, Navy/Black) stay apart
