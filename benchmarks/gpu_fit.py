"""The GPU training loop measured (issue 22): model-only and ``fit`` img/s of the two recipes, by loader workers,
with the GPU's utilisation during the timed epoch.

    python -m benchmarks.gpu_fit --recipes fh_colornet@56 eva02_tiny_patch14_224.mim_in22k@224 --workers 0 4 8 \\
        --json outputs/bench/gpu_fit.json
    python -m benchmarks.gpu_fit --device cpu --recipes fh_colornet@32 --workers 0 --scale 0.05 --limit 64 \\
        --steps 2 --epochs 2   # the CPU smoke test of the same path (seconds)

Per recipe (``backbone@img_size``, the notebooks' batch size unless ``--batch-size``):

- ``model_only``: training steps on one batch held on the device (:func:`benchmarks.gpu_check.step_rate`), bf16
  autocast + channels_last, and with ``--compile`` also ``torch.compile``: what the GPU can do;
- ``fit``: ``fit`` on the demo data (or ``--data-root``) from the warm decode-once cache, AMP and channels_last
  as ``fit`` picks them on CUDA (``amp="auto"``: bf16), once per worker count. Every epoch but the first
  (worker start-up is timed in every epoch, as ``fit`` starts its workers every epoch; the first also pays
  cuDNN's autotuning or the compilation): ``train_img_per_s`` (the best of those epochs) and the GPU's mean
  utilisation during its training part (``nvidia-smi`` sampled every 0.1 s in a thread; ``None`` without a GPU);
  ``fit / model-only`` says how much of the GPU the loop and the loader leave.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from benchmarks.common import demo_root, report
from benchmarks.gpu_check import step_rate
from fh_utils.data.cache import build_cache
from fh_utils.data.datasets import create_loaders
from fh_utils.models.factory import create_model
from fh_utils.training.device import resolve_device
from fh_utils.training.engine import fit, seed_everything

BATCH_SIZES = {"fh_colornet": 32}  # notebook 04's default; notebook 03's (64) for every other backbone
TASKS = {"fh_colornet": "st2"}  # the task each recipe is trained for (st1 otherwise)


class GpuSampler:
    """GPU utilisation (%) sampled every ``interval`` seconds in a thread: ``[(time.perf_counter(), %), ...]``.

    Reads ``torch.cuda.utilization`` (needs pynvml) or else ``nvidia-smi``; samples nothing without either.
    """

    def __init__(self, device: torch.device, interval: float = 0.1):
        self.index = (device.index or 0) if device.type == "cuda" else None
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> float | None:
        try:
            return float(torch.cuda.utilization(self.index))
        except Exception:  # no pynvml: ask nvidia-smi
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        out = subprocess.run(["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)  # fmt: skip
        return float(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.strip() else None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is None:
                return
            self.samples.append((time.perf_counter(), value))
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuSampler:
        if self.index is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def mean(self, start: float, end: float) -> float | None:
        """Mean utilisation of the samples taken between ``start`` and ``end``."""
        window = [v for t, v in self.samples if start <= t <= end]
        return round(sum(window) / len(window), 1) if window else None


def parse_recipe(text: str, batch_size: int = 0) -> dict:
    """``"backbone@img_size"`` -> backbone, img_size, task and batch size."""
    backbone, _, size = text.partition("@")
    family = backbone.split(".")[0]
    return {"backbone": backbone, "img_size": int(size or 224), "task": TASKS.get(family, "st1"),
            "batch_size": batch_size or BATCH_SIZES.get(family, 64)}  # fmt: skip


def model_only(recipe: dict, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """img/s of training steps on a batch already on the device, per mode."""
    modes = ["amp_channels_last", *(["amp_channels_last_compile"] if args.compile else [])]
    ns = argparse.Namespace(task=recipe["task"], backbone=recipe["backbone"], img_size=recipe["img_size"],
                            batch_size=recipe["batch_size"], steps=args.steps, warmup=args.warmup)  # fmt: skip
    return {mode: round(step_rate(mode, ns, device), 1) for mode in modes}


def _loaders(recipe: dict, workers: int, root: Path, tmp: Path, args: argparse.Namespace) -> dict:
    return create_loaders(root, recipe["task"], img_size=recipe["img_size"], batch_size=recipe["batch_size"],
                          cache=True, cache_dir=str(tmp / "cache"), num_workers=workers, limit=args.limit,
                          augment="myungbin")  # fmt: skip


def warm_cache(recipe: dict, root: Path, tmp: Path, args: argparse.Namespace) -> None:
    """Build every cache entry a recipe's loaders read (in parallel: before torch has started its threads, which a
    forked process pool would inherit locked)."""
    for loader in _loaders(recipe, 0, root, tmp, args).values():
        src = loader.dataset.source
        build_cache(src.specs, src.cache_dir, src.params, workers=args.cache_workers, progress=False)


def best_timed_epoch(epochs: list[dict]) -> dict:
    """The fastest epoch after the first (which pays cuDNN's autotuning or the compilation); the first if alone."""
    return max(epochs[1:] or epochs, key=lambda e: e["train_img_per_s"])


def fit_rate(recipe: dict, workers: int, root: Path, tmp: Path, args: argparse.Namespace) -> dict:
    """``fit`` on the warm cache with ``workers`` loader workers: the best later epoch's img/s and GPU use."""
    loaders = _loaders(recipe, workers, root, tmp, args)
    crops = len(loaders["train"]) * recipe["batch_size"]
    seed_everything(0)
    model = create_model(recipe["task"], recipe["backbone"], img_size=recipe["img_size"])
    ends: list[float] = []
    device = resolve_device(args.device)
    run_dir = tmp / f"run-{recipe['backbone']}-{workers}w-{len(list(tmp.glob('run-*')))}"
    with GpuSampler(device) as sampler:
        start = time.perf_counter()
        res = fit(model, loaders, run_dir, {"epochs": args.epochs, "lr": 1e-3, "scheduler": "warmup_cosine",
                                            "device": args.device, "compile": args.compile_fit},
                  progress=False, callbacks=[lambda row: ends.append(time.perf_counter())])  # fmt: skip
        wall = time.perf_counter() - start
    epochs = []
    for k, row in enumerate(res.history.to_dict("records")):
        train_s = crops / row["train_img_per_s"]
        begin = ends[k - 1] if k else start
        epochs.append({"epoch": k + 1, "train_img_per_s": round(row["train_img_per_s"], 1),
                       "train_s": round(train_s, 3), "epoch_s_incl_eval": round(row["seconds"], 3),
                       "gpu_util_mean": sampler.mean(begin, begin + train_s)})  # fmt: skip
    best = best_timed_epoch(epochs)
    return {"workers": workers, "train_rows": len(loaders["train"].dataset), "crops_per_epoch": crops,
            "train_img_per_s": best["train_img_per_s"], "gpu_util_mean": best["gpu_util_mean"],
            "wall_s": round(wall, 1), "epochs": epochs}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["fh_colornet@56", "eva02_tiny_patch14_224.mim_in22k@224"])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 4, 8])
    parser.add_argument("--batch-size", type=int, default=0, help="0: the notebooks' (32 fh_colornet, 64 others)")
    parser.add_argument("--epochs", type=int, default=3, help="fit epochs per worker count (the first is not timed)")
    parser.add_argument("--steps", type=int, default=30, help="model-only timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="model-only warm-up steps")
    parser.add_argument("--compile", action="store_true", help="model-only also with torch.compile")
    parser.add_argument("--compile-fit", action="store_true", help="fit with compile=True")
    parser.add_argument("--data-root", default="", help="data root (default: generated demo data)")
    parser.add_argument("--scale", type=float, default=1.0, help="demo data scale (1.0: ~1,500 train rows a task)")
    parser.add_argument("--limit", type=int, default=0, help="rows per split (0: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache-workers", type=int, default=0, help="processes building the cache (0: all cores)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    root = Path(args.data_root).resolve() if args.data_root else demo_root(f"gpu-{args.scale:g}", scale=args.scale,
                                                                            size_range=(256, 480))  # fmt: skip
    results = {}
    recipes = {text: parse_recipe(text, args.batch_size) for text in args.recipes}
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in recipes.values():
            warm_cache(recipe, root, Path(tmp), args)
        for text, recipe in recipes.items():
            only = model_only(recipe, args, device)
            fits = {w: fit_rate(recipe, w, root, Path(tmp), args) for w in args.workers}
            top = max(only.values())
            results[text] = {**recipe, "model_only_img_per_s": only,
                             "fit": {w: {k: v for k, v in f.items() if k != "workers"} for w, f in fits.items()},
                             "fit_vs_model_only": {w: round(f["train_img_per_s"] / top, 3) for w, f in fits.items()},
                             }  # fmt: skip
            if args.json:  # each recipe's figures as soon as they exist (a step under `timeout` may be cut short)
                Path(args.json).write_text(json.dumps({"partial": True, "recipes": results}, indent=2) + "\n")
    figures = {"device": str(device), "data_root": str(root), "epochs": args.epochs, "compile_fit": args.compile_fit,
               "recipes": results}  # fmt: skip
    report("gpu_fit", figures, args.json)
    return figures


if __name__ == "__main__":
    main()
