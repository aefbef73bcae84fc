"""Training throughput: model-only step rate (tensors already in memory) vs end-to-end ``fit`` on the demo
data, measured in the same run, and their ratio.

    python -m benchmarks.train_throughput --backbone eva02_tiny_patch14_224.mim_in22k --img-size 112 --batch-size 32
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from benchmarks.common import demo_root, report
from fh_utils.data.cache import build_cache
from fh_utils.data.datasets import create_loaders
from fh_utils.models.factory import create_model
from fh_utils.training.config import TrainConfig
from fh_utils.training.device import set_threads
from fh_utils.training.engine import fit, seed_everything
from fh_utils.training.losses import MultiHeadLoss
from fh_utils.training.optim import create_optimizer


def model_only_rate(model, task, batch_size: int, img_size: int, steps: int) -> float:
    """img/s of forward + backward + AdamW step on one uint8 batch held in memory."""
    cfg = TrainConfig(label_smoothing=0.1)
    opt = create_optimizer(model, cfg)
    loss_fn = MultiHeadLoss(task, cfg)
    x = torch.randint(0, 256, (batch_size, 3, img_size, img_size), dtype=torch.uint8)
    y = torch.stack([torch.randint(0, h.num_classes, (batch_size,)) for h in task.heads], 1)
    model.train()
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps
            start = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="eva02_tiny_patch14_224.mim_in22k")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--task", default="st1")
    parser.add_argument("--scale", type=float, default=0.2, help="demo data scale (0.2: ~300 train images)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    threads = set_threads(0)
    root = demo_root("default", scale=args.scale, size_range=(400, 900))
    with tempfile.TemporaryDirectory() as tmp:
        loaders = create_loaders(root, args.task, img_size=args.img_size, batch_size=args.batch_size,
                                 cache=True, cache_dir=f"{tmp}/cache")  # fmt: skip
        for ds in (loaders["train"].dataset, loaders["val"].dataset):
            build_cache(ds.source.specs, ds.source.cache_dir, ds.source.params, progress=False)
        seed_everything(0)
        model = create_model(args.task, args.backbone, img_size=args.img_size)
        task = loaders["train"].dataset.task
        model_rate = model_only_rate(model, task, args.batch_size, args.img_size, args.steps)
        seed_everything(0)
        model = create_model(args.task, args.backbone, img_size=args.img_size)
        start = time.perf_counter()
        res = fit(model, loaders, f"{tmp}/run", epochs=args.epochs, lr=1e-4, scheduler="warmup_cosine",
                  progress=False)  # fmt: skip
        wall = time.perf_counter() - start
    n_train = res.history["train_img_per_s"].size and len(loaders["train"]) * args.batch_size * args.epochs
    fit_rate = float(res.history["train_img_per_s"].mean())
    report("train_throughput", {
        "backbone": args.backbone, "img_size": args.img_size, "batch_size": args.batch_size,
        "torch_threads": threads, "train_images_per_epoch": len(loaders["train"]) * args.batch_size,
        "model_only_img_per_s": round(model_rate, 2),
        "fit_train_loop_img_per_s": round(fit_rate, 2),
        "ratio_fit_vs_model_only": round(fit_rate / model_rate, 3),
        "fit_wall_s_incl_eval": round(wall, 1),
        "fit_wall_img_per_s_incl_eval": round(n_train / wall, 2),
        "goal": "fit / model-only >= 0.85 (train loop incl. data loading)",
    }, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
