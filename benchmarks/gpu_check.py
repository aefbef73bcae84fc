"""GPU check: a fixed number of training steps in fp32 eager vs AMP + channels_last (+ torch.compile),
img/s for each. Runs on the CPU too (tiny settings; that path is tested), for the real figures on a GPU:

    python -m benchmarks.gpu_check --steps 50 --batch-size 256 --img-size 224 --json gpu.json
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import report
from fh_utils.models.factory import create_model
from fh_utils.tasks import get_task
from fh_utils.training.config import TrainConfig
from fh_utils.training.device import resolve_device
from fh_utils.training.engine import seed_everything
from fh_utils.training.losses import MultiHeadLoss
from fh_utils.training.optim import create_optimizer


def step_rate(mode: str, args: argparse.Namespace, device: torch.device) -> float:
    """img/s over ``args.steps`` training steps in one mode (after warm-up steps)."""
    seed_everything(0)
    task = get_task(args.task)
    model = create_model(task, args.backbone, img_size=args.img_size).to(device)
    channels_last = mode != "fp32_eager"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    cfg = TrainConfig()
    opt = create_optimizer(model, cfg)
    loss_fn = MultiHeadLoss(task, cfg)
    run = torch.compile(model) if mode.endswith("compile") else model
    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    amp = None if mode == "fp32_eager" else (torch.bfloat16 if bf16_ok else torch.float16)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    x = torch.randint(0, 256, (args.batch_size, 3, args.img_size, args.img_size), dtype=torch.uint8, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.stack([torch.randint(0, h.num_classes, (args.batch_size,), device=device) for h in task.heads], 1)

    def one_step():
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = loss_fn(run(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(args.warmup):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="eva02_tiny_patch14_224.mim_in22k")
    parser.add_argument("--task", default="st1")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=["fp32_eager", "amp_channels_last", "amp_channels_last_compile"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    rates = {mode: round(step_rate(mode, args, device), 1) for mode in args.modes}
    base = rates.get("fp32_eager")
    figures = {"device": str(device), "backbone": args.backbone, "img_size": args.img_size,
               "batch_size": args.batch_size, "steps": args.steps, "img_per_s": rates,
               "speedup_vs_fp32_eager": {m: round(r / base, 2) for m, r in rates.items()} if base else None,
               }  # fmt: skip
    report("gpu_check", figures, args.json)
    return figures


if __name__ == "__main__":
    main()
