"""The dataset, the balanced sampler and their wiring (``fh_utils.data.datasets``) as training relies on them.

Pinned down, on a tiny ST1 data root written per test: the dataset's frame, targets (int64, owned, -1 without
labels), crop decisions (sure, deterministic in evaluation, a strict draw in training) and items; the exact
balanced weights and sampler; what ``_worker_init`` and ``seed_epoch`` seed; which source ``build_source``
builds with which settings and folder; what ``create_dataset`` passes on (train flag, transform, source, crop
probability, limit, background-removed tree); and every DataLoader setting ``create_loaders`` returns for
train and val, shuffled or balanced, plus the plain, fold and full splits and their records.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import RandomSampler, SequentialSampler, WeightedRandomSampler

from fh_utils.data import datasets
from fh_utils.data.cache import CachedSource, CacheParams, CropSpec, FileSource, cache_size_for
from fh_utils.data.datasets import (
    FashionHowDataset,
    balanced_sample_weights,
    build_source,
    create_balanced_sampler,
    create_dataset,
    create_loaders,
    seed_epoch,
)
from fh_utils.data.folds import make_split
from fh_utils.data.images import DEFAULT_BACKGROUND
from fh_utils.data.reader import read_split
from fh_utils.tasks import get_task

ST1 = get_task("st1")
HEADER = "image_name,BBox_xmin,BBox_ymin,BBox_xmax,BBox_ymax,Daily,Gender,Embellishment"
# Train labels: Daily 12/6/4/2 over classes 0-3, Embellishment 16/6/2: the two heads balance differently.
TRAIN_LABELS = [(d, i % 5, e) for i, (d, e) in enumerate(zip([0] * 12 + [1] * 6 + [2] * 4 + [3] * 2,
                                                             [0] * 16 + [1] * 6 + [2] * 2))]  # fmt: skip
VAL_LABELS = [(i % 4, i % 5, i % 3) for i in range(12)]


def _write_root(root: Path) -> Path:
    """24 train and 12 val rows of 40x30 PNGs in the ST1 layout."""
    rng = np.random.default_rng(0)
    for split, labels in (("train", TRAIN_LABELS), ("val", VAL_LABELS)):
        (root / split).mkdir(parents=True)
        rows = []
        for i, (d, g, e) in enumerate(labels):
            cv2.imwrite(str(root / split / f"{i:02d}.png"), rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
            rows.append(f"{i:02d}.png,2,3,30,25,{d},{g},{e}")
        (root / f"Fashion-How24_sub1_{split}.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return _write_root(tmp_path / "root")


class _Source:
    """Records what the dataset asks of its source."""

    def __init__(self):
        self.calls = []

    def get(self, index, crop):
        self.calls.append((index, crop))
        return np.full((2, 2, 3), index, np.uint8)


class _Transform:
    def __init__(self):
        self.seen, self.seeds = [], []

    def __call__(self, img):
        self.seen.append(img)
        return torch.as_tensor(img)

    def set_seed(self, seed):
        self.seeds.append(seed)


def _frame(n: int = 3, labels: bool = True) -> pd.DataFrame:
    df = pd.DataFrame({"path": [f"p{i}" for i in range(n)]}, index=[10 + 3 * i for i in range(n)])
    if labels:
        for j, col in enumerate(ST1.label_columns):
            df[col] = np.arange(n, dtype=np.int32) + j
    return df


# ------------------------------------------------------------------------------------------ the dataset


def test_dataset_frame_and_targets_are_its_own_int64_copies():
    df = _frame()
    ds = FashionHowDataset(df, ST1, _Transform(), _Source())
    assert len(ds) == 3
    assert list(ds.df.index) == [0, 1, 2] and list(ds.df.columns) == list(df.columns)
    assert ds.targets.dtype == np.int64 and ds.targets.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert ds.task is ST1 and ds.crop_prob == 1.0 and type(ds.crop_prob) is float and ds.train is False
    ds.targets[0, 0] = 99  # the targets are the dataset's own: the frame is not touched
    assert df.iloc[0, 1] == 0 and ds.df.iloc[0, 1] == 0
    # int64 labels need no conversion: the targets must still be a writable copy, not a view of the frame.
    df64 = _frame().astype({c: np.int64 for c in ST1.label_columns})
    same = FashionHowDataset(df64, ST1, _Transform(), _Source())
    same.targets[1, 2] = -7
    assert df64["Embellishment"].tolist() == [2, 3, 4] and same.targets[1].tolist() == [1, 2, -7]
    df.attrs["has_labels"] = True
    assert FashionHowDataset(df, ST1, _Transform(), _Source()).targets.tolist()[2] == [2, 3, 4]


def test_dataset_without_labels_has_minus_one_for_every_head():
    df = _frame(4, labels=False)
    df.attrs["has_labels"] = False
    ds = FashionHowDataset(df, ST1, _Transform(), _Source())
    assert ds.targets.dtype == np.int64 and ds.targets.shape == (4, 3)
    assert (ds.targets == -1).all()


def test_an_item_is_the_transformed_crop_of_its_row_and_its_label_row():
    source, transform = _Source(), _Transform()
    ds = FashionHowDataset(_frame(), ST1, transform, source, crop_prob=0.0)
    x, y = ds[2]
    assert source.calls == [(2, False)]
    assert torch.equal(x, torch.full((2, 2, 3), 2, dtype=torch.uint8)) and transform.seen[0].shape == (2, 2, 3)
    assert y.dtype == torch.int64 and y.tolist() == [2, 3, 4]
    ds.crop_prob = 1.0
    ds[0]
    assert source.calls[-1] == (0, True)


def test_crop_decisions_sure_deterministic_in_evaluation_and_a_strict_draw_in_training(monkeypatch):
    def crops(prob, train, n=40):
        ds = FashionHowDataset(_frame(), ST1, _Transform(), _Source(), crop_prob=prob, train=train)
        return [ds._crop() for _ in range(n)]

    assert crops(0.5, False) == [True] * 40 and crops(0.0, False) == [False] * 40 and crops(1, False) == [True] * 40
    torch.manual_seed(0)
    state = torch.get_rng_state()
    assert crops(1.0, True) == [True] * 40
    assert torch.equal(torch.get_rng_state(), state), "a sure crop draws no random number"
    got = crops(0.3, True, 200)
    torch.set_rng_state(state)
    assert got == [bool(torch.rand(()) < 0.3) for _ in range(200)]
    assert 30 < sum(got) < 90
    assert crops(0.0, True) == [False] * 40
    monkeypatch.setattr(torch, "rand", lambda *shape: torch.tensor(0.25))
    assert crops(0.25, True, 1) == [False], "crop when the draw is below crop_prob, so P(crop) = crop_prob"


# ------------------------------------------------------------------------------------- the balanced sampler


def test_balanced_weights_are_one_over_the_count_of_each_rows_class():
    labels = np.array([0, 2, 0, 3, 0, 2])
    weights = balanced_sample_weights(labels, 5)
    assert weights.dtype == np.float64
    assert weights.tolist() == [1 / 3, 1 / 2, 1 / 3, 1.0, 1 / 3, 1 / 2]
    gen = torch.Generator().manual_seed(1)
    sampler = create_balanced_sampler(labels, 5, gen)
    assert isinstance(sampler, WeightedRandomSampler)
    assert sampler.weights.dtype == torch.float64 and sampler.weights.tolist() == weights.tolist()
    assert sampler.num_samples == 6 and sampler.replacement is True and sampler.generator is gen
    assert len(list(sampler)) == 6
    assert create_balanced_sampler(labels, 5).generator is None
    drawn = np.concatenate([list(create_balanced_sampler(np.array([0, 1, 1, 1]), 2, gen)) for _ in range(200)])
    assert (drawn == 0).sum() > 250, "with replacement: the single row of class 0 drawn about half the time"


# -------------------------------------------------------------------------------------------- seeding


class _Info:
    def __init__(self, seed, dataset):
        self.seed, self.dataset = seed, dataset


@pytest.fixture
def rng_states():
    """Leave the global RNGs as found."""
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    yield
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])


def test_worker_init_seeds_numpy_random_and_the_transform_from_the_worker_seed(monkeypatch, rng_states):
    ds = FashionHowDataset(_frame(), ST1, _Transform(), _Source())
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: _Info(2**31 + 5, ds))
    datasets._worker_init(0)
    drawn = (np.random.randint(0, 2**30, 4).tolist(), random.random())
    np.random.seed(5)
    random.seed(5)
    assert drawn == (np.random.randint(0, 2**30, 4).tolist(), random.random())
    assert ds.transform.seeds == [5]


def test_seed_epoch_seeds_every_rng_the_generator_and_the_transform(rng_states):
    ds = FashionHowDataset(_frame(), ST1, _Transform(), _Source())
    gen = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(ds, generator=gen)
    seed_epoch(loader, seed=5_000_000, epoch=7)
    epoch_seed = 5_000_000_007  # seed * 1000 + epoch; numpy takes it modulo 2**32
    drawn = (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random())
    torch.manual_seed(epoch_seed)
    np.random.seed(epoch_seed % 2**32)
    random.seed(epoch_seed)
    assert drawn == (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random())
    assert gen.initial_seed() == epoch_seed and ds.transform.seeds == [epoch_seed]
    seed_epoch(loader, seed=3, epoch=1)
    assert gen.initial_seed() == 3001 and torch.initial_seed() == 3001 and ds.transform.seeds[-1] == 3001
    plain = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(2)))
    seed_epoch(plain, seed=2, epoch=0)  # no generator, no transform: the RNGs only
    assert plain.generator is None and torch.initial_seed() == 2000


# ------------------------------------------------------------------------------------------ build_source


def test_build_source_gives_the_files_or_the_cache_with_the_same_parameters(root, tmp_path, monkeypatch):
    df = read_split(root, "st1", "val").head(2)
    df[["BBox_xmin", "BBox_ymax"]] = df[["BBox_xmin", "BBox_ymax"]].astype(float)  # boxes become ints again
    specs = [CropSpec(str(p), (2, 3, 30, 25)) for p in df["path"]]
    side = cache_size_for(40)
    files = build_source(df, 40)
    assert type(files) is FileSource and files.specs == specs
    assert all(type(v) is int for v in files.specs[0].box)
    assert (files.margin, files.target_size, files.size, files.background) == (0.0, side, side, DEFAULT_BACKGROUND)
    full = build_source(df, 40, crop_margin=0.2, reduced_decode=False)
    assert type(full) is FileSource and full.specs == specs
    assert (full.margin, full.target_size, full.size) == (0.2, None, side)
    cached = build_source(df, 40, crop_margin=0.2, cache=True, cache_dir=tmp_path / "c")
    assert type(cached) is CachedSource and cached.specs == specs and cached.cache_dir == tmp_path / "c"
    assert cached.params == CacheParams(size=side, margin=0.2)
    beside = build_source(df, 40, cache=True, data_root=root)
    assert beside.cache_dir == tmp_path / "root_cache" and beside.params == CacheParams(size=side, margin=0.0)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert build_source(df, 40, cache=True).cache_dir == tmp_path / "work_cache"  # beside the working folder


# ---------------------------------------------------------------------------------------- create_dataset


def test_create_dataset_trains_on_train_by_default_and_passes_its_settings_on(root):
    kw = dict(img_size=24, crop_margin=0.1, color_spaces=("rgb", "hsv"), seed=5)
    train = create_dataset(root, "st1", "train", crop_prob=0.3, **kw)
    val = create_dataset(root, "st1", "val", crop_prob=0.3, **kw)
    assert train.train is True and val.train is False
    assert create_dataset(root, "st1", "train", train=False).train is False
    assert create_dataset(root, "st1", "val", train=True).train is True
    assert train.crop_prob == 0.3 and val.crop_prob == 1.0  # evaluation crops whenever crop_prob > 0
    assert create_dataset(root, "st1", "val", crop_prob=0.0).crop_prob == 0.0
    assert create_dataset(root, "st1", "val", crop_prob=1.0).crop_prob == 1.0
    for ds in (train, val):
        assert ds.task.name == "st1" and ds.transform.color_spaces == ("rgb", "hsv")
        assert ds.transform.pipeline.seed == 5
        assert type(ds.source) is FileSource and (ds.source.size, ds.source.margin) == (cache_size_for(24), 0.1)
        x, y = ds[0]
        assert x.shape == (6, 24, 24) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert len(train.transform.pipeline.transforms) > 1, "training augments"
    for ds in (val, create_dataset(root, "st1", "train", augment="none", img_size=24)):
        (resize,) = ds.transform.pipeline.transforms
        assert type(resize).__name__ == "Resize" and (resize.height, resize.width) == (24, 24)
        assert resize.interpolation == cv2.INTER_AREA
    assert val.targets.tolist() == [list(t) for t in VAL_LABELS]
    assert train.targets.tolist() == [list(t) for t in TRAIN_LABELS]
    # Evaluation never augments, whatever augment names (a run config of another version, say).
    assert create_dataset(root, "st1", "val", augment="heavy").train is False
    with pytest.raises(ValueError, match="augment must be one of"):
        create_dataset(root, "st1", "train", augment="heavy")


def test_create_dataset_limit_keeps_the_first_rows_and_a_given_frame_is_used(root):
    full = read_split(root, "st1", "train")
    ds = create_dataset(root, "st1", "train", limit=5)
    assert len(ds) == 5 and list(ds.df.columns) == list(full.columns) and list(ds.df.index) == list(range(5))
    assert ds.df["image_name"].tolist() == full["image_name"].head(5).tolist()
    rows = full.iloc[[20, 3, 7]]
    given = create_dataset(root, "st1", "train", df=rows)
    assert given.df["image_name"].tolist() == ["20.png", "03.png", "07.png"] and list(given.df.columns) == list(
        full.columns
    )
    assert given.targets.tolist() == [list(TRAIN_LABELS[i]) for i in (20, 3, 7)]
    assert len(create_dataset(root, "st1", "train", df=rows, limit=2)) == 2


def test_create_dataset_cache_folders_beside_the_root_or_as_asked(root, tmp_path):
    assert create_dataset(root, "st1", "val", cache=True).source.cache_dir == tmp_path / "root_cache"
    asked = create_dataset(root, "st1", "val", cache=True, cache_dir=str(tmp_path / "mine"))
    assert type(asked.source) is CachedSource and asked.source.cache_dir == tmp_path / "mine"
    assert asked.source.params == CacheParams(size=cache_size_for(224), margin=0.0)
    import shutil

    shutil.copytree(root / "val", tmp_path / "root_nobg" / "val")
    nobg = create_dataset(root, "st1", "val", use_nobg=True, cache=True)
    assert nobg.source.cache_dir == tmp_path / "root_cache_nobg"
    assert all(p.startswith(str(tmp_path / "root_nobg" / "val")) for p in nobg.df["path"])
    nobg_asked = create_dataset(root, "st1", "val", use_nobg=True, cache=True, cache_dir=str(tmp_path / "mine"))
    assert nobg_asked.source.cache_dir == tmp_path / "mine"
    assert type(create_dataset(root, "st1", "val", use_nobg=True).source) is FileSource


def test_background_removed_rows_come_from_their_tree_or_the_error_says_what_to_run(root, tmp_path):
    import shutil

    shutil.copytree(root / "train", tmp_path / "elsewhere" / "train")
    ds = create_dataset(root, "st1", "train", use_nobg=True, nobg_root=str(tmp_path / "elsewhere"))
    assert ds.df["path"].tolist() == [str(tmp_path / "elsewhere" / "train" / f"{i:02d}.png") for i in range(24)]
    with pytest.raises(FileNotFoundError) as info:
        create_dataset(root, "st1", "val", use_nobg=True)
    assert str(info.value) == (f"no background-removed images at {tmp_path / 'root_nobg' / 'val'}; run notebook "
                               "02_remove_background.ipynb first (or set use_nobg=False)")  # fmt: skip
    plain = create_dataset(root, "st1", "train")
    assert plain.df["path"].tolist() == [str(root / "train" / f"{i:02d}.png") for i in range(24)]


def test_on_error_skip_reaches_the_reader(root):
    csv = root / "Fashion-How24_sub1_val.csv"
    csv.write_text(csv.read_text() + "missing.png,2,3,30,25,0,0,0\n")
    assert len(create_dataset(root, "st1", "val", on_error="skip")) == 12
    with pytest.raises(Exception, match="missing.png"):
        create_dataset(root, "st1", "val")


# ---------------------------------------------------------------------------------------- create_loaders


def test_loaders_settings_for_train_and_val(root):
    loaders = create_loaders(root, "st1", img_size=16, batch_size=4, seed=7)
    assert list(loaders) == ["train", "val"]
    train, val = loaders["train"], loaders["val"]
    assert train.dataset.train is True and val.dataset.train is False
    assert (len(train.dataset), len(val.dataset)) == (24, 12)
    assert (train.batch_size, val.batch_size) == (4, 8)  # evaluation: twice the batch by default
    assert type(train.sampler) is RandomSampler and train.sampler.generator is train.generator
    assert type(val.sampler) is SequentialSampler
    assert (train.drop_last, val.drop_last) == (True, False)
    for loader in (train, val):
        assert loader.num_workers == 0 and loader.worker_init_fn is None
        assert loader.generator.initial_seed() == 7
        assert loader.pin_memory is torch.cuda.is_available() and loader.persistent_workers is False
    assert train.dataset.split_record == {"split": "val"} and val.dataset.split_record == {}  # a field of each
    asked = create_loaders(root, "st1", img_size=16, batch_size=4, eval_batch_size=5, num_workers=1)
    assert asked["val"].batch_size == 5 and asked["train"].batch_size == 4
    for loader in asked.values():
        assert loader.num_workers == 1 and loader.worker_init_fn is datasets._worker_init
        assert loader.persistent_workers is False and loader.generator.initial_seed() == 0
    only = create_loaders(root, "st1", splits=("val",), img_size=16, batch_size=4)
    assert list(only) == ["val"] and len(only["val"].dataset) == 12


def test_drop_last_only_when_the_train_split_is_larger_than_a_batch(root):
    def drop_last(split, **kw):
        return create_loaders(root, "st1", splits=(split,), img_size=16, **kw)[split].drop_last

    assert drop_last("train", batch_size=24) is False  # 24 rows: one full batch, nothing to drop
    assert drop_last("train", batch_size=23) is True
    assert drop_last("train", batch_size=16, limit=16) is False
    assert drop_last("val", batch_size=2) is False


@pytest.mark.parametrize("head, column", [("", 0), ("Embellishment", 2), ("Gender", 1)])
def test_balanced_loader_weights_the_asked_head_or_the_first(root, head, column):
    loaders = create_loaders(root, "st1", img_size=16, batch_size=4, sampler="balanced", sampler_head=head, seed=3)
    train, val = loaders["train"], loaders["val"]
    assert type(train.sampler) is WeightedRandomSampler and train.sampler.generator is train.generator
    labels = np.array([t[column] for t in TRAIN_LABELS])
    num_classes = ST1.heads[column].num_classes
    assert train.sampler.weights.tolist() == balanced_sample_weights(labels, num_classes).tolist()
    assert train.sampler.num_samples == 24 and train.sampler.replacement is True
    assert train.batch_size == 4 and train.drop_last is True and train.generator.initial_seed() == 3
    assert type(val.sampler) is SequentialSampler, "validation is never resampled"


def test_fold_loaders_hold_what_make_split_assigns(root):
    kw = dict(img_size=16, batch_size=4, seed=7)
    train, val = read_split(root, "st1", "train"), read_split(root, "st1", "val")
    for limit, head in ((0, ""), (10, "Embellishment")):
        loaders = create_loaders(root, "st1", split="fold:1/3", limit=limit, sampler_head=head, **kw)
        parts = [f.head(limit).reset_index(drop=True) if limit else f for f in (train, val)]
        fit_rows, val_rows, record = make_split(*parts, ST1, "fold:1/3", seed=7, head=head)
        assert loaders["train"].dataset.split_record == record
        assert record["stratify_on"] == (head or "Daily") and record["seed"] == 7
        for split, rows in (("train", fit_rows), ("val", val_rows)):
            pd.testing.assert_frame_equal(loaders[split].dataset.df, rows.reset_index(drop=True))
        assert loaders["train"].dataset.train is True and loaders["val"].dataset.train is False
        for split in ("train", "val"):  # the loader's settings, not the defaults, build the fold datasets
            assert loaders[split].dataset[0][0].shape == (3, 16, 16)
            assert loaders[split].dataset.source.size == cache_size_for(16)
        assert len(loaders["train"].dataset) + len(loaders["val"].dataset) == (2 * limit or 36)


def test_full_split_has_only_a_train_loader_over_train_and_val(root):
    loaders = create_loaders(root, "st1", splits=("val", "train"), split="full", img_size=16, batch_size=4)
    assert list(loaders) == ["train"]
    ds = loaders["train"].dataset
    assert len(ds) == 36 and ds.train is True
    assert ds.split_record == {"split": "full", "train_rows": 36, "val_rows": 0, "pooled": {"train": 24, "val": 12}}
    assert ds.targets.tolist() == [list(t) for t in TRAIN_LABELS + VAL_LABELS]


def test_loaders_and_datasets_take_the_class_names_of_the_data_root(root):
    import json

    (root / "classes.json").write_text(json.dumps({"Daily": ["A", "B", "C", "D", "E"]}))
    loaders = create_loaders(root, "st1", img_size=16, batch_size=4, sampler="balanced")
    for loader in loaders.values():
        assert loader.dataset.task.head("Daily").class_names == ("A", "B", "C", "D", "E")
    assert create_dataset(root, "st1", "val").task.head("Daily").num_classes == 5


def test_create_loaders_resolves_the_task_once_and_reads_classes_json_once(root, monkeypatch):
    import json

    (root / "classes.json").write_text(json.dumps({"Daily": ["A", "B", "C", "D", "E"]}))
    reads = []
    read_text = Path.read_text

    def counting(self, *args, **kwargs):
        if self.name == "classes.json":
            reads.append(self)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    for split in ("val", "fold:1/3", "full"):
        reads.clear()
        loaders = create_loaders(root, "st1", img_size=16, batch_size=4, split=split, limit=20)
        assert reads == [root / "classes.json"], split  # was 9 reads (8 for "full") before issue 28
        tasks = {id(loader.dataset.task) for loader in loaders.values()}
        assert len(tasks) == 1, "every dataset holds the one resolved task"
