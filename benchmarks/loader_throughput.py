"""Loader img/s per core on full-size photos: the seed's way (full decode, crop, augment, every epoch)
versus the decode-once cache, with the same augmentations.

    python -m benchmarks.loader_throughput --images 120 --img-size 224
"""

from __future__ import annotations

import argparse
import tempfile
import time

import cv2
import torch

from benchmarks.common import demo_root, report
from fh_utils.data.augment import create_transforms
from fh_utils.data.cache import build_cache
from fh_utils.data.datasets import build_source
from fh_utils.data.reader import read_split


def _rate(source, transform, n: int, epochs: int) -> float:
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(n):
            transform(source.get(i, True))
    return n * epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # per core
    torch.set_num_threads(1)
    root = demo_root("large", scale=0.1, size_range=(1500, 2500))
    df = read_split(root, "st1", "train").head(args.images)
    transform = create_transforms("st1", args.img_size, train=True, augment="myungbin")
    seed_way = build_source(df, args.img_size, reduced_decode=False)
    reduced = build_source(df, args.img_size, reduced_decode=True)
    with tempfile.TemporaryDirectory() as tmp:
        cached = build_source(df, args.img_size, cache=True, cache_dir=tmp)
        t0 = time.perf_counter()
        build_cache(cached.specs, cached.cache_dir, cached.params, workers=1, progress=False)
        build_rate = len(df) / (time.perf_counter() - t0)
        seed_rate = _rate(seed_way, transform, len(df), 1)
        reduced_rate = _rate(reduced, transform, len(df), 1)
        cache_rate = _rate(cached, transform, len(df), args.epochs)
    sizes = df[["width", "height"]].describe().loc[["min", "mean", "max"]].round(0).to_dict()
    report("loader_throughput", {
        "images": len(df), "image_sizes": sizes, "img_size": args.img_size,
        "seed_way_img_per_s_per_core": round(seed_rate, 1),
        "reduced_decode_img_per_s_per_core": round(reduced_rate, 1),
        "cache_img_per_s_per_core": round(cache_rate, 1),
        "cache_build_img_per_s_per_core": round(build_rate, 1),
        "ratio_cache_vs_seed": round(cache_rate / seed_rate, 1),
        "goal": "cache / seed >= 10",
    }, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
