import json
import os

import cv2
import numpy as np
import pytest
import torch

from fh_utils.data.cache import CachedSource, CacheParams, CropSpec, FileSource, build_cache
from fh_utils.data.datasets import create_balanced_sampler, create_dataset, create_loaders, seed_epoch
from fh_utils.data.reader import read_split
from fh_utils.models.factory import create_model
from fh_utils.tasks import get_task


def _write_tiny_root(root, daily_names):
    """Three 60x80 images and ST1 CSVs, plus a classes.json with its own Daily names."""
    (root / "train" / "a b").mkdir(parents=True)
    (root / "val" / "a b").mkdir(parents=True)
    rows = []
    for i in range(3):
        img = np.full((80, 60, 3), 40 * i, np.uint8)
        for split in ("train", "val"):
            cv2.imwrite(str(root / split / "a b" / f"{i}.jpg"), img)
        rows.append(f"a b/{i}.jpg,5,5,50,70,{i},{i},{i % 3}")
    for split in ("train", "val"):
        text = "image_name,BBox_xmin,BBox_ymin,BBox_xmax,BBox_ymax,Daily,Gender,Embellishment\n" + "\n".join(rows)
        (root / f"Fashion-How24_sub1_{split}.csv").write_text(text + "\n")
    (root / "classes.json").write_text(json.dumps({"Daily": daily_names}))


def test_classes_json_sets_names_and_counts_of_heads_and_model(tmp_path):
    _write_tiny_root(tmp_path, ["Casual", "Sports", "Ethnic", "Formal", "Other"])
    task = get_task("st1", tmp_path)
    assert task.head("Daily").class_names == ("Casual", "Sports", "Ethnic", "Formal", "Other")
    assert task.head("Gender").num_classes == 5  # not in the file: reference names kept
    model = create_model("st1", "mobilenetv4_conv_small", img_size=64, data_root=tmp_path)
    assert model.heads["Daily"].out_features == 5
    assert read_split(tmp_path, "st1", "train")["Daily"].tolist() == [0, 1, 2]


def test_dataset_serves_uint8_crops_and_one_label_per_head(demo_root):
    ds = create_dataset(demo_root, "st1", "train", img_size=64)
    x, y = ds[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 64, 64)
    assert y.tolist() == ds.df.loc[0, ["Daily", "Gender", "Embellishment"]].tolist()
    x2, y2 = create_dataset(demo_root, "st2", "val", img_size=48, color_spaces=("rgb", "hsv", "lab", "hls", "yuv"))[0]
    assert x2.shape == (15, 48, 48) and y2.shape == (1,)


def test_file_source_crops_the_box_and_decodes_jpeg_reduced(demo_root):
    df = read_split(demo_root, "st2", "val")
    row = df[df["path"].str.endswith(".jpg")].iloc[0]
    box = tuple(int(row[c]) for c in ["BBox_xmin", "BBox_ymin", "BBox_xmax", "BBox_ymax"])
    full = FileSource([CropSpec(row["path"], box)]).get(0, crop=True)
    assert full.shape[:2] == (box[3] - box[1], box[2] - box[0])
    small = FileSource([CropSpec(row["path"], box)], target_size=32).get(0, crop=True)
    assert min(small.shape[:2]) >= 31 and small.shape[0] < full.shape[0]
    whole = FileSource([CropSpec(row["path"], box)]).get(0, crop=False)
    assert whole.shape[:2] == (row["height"], row["width"])


def test_cache_matches_files_and_misses_when_the_source_changes(demo_root, tmp_path):
    df = read_split(demo_root, "st2", "val").head(4)
    boxes = df[["BBox_xmin", "BBox_ymin", "BBox_xmax", "BBox_ymax"]].values
    specs = [CropSpec(p, tuple(map(int, b))) for p, b in zip(df["path"], boxes)]
    params = CacheParams(size=40, margin=0.0)
    assert build_cache(specs, tmp_path / "c", params, workers=1, progress=False) == 4
    assert build_cache(specs, tmp_path / "c", params, workers=1, progress=False) == 0
    cached = CachedSource(specs, tmp_path / "c", params)
    expected = cv2.resize(FileSource(specs, target_size=40).get(0, True), (40, 40), interpolation=cv2.INTER_AREA)
    assert np.array_equal(cached.get(0, True), expected)
    before = cached.entry_path(0, True)
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(open(specs[0].path, "rb").read())
    moved = CachedSource([CropSpec(str(copy), specs[0].box)], tmp_path / "c", params)
    key1 = moved.entry_path(0, True)
    os.utime(copy, ns=(1, 1))
    assert moved.entry_path(0, True) != key1 != before
    assert moved.entry_path(0, False) != key1
    assert CachedSource(specs, tmp_path / "c", CacheParams(size=48, margin=0.0)).entry_path(0, True) != before


def test_balanced_sampler_draws_classes_near_uniformly():
    """240 epochs of 800 independent draws each (192,000): a class's share has a standard deviation of
    sqrt(p (1 - p) / n) = 0.00085 around 1/6, so 0.005 is a 6-sigma bound; an unweighted sampler would give
    class 0 a 0.74 share. The chi-square test looks at all classes at once."""
    from scipy.stats import chisquare

    labels = np.repeat(np.arange(6), [590, 100, 50, 30, 20, 10])
    sampler = create_balanced_sampler(labels, 6, torch.Generator().manual_seed(0))
    epochs = [list(sampler) for _ in range(240)]
    assert epochs[0] != epochs[1], "each pass over the sampler draws anew"
    draws = labels[np.concatenate(epochs)]
    counts = np.bincount(draws, minlength=6)
    assert len(draws) == 240 * len(labels)
    assert np.all(np.abs(counts / len(draws) - 1 / 6) < 0.005), counts / len(draws)
    assert chisquare(counts).pvalue > 1e-4, counts
    # Within a class, every sample is drawn about equally often (1/count of the class's draws each).
    rare = np.bincount(np.concatenate(epochs), minlength=len(labels))[labels == 5]
    assert rare.min() > 0.7 * rare.mean() and rare.max() < 1.3 * rare.mean(), rare


def test_loaders_replay_an_epoch_exactly_after_seeding(demo_root):
    loaders = create_loaders(demo_root, "st2", img_size=32, batch_size=16, sampler="balanced")
    train = loaders["train"]

    def first_batch(epoch):
        seed_epoch(train, seed=3, epoch=epoch)
        return next(iter(train))

    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert list(loaders["val"].dataset.df["image_name"]) == list(read_split(demo_root, "st2", "val")["image_name"])


def test_bad_parameters_are_refused(demo_root):
    with pytest.raises(ValueError, match="sampler must be one of"):
        create_loaders(demo_root, "st1", sampler="focal")
    with pytest.raises(TypeError, match="unknown setting"):
        create_loaders(demo_root, "st1", imbalance="sampler")
    with pytest.raises(ValueError, match="augment must be one of"):
        create_dataset(demo_root, "st1", "train", augment="heavy")
    with pytest.raises(FileNotFoundError, match="02_remove_background"):
        create_dataset(demo_root, "st1", "train", use_nobg=True, nobg_root=demo_root / "nowhere")
