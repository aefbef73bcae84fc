"""Near-duplicates (issue 30): planted near-copies are found, distinct photos are not paired, the hashes are cached."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from fh_utils.data import duplicates as dup
from fh_utils.workbook import duplicates as report

SIDE = 96


def _photo(seed: int) -> np.ndarray:
    """A smooth random 'photo': an 8 x 8 grid of random colours upscaled, with a random bright disc."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
    centre = tuple(int(v) for v in rng.integers(20, SIDE - 20, 2))
    cv2.circle(img, centre, int(rng.integers(8, 20)), (255, 255, 255), -1)
    return img


def _near_copy(img: np.ndarray) -> np.ndarray:
    """What a re-saved copy looks like: 3 % cropped off two sides, then resized to 70 %."""
    c = int(0.03 * SIDE)
    small = img[c:, : SIDE - c]
    return cv2.resize(small, (int(SIDE * 0.7), int(SIDE * 0.7)), interpolation=cv2.INTER_AREA)


def _write(path: Path, img: np.ndarray, quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])


def _csv(path: Path, names: list[str], labels: str) -> None:
    rows = [f"{n},4,4,80,80,{labels}" for n in names]
    head = "Daily,Gender,Embellishment" if labels.count(",") == 2 else "Color"
    path.write_text(f"image_name,BBox_xmin,BBox_ymin,BBox_xmax,BBox_ymax,{head}\n" + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train t0-t9, val v0-v5 and a test folder, with three planted near-copies.

    - ``val/a/copy_t3.jpg``: t3 cropped, resized and re-encoded at quality 60; in the val pools of both tasks.
    - ``val/a/copy_t8.jpg``: t8 re-encoded; listed by ST2's val only, while t8 is ST1's train only (cross-pool).
    - ``test/x/copy_v1.jpg``: v1 resized; the test folder has no CSV.
    """
    root = tmp_path_factory.mktemp("dups") / "data"
    photos = {f"t{k}": _photo(k) for k in range(10)} | {f"v{k}": _photo(100 + k) for k in range(6)}
    for name, img in photos.items():
        _write(root / ("train" if name[0] == "t" else "val") / "a" / f"{name}.jpg", img)
    _write(root / "val" / "a" / "copy_t3.jpg", _near_copy(photos["t3"]), quality=60)
    _write(root / "val" / "a" / "copy_t8.jpg", photos["t8"], quality=70)
    _write(root / "test" / "x" / "copy_v1.jpg", cv2.resize(photos["v1"], (64, 64), interpolation=cv2.INTER_AREA))
    train = [f"a/t{k}.jpg" for k in range(10)]
    val = [f"a/v{k}.jpg" for k in range(6)] + ["a/copy_t3.jpg"]
    _csv(root / "Fashion-How24_sub1_train.csv", train, "1,2,0")
    _csv(root / "Fashion-How24_sub2_train.csv", [n for n in train if n != "a/t8.jpg"], "4")
    _csv(root / "Fashion-How24_sub1_val.csv", val, "1,2,0")
    _csv(root / "Fashion-How24_sub2_val.csv", val + ["a/copy_t8.jpg"], "4")
    return root


@pytest.fixture(scope="module")
def found(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dup.NearDuplicates:
    return dup.find_near_duplicates(data_root, cache_dir=tmp_path_factory.mktemp("hashcache"), progress=False)


def _pair_names(result: dup.NearDuplicates) -> set[frozenset[str]]:
    return {frozenset((r.image_a, r.image_b)) for r in report.pairs_table(result).itertuples()}


def test_planted_near_copies_found_and_nothing_else(found: dup.NearDuplicates) -> None:
    assert len(found.images) == 10 + 8 + 1  # each file once, however many pools list it
    assert not found.errors
    assert _pair_names(found) == {
        frozenset(("a/t3.jpg", "a/copy_t3.jpg")),
        frozenset(("a/t8.jpg", "a/copy_t8.jpg")),
        frozenset(("a/v1.jpg", "x/copy_v1.jpg")),
    }
    table = report.pairs_table(found)
    assert list(table["kind"]) == ["train-val", "train-val", "val-test"]  # leaks first
    crop = table[table["image_b"] == "a/copy_t3.jpg"].iloc[0]
    assert crop["image_a"] == "a/t3.jpg" and crop["pools_a"] == "st1/train,st2/train"  # train side first
    assert crop["distance"] <= dup.DEFAULT_THRESHOLD and crop["dhash_distance"] <= dup.DEFAULT_THRESHOLD


def test_distinct_photos_are_far_apart(found: dup.NearDuplicates) -> None:
    # The planted pairs aside, the closest two photos are far beyond the threshold: no pair by luck.
    ph = np.array([int(h, 16) for h in found.images["phash"]], dtype=np.uint64)
    dist = dup.hamming(ph[:, None], ph[None, :]).astype(int)
    planted = {(r.a, r.b) for r in found.pairs.itertuples()} | {(r.b, r.a) for r in found.pairs.itertuples()}
    others = [dist[i, j] for i in range(len(ph)) for j in range(len(ph)) if i != j and (i, j) not in planted]
    assert min(others) > 2 * dup.DEFAULT_THRESHOLD


def test_val_leak_warning_counts_the_share(found: dup.NearDuplicates) -> None:
    leaks = report.val_train_leaks(found).set_index("task")
    assert leaks.loc["st1", "val_images"] == 7 and leaks.loc["st1", "near_copies_of_train"] == 1
    assert leaks.loc["st2", "val_images"] == 8 and leaks.loc["st2", "near_copies_of_train"] == 1  # copy_t3 only:
    # copy_t8's original is in ST1's train, not ST2's
    with pytest.warns(UserWarning, match=r"st1: 1 of 7 val images \(14\.3%\)"):
        msg = report.leak_warning(report.val_train_leaks(found), found.threshold)
    assert "st2: 1 of 8" in msg
    clean = report.val_train_leaks(found).assign(near_copies_of_train=0)
    assert report.leak_warning(clean, 8) == ""


def test_cross_pool_pair_and_shared_files(found: dup.NearDuplicates) -> None:
    overlap = report.pool_overlap(found).set_index(["pool", "other"])
    assert overlap.loc[("st1/train", "st2/val"), "near_copy"] == 2  # t3 (copy in both val pools) and t8
    assert overlap.loc[("st2/val", "st1/train"), "near_copy"] == 2
    assert overlap.loc[("st2/train", "st2/val"), "near_copy"] == 1  # t8 is not in ST2's train
    assert overlap.loc[("st1/train", "st2/train"), "same_file"] == 9  # the same files, not pairs
    assert overlap.loc[("st1/val", "st2/val"), "same_file"] == 7
    assert overlap.loc[("st1/val", "test"), "near_copy"] == 1  # v1's copy in the test folder
    assert overlap.loc[("st1/val", "st1/val"), "same_file"] == 0
    matrix = report.overlap_matrix(report.pool_overlap(found))
    assert matrix.loc["st1/train", "images"] == 10 and matrix.loc["st1/train", "st2/train"] == 0.9  # all but t8
    assert matrix.loc["test", "st1/val"] == 1.0
    line = report.summary_line(found, report.pairs_table(found))
    assert "19 images" in line and "3 near-copy pairs" in line and "train-val 2, val-test 1" in line


def test_hashes_cached_by_path_size_and_mtime(data_root: Path, tmp_path: Path) -> None:
    before = sorted(p.relative_to(data_root) for p in data_root.rglob("*"))
    calls: list[str] = []

    def counting(path: str):
        calls.append(path)
        return dup.hash_file(path)

    paths = sorted(str(p) for p in data_root.rglob("*.jpg"))
    first = dup.hash_files(paths, tmp_path, progress=False, hasher=counting)
    assert len(calls) == first.hashed == len(paths) and first.ok.all()
    assert (tmp_path / dup.HASH_FILE).is_file()
    calls.clear()
    again = dup.hash_files(paths, tmp_path, progress=False, hasher=counting)
    assert calls == [] and again.hashed == 0
    assert np.array_equal(again.phash, first.phash) and np.array_equal(again.dhash, first.dhash)
    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a changed file is hashed again
    try:
        dup.hash_files(paths, tmp_path, progress=False, hasher=counting)
    finally:
        os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert calls == [str(Path(paths[0]).resolve())]
    assert sorted(p.relative_to(data_root) for p in data_root.rglob("*")) == before  # raw data untouched


def test_default_cache_goes_beside_the_data_root(data_root: Path) -> None:
    first = dup.find_near_duplicates(data_root, progress=False)
    assert (data_root.parent / f"{data_root.name}_cache" / dup.HASH_FILE).is_file()
    assert dup.find_near_duplicates(data_root, progress=False).hashed == 0 < first.hashed


def test_find_pairs_matches_brute_force_across_blocks() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, 40).astype(np.uint64)
    ph = np.concatenate([base, base ^ flips, base[:5]])  # 1-bit copies, and exact copies
    got = dup.find_pairs(ph, threshold=3, block=16)
    want = {(i, j) for i in range(len(ph)) for j in range(i + 1, len(ph))
            if bin(int(ph[i]) ^ int(ph[j])).count("1") <= 3}  # fmt: skip
    assert set(zip(got["i"], got["j"])) == want and len(got) == len(want) >= 45
    assert got["distance"].is_monotonic_increasing
    dh = np.zeros_like(ph)
    dh[40:80] = np.uint64(2**64 - 1)  # the 1-bit copies' dHash is far off: the second check drops them
    kept = dup.find_pairs(ph, dh, threshold=3, block=16)
    flipped = set(range(40, 80))
    assert set(zip(kept["i"], kept["j"])) == {(i, j) for i, j in want if (i in flipped) == (j in flipped)}


def test_gallery_shows_each_pair(found: dup.NearDuplicates) -> None:
    table = report.pairs_table(found)
    fig = report.pair_gallery(found, table, n=2, per_row=2)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 4
    assert "train-val" in fig.axes[0].get_title(loc="left")
    empty = report.pair_gallery(found, table.iloc[:0])
    assert not [ax for ax in empty.axes if ax.images]


def test_unreadable_image_reported_not_raised(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8not a jpeg")
    res = dup.hash_files([bad, tmp_path / "missing.jpg"], None, progress=False)
    assert not res.ok.any() and res.hashed == 1  # the missing file is never decoded
    assert "not found" in res.errors[str(tmp_path / "missing.jpg")]
    assert str(bad) in res.errors[str(bad)]


def test_pairs_table_puts_the_earlier_split_first(found: dup.NearDuplicates) -> None:
    swapped = found.pairs.rename(columns={f"{c}_{s}": f"{c}_{o}" for c in ("split", "image", "pools")
                                          for s, o in (("a", "b"), ("b", "a"))})  # fmt: skip
    swapped = swapped.rename(columns={"a": "b", "b": "a"})
    flipped = dup.NearDuplicates(found.images, found.memberships, swapped, found.threshold, 0, {})
    table = report.pairs_table(flipped)
    assert table.equals(report.pairs_table(found))  # the val (or test) side second, whichever order came in
