"""Fold and full-fit splits: disjoint, stratified, deterministic, recorded, and nothing written to the data."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from fh_utils.data.config import DataConfig
from fh_utils.data.datasets import create_loaders
from fh_utils.data.folds import (
    MAX_FOLDS,
    SplitSpec,
    assign_folds,
    decode_assignment,
    make_split,
    parse_split,
    pooled_frame,
    split_record,
)
from fh_utils.tasks import get_task


def _tree_hash(root):
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def test_parse_split_accepts_the_three_forms_and_names_them_when_wrong():
    assert str(parse_split("val")) == "val" and str(parse_split("full")) == "full"
    assert (parse_split("fold:2/5").k, parse_split("fold:2/5").n) == (2, 5)
    for bad in ("fold:5/5", "fold:0/1", "folds", "fold:1-5", "train"):
        with pytest.raises(ValueError, match="fold:K/N"):
            parse_split(bad)
    with pytest.raises(ValueError, match="fold:K/N"):
        DataConfig(split="fold:9/3")


def test_assign_folds_is_stratified_deterministic_and_balanced():
    rng = np.random.default_rng(0)
    labels = rng.choice(6, size=500, p=[0.5, 0.2, 0.1, 0.1, 0.07, 0.03])
    folds = assign_folds(labels, 5, seed=3)
    assert np.array_equal(folds, assign_folds(labels, 5, seed=3))
    assert not np.array_equal(folds, assign_folds(labels, 5, seed=4))
    for cls in range(6):
        per_fold = np.bincount(folds[labels == cls], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, (cls, per_fold)  # stratified: each class dealt evenly
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 6
    # A class smaller than the fold count does not pile into fold 0.
    tiny = assign_folds(np.array([0, 0, 1, 2, 3]), 5, seed=0)
    assert len(set(tiny.tolist())) == 5


def test_fold_loaders_are_disjoint_cover_the_pool_and_are_recorded(demo_root):
    before = _tree_hash(demo_root)
    n = 3
    plain = create_loaders(demo_root, "st2", img_size=32, limit=60)
    pool = {(split, p) for split in ("train", "val") for p in plain[split].dataset.df["path"]}
    seen_val = []
    for k in range(n):
        loaders = create_loaders(demo_root, "st2", img_size=32, limit=60, split=f"fold:{k}/{n}", seed=7)
        train_df, val_df = loaders["train"].dataset.df, loaders["val"].dataset.df
        train_keys = set(zip(train_df["source"], train_df["path"]))
        val_keys = set(zip(val_df["source"], val_df["path"]))
        assert not train_keys & val_keys, "a row in both train and val of one fold"
        assert train_keys | val_keys == pool
        record = loaders["train"].dataset.split_record
        assert record["split"] == f"fold:{k}/{n}" and record["stratify_on"] == "Color"
        assert record["val_rows"] == len(val_df) and record["train_rows"] == len(train_df)
        folds = decode_assignment(record)
        assert len(folds["train"]) == 60 and len(folds["val"]) == 60
        seen_val.append(val_keys)
        # Stratified: every class of the pool lands in the held-out fold in proportion (within one row).
        pool_counts = np.bincount(np.r_[plain["train"].dataset.targets[:, 0], plain["val"].dataset.targets[:, 0]],
                                  minlength=18)  # fmt: skip
        val_counts = np.bincount(loaders["val"].dataset.targets[:, 0], minlength=18)
        assert np.all(np.abs(val_counts - pool_counts / n) <= 1.0 + 1e-9)
    assert set().union(*seen_val) == pool and sum(map(len, seen_val)) == len(pool), "folds partition the pool"
    again = create_loaders(demo_root, "st2", img_size=32, limit=60, split=f"fold:0/{n}", seed=7)
    assert set(zip(again["val"].dataset.df["source"], again["val"].dataset.df["path"])) == seen_val[0]
    assert _tree_hash(demo_root) == before, "a split wrote into the data folder"


def test_full_split_trains_on_train_and_val_without_a_val_loader(demo_root):
    loaders = create_loaders(demo_root, "st2", img_size=32, limit=40, split="full")
    assert set(loaders) == {"train"}
    assert len(loaders["train"].dataset) == 80
    assert loaders["train"].dataset.split_record["split"] == "full"


def test_parse_split_bounds_whitespace_and_the_message():
    assert parse_split(" val ") == SplitSpec("val") and parse_split("full\n") == SplitSpec("full")
    assert parse_split("fold:0/2") == SplitSpec("fold", 0, 2)
    assert parse_split("fold:35/36") == SplitSpec("fold", 35, 36) and MAX_FOLDS == 36
    assert str(SplitSpec("fold", 3, 7)) == "fold:3/7" and str(SplitSpec("val", 3, 7)) == "val"
    for bad in ("fold:0/37", "fold:-1/3", "fold:1/3x", "xfold:1/3", "fold:/3", "Val"):
        with pytest.raises(ValueError) as info:
            parse_split(bad)
        assert str(info.value) == ("split must be 'val', 'full' or 'fold:K/N' with 0 <= K < N and 2 <= N <= 36, "
                                   f"got {bad!r}")  # fmt: skip


def test_assign_folds_deals_each_class_round_robin_from_where_the_last_one_ended():
    labels = np.array([2, 0, 2, 1, 0, 2, 2, 1, 0])  # classes in np.unique order: 0 (3 rows), 1 (2), 2 (4)
    folds = assign_folds(labels, 4, seed=11)
    assert folds.dtype == np.int64 and folds.shape == (9,)
    assert sorted(folds[labels == 0]) == [0, 1, 2]  # starts at fold 0
    assert sorted(folds[labels == 1]) == [0, 3]  # then from fold 3: 3, 0
    assert sorted(folds[labels == 2]) == [0, 1, 2, 3]  # then from fold 1: 1, 2, 3, 0
    # The shuffle inside a class is the seeded permutation, exactly.
    rng = np.random.default_rng(11)
    expected = np.empty(9, dtype=np.int64)
    start = 0
    for cls in (0, 1, 2):
        rows = np.flatnonzero(labels == cls)[rng.permutation(int((labels == cls).sum()))]
        expected[rows] = (start + np.arange(len(rows))) % 4
        start = (start + len(rows)) % 4
    assert np.array_equal(folds, expected)
    assert np.array_equal(assign_folds(labels.astype(str), 4, seed=11), folds)  # any label type


def _frames():
    train = pd.DataFrame({"path": [f"t{i}.jpg" for i in range(7)], "Color": [0, 1, 1, 2, 0, 1, 2]})
    val = pd.DataFrame({"path": [f"v{i}.jpg" for i in range(5)], "Color": [2, 0, 1, 0, 2]})
    train.attrs, val.attrs = {"csv": "train.csv", "root": "r"}, {"csv": "val.csv", "root": "r"}
    return train, val


def test_pooled_frame_keeps_the_order_the_sources_and_both_csv_names():
    train, val = _frames()
    pooled = pooled_frame(train, val)
    assert list(pooled["path"]) == list(train["path"]) + list(val["path"])
    assert list(pooled["source"]) == ["train"] * 7 + ["val"] * 5
    assert list(pooled.index) == list(range(12))
    assert pooled.attrs == {"csv": ["train.csv", "val.csv"], "root": "r"}
    assert "source" not in train and "source" not in val  # the inputs are left alone


def test_make_split_records_val_full_and_fold_exactly():
    train, val = _frames()
    fit, held, record = make_split(train, val, get_task("st2"), "val")
    assert fit is train and held is val and record == {"split": "val", "train_rows": 7, "val_rows": 5}
    fit, held, record = make_split(train, val, get_task("st2"), "full")
    assert held is None and list(fit["path"]) == list(train["path"]) + list(val["path"])
    assert record == {"split": "full", "train_rows": 12, "val_rows": 0, "pooled": {"train": 7, "val": 5}}
    fit, held, record = make_split(train, val, get_task("st2"), "fold:1/3", seed=5)
    folds = assign_folds(np.r_[train["Color"], val["Color"]], 3, 5)
    pooled = pooled_frame(train, val)
    assert list(held["path"]) == list(pooled["path"][folds == 1]) and list(held.columns) == list(pooled.columns)
    assert list(fit["path"]) == list(pooled["path"][folds != 1]) and list(fit.columns) == list(pooled.columns)
    assert list(fit.index) == list(range(len(fit)))
    assert list(held.index) == list(range(len(held)))
    assert fit.attrs == pooled.attrs == held.attrs and fit.attrs is not held.attrs
    digits = "".join("0123456789abcdefghijklmnopqrstuvwxyz"[f] for f in folds)
    counts = pd.Series(pooled["Color"][folds == 1]).value_counts().sort_index()
    assert record == {
        "split": "fold:1/3", "stratify_on": "Color", "seed": 5, "train_rows": int((folds != 1).sum()),
        "val_rows": int((folds == 1).sum()), "assignment": {"train": digits[:7], "val": digits[7:]},
        "val_class_counts": {str(k): int(v) for k, v in counts.items()},
    }  # fmt: skip
    assert type(record["seed"]) is int and all(type(v) is int for v in record["val_class_counts"].values())
    assert json.loads(json.dumps(record)) == record
    assert {k: v.tolist() for k, v in decode_assignment(record).items()} == {"train": list(folds[:7]),
                                                                            "val": list(folds[7:])}  # fmt: skip
    assert decode_assignment(record)["val"].dtype == np.int64
    # Another head stratifies when named; a SplitSpec is taken as it is.
    train["Other"], val["Other"] = [0] * 7, [1] * 5
    _, _, other = make_split(train, val, get_task("st2"), SplitSpec("fold", 0, 2), seed=5, head="Other")
    assert other["stratify_on"] == "Other" and other["split"] == "fold:0/2"
    # class 0 (the 7 train rows) dealt from fold 0, class 1 (the 5 val rows) from fold 1: 1, 0, 1, 0, 1
    assert sorted(other["assignment"]["train"]) == list("0000111")
    assert sorted(other["assignment"]["val"]) == list("00111")


def test_a_fold_of_36_uses_every_digit_and_decodes_back():
    labels = np.arange(72) % 3
    folds = assign_folds(labels, MAX_FOLDS, seed=0)
    spec = SplitSpec("fold", 35, MAX_FOLDS)
    pooled = pd.DataFrame({"Color": labels, "source": ["train"] * 40 + ["val"] * 32})
    record = split_record(spec, pooled, folds, "Color", 0)
    digits = record["assignment"]["train"] + record["assignment"]["val"]
    assert set(digits) == set("0123456789abcdefghijklmnopqrstuvwxyz")
    assert np.array_equal(np.r_[decode_assignment(record)["train"], decode_assignment(record)["val"]], folds)
