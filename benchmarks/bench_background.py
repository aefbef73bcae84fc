"""GrabCut background removal: full resolution versus the fast path, on full-size (1500-2500 px) photos.

* full: ``cv2.grabCut`` on the whole image at full resolution (the plain way), one core.
* fast: :func:`fh_utils.prep.background.grabcut_mask` defaults (box plus 25 % context, long side 320, mask
  scaled back and feathered), measured end to end by :func:`create_nobg_tree` (decode, mask, fill,
  encode, atomic write, pool start-up) over ``--workers`` processes, and also per core.

Mask agreement is the IoU of the masks thresholded at 128: fast vs full; fast vs full resolution on the
same crop (the effect of the working resolution alone); and, for the built-in synthetic photos, each
against the true garment mask. Data: ``--data-root`` (any FASHION-HOW tree), else the demo generator
(:func:`fh_utils.prep.demo.generate_demo_dataset`, person-like figures) when it exists, else (or with
``--source synthetic``) this script's own photos, whose true garment mask is known.

    python benchmarks/bench_background.py --n 24 --n-full 6 --json outputs/bench_background.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np

from fh_utils.data.images import image_size, load_image
from fh_utils.prep import background as bg
from fh_utils.prep.background import jobs as bg_jobs  # the tree's per-image steps

SIZE_RANGE = (1500, 2500)
ST1_HEADER = ["image_name", *bg_jobs.BOX_COLUMNS, "Daily", "Gender", "Embellishment"]


# -------------------------------------------------------------------------------------------- data


def synthetic_photo(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    """A striped garment on a person-like figure (head, legs) over a cluttered background.

    Returns:
        ``(rgb, true garment mask, garment box)``.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = rng.integers(80, 200, 3) + 50 * (xx / w)[..., None] * rng.uniform(-1, 1, 3)
    img = np.clip(img + 50 * (yy / h)[..., None] * rng.uniform(-1, 1, 3), 0, 255).astype(np.uint8)
    s = min(h, w)
    for _ in range(60):
        colour = tuple(int(v) for v in rng.integers(40, 230, 3))
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(s // 50, s // 8))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + 2 * r, y + r), colour, -1)
        else:
            cv2.circle(img, (x, y), r, colour, -1)
    cx, cy = int(w * rng.uniform(0.4, 0.6)), int(h * rng.uniform(0.42, 0.5))
    gw, gh = int(w * rng.uniform(0.25, 0.35)), int(h * rng.uniform(0.28, 0.36))
    skin = tuple(int(v) for v in rng.integers(150, 235, 3))
    for dx in (-gw // 5, gw // 5):  # legs, below the garment
        cv2.rectangle(
            img, (cx + dx - s // 40, cy), (cx + dx + s // 40, min(h - 1, cy + gh)), (60, 60, 90), -1
        )
    fg = np.zeros((h, w), np.uint8)
    cv2.ellipse(fg, (cx, cy), (gw // 2, gh // 2), 0, 0, 360, 255, -1)
    cv2.rectangle(fg, (cx - gw // 3, cy - gh // 2), (cx + gw // 3, cy), 255, -1)
    hsv = np.zeros((h, w, 3), np.uint8)
    hsv[...] = (int(rng.integers(0, 180)), int(rng.integers(120, 240)), int(rng.integers(120, 220)))
    hsv[((yy // max(4, s // 80)) % 2).astype(bool), 2] //= 2
    garment = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    img[fg > 0] = garment[fg > 0]
    cv2.circle(img, (cx, cy - gh // 2 - s // 14), s // 16, skin, -1)  # the head, above the box
    img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(fg)
    pad = s // 60
    box = (
        max(0, xs.min() - pad),
        max(0, ys.min() - pad),
        min(w, xs.max() + 1 + pad),
        min(h, ys.max() + 1 + pad),
    )
    return img, fg > 0, tuple(int(v) for v in box)


def write_synthetic_root(root: Path, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` synthetic full-size photos in the FASHION-HOW layout; returns the true masks by image path."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for i in range(n):
        h, w = (int(v) for v in rng.integers(*SIZE_RANGE, size=2))
        img, fg, box = synthetic_photo(rng, h, w)
        name = f"2JACKET 2019/JK{i:05d}-1.{'png' if i % 5 == 4 else 'jpg'}"
        path = root / "train" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        params = [cv2.IMWRITE_JPEG_QUALITY, 92] if path.suffix == ".jpg" else []
        ok, buf = cv2.imencode(path.suffix, img[:, :, ::-1], params)
        assert ok
        path.write_bytes(buf.tobytes())
        rows.append([name, *box, 1, 2, 0])
        truth[str(path)] = fg
    with open(root / "Fashion-How24_sub1_train.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([ST1_HEADER, *rows])
    return truth


def demo_root(root: Path, n: int, seed: int) -> Path | None:
    """A demo tree with at least ``n`` full-size images, or None when fh_utils.prep.demo is not there."""
    try:
        from fh_utils.prep.demo import generate_demo_dataset
    except ImportError:
        return None
    scale = 0.01 * math.ceil(n / 40)  # scale 0.01 gives about 47 images
    return generate_demo_dataset(root, seed=seed, scale=scale, size_range=SIZE_RANGE, progress=False)


# ---------------------------------------------------------------------------------------- measuring


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a = a > 127 if a.dtype == np.uint8 else a
    b = b > 127 if b.dtype == np.uint8 else b
    return float((a & b).sum() / max(1, (a | b).sum()))


def end_to_end(job, **mask_kwargs) -> tuple[float, np.ndarray]:
    """Seconds to decode, mask, fill and encode one image (no write), and the mask."""
    start = time.perf_counter()
    img = load_image(job.src)
    mask = bg.grabcut_mask(img, job.boxes, **mask_kwargs)
    bg_jobs._encode(Path(job.src), bg.blend_fill(img, mask), bg_jobs.JPEG_QUALITY)
    return time.perf_counter() - start, mask


def compare_masks(jobs, truth: dict[str, np.ndarray], work_size: int) -> dict:
    """Full versus fast (and full resolution on the fast path's crop) on ``jobs``, one core."""
    t_full, t_fast, vs_full, vs_crop, gt_fast, gt_full = [], [], [], [], [], []
    for job in jobs:
        t, full = end_to_end(job, work_size=None, context=None)
        t_full.append(t)
        t, fast = end_to_end(job, work_size=work_size)
        t_fast.append(t)
        _, crop_full = end_to_end(job, work_size=None)
        vs_full.append(iou(fast, full))
        vs_crop.append(iou(fast, crop_full))
        if job.src in truth:
            gt_fast.append(iou(fast, truth[job.src]))
            gt_full.append(iou(full, truth[job.src]))
        print(
            f"  {job.rel}: full {t_full[-1]:.2f} s, fast {t_fast[-1]:.3f} s, IoU fast/full {vs_full[-1]:.3f}"
        )
    out = {
        "full_img_per_s": len(jobs) / sum(t_full),
        "fast_img_per_s_per_core": len(jobs) / sum(t_fast),
        "iou_fast_vs_full": _stats(vs_full),
        "iou_fast_vs_full_res_same_crop": _stats(vs_crop),
    }
    if gt_fast:
        out["iou_vs_truth"] = {"fast": _stats(gt_fast), "full": _stats(gt_full)}
    return out


def _stats(values: list[float]) -> dict:
    return {"mean": round(float(np.mean(values)), 3), "min": round(float(np.min(values)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=24, help="images for the fast-path throughput")
    parser.add_argument(
        "--n-full", type=int, default=6, help="images for full resolution (slow) and the IoUs"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes of the fast path")
    parser.add_argument("--work-size", type=int, default=320, help="fast path working long side, px")
    parser.add_argument("--source", choices=["auto", "demo", "synthetic"], default="auto")
    parser.add_argument("--data-root", default=None, help="an existing FASHION-HOW tree instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core per process, as in the pool

    with tempfile.TemporaryDirectory(prefix="bench_bg_") as tmp:
        root, truth, source = resolve_data(args, Path(tmp))
        jobs = bg_jobs.list_jobs(root)[: args.n]
        sizes = [image_size(j.src) for j in jobs]
        print(f"{len(jobs)} images ({source}), {min(map(min, sizes))}-{max(map(max, sizes))} px")
        out = Path(tmp) / "nobg"
        kwargs = {"work_size": args.work_size, "workers": args.workers, "limit": args.n, "progress": False}
        tree = bg.create_nobg_tree(root, out, method="grabcut", **kwargs)
        print(f"fast path, {args.workers} processes: {tree['images_per_s']:.2f} img/s end to end")
        masks = compare_masks(jobs[: args.n_full], truth, args.work_size)
    figures = {
        "benchmark": "bench_background",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, cv2 {cv2.__version__}",
        "date": date.today().isoformat(),
        "source": source,
        "images": len(jobs),
        "images_full": min(args.n_full, len(jobs)),
        "work_size": args.work_size,
        "workers": args.workers,
        "fast_img_per_s_pool": round(tree["images_per_s"], 2),
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in masks.items()},
    }
    figures["speedup_pool_vs_full"] = round(figures["fast_img_per_s_pool"] / masks["full_img_per_s"], 1)
    figures["speedup_per_core"] = round(masks["fast_img_per_s_per_core"] / masks["full_img_per_s"], 1)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


def resolve_data(args: argparse.Namespace, tmp: Path) -> tuple[Path, dict[str, np.ndarray], str]:
    """The data root, the true masks (synthetic photos only) and a word for the source."""
    if args.data_root:
        return Path(args.data_root), {}, str(args.data_root)
    if args.source in ("auto", "demo"):
        root = demo_root(tmp / "demo", args.n, args.seed)
        if root is not None:
            return root, {}, "fh_utils.prep.demo"
        if args.source == "demo":
            raise SystemExit("fh_utils.prep.demo is not available; use --source synthetic")
    truth = write_synthetic_root(tmp / "synthetic", args.n, args.seed)
    return tmp / "synthetic", truth, "synthetic (own generator)"


if __name__ == "__main__":
    main()
