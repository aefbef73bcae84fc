"""Fold and full-fit splits: disjoint, stratified, deterministic, recorded, and nothing written to the data."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fh_utils.data.config import DataConfig
from fh_utils.data.datasets import create_loaders
from fh_utils.data.folds import assign_folds, decode_assignment, parse_split


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
