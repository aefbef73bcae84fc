"""CPU scoring: the whole prediction of 900 images at 224 px with eva02_tiny on this machine's cores,
from decoding the files to the submission DataFrame, and its ratio to model-only inference.

    python -m benchmarks.score_throughput --images 900 --img-size 224 --workers 0
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from benchmarks.common import demo_root, report
from fh_utils.data.datasets import create_dataset
from fh_utils.models.factory import create_model
from fh_utils.training.device import set_threads
from fh_utils.training.engine import predict


@torch.inference_mode()
def model_only_rate(model, n: int, batch_size: int, img_size: int) -> float:
    x = torch.randint(0, 256, (batch_size, 3, img_size, img_size), dtype=torch.uint8)
    model(x)  # warm-up
    start = time.perf_counter()
    done = 0
    while done < n:
        model(x)
        done += batch_size
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=900)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--backbone", default="eva02_tiny_patch14_224.mim_in22k")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    root = demo_root("score", scale=0.6, size_range=(1000, 1800))
    threads = set_threads(args.workers)
    model = create_model("st1", args.backbone, img_size=args.img_size).eval()
    start = time.perf_counter()
    ds = create_dataset(root, "st1", "train", img_size=args.img_size, train=False, augment="none")
    ds.df = ds.df.head(args.images)
    loader = DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)
    sub = predict(model, loader, device="cpu", progress=False)
    whole = time.perf_counter() - start
    model_rate = model_only_rate(model, len(sub), args.batch_size, args.img_size)
    report("score_throughput", {
        "images": len(sub), "img_size": args.img_size, "backbone": args.backbone, "torch_threads": threads,
        "loader_workers": args.workers, "whole_prediction_s": round(whole, 1),
        "whole_img_per_s": round(len(sub) / whole, 1), "model_only_img_per_s": round(model_rate, 1),
        "ratio_whole_vs_model_only": round(len(sub) / whole / model_rate, 3),
        "goal": "whole prediction of 900 images <= 60 s",
    }, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
