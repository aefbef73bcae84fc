"""ST2 recipes under one fixed CPU budget (same image size, epochs, batch and seeds for all), against the
colour-histogram baseline: ACSA on the val split of a data root (default: ../shared/data/products_b).

    python -m benchmarks.st2_recipes --img-size 56 --epochs 12 --seeds 0 1 --recipes seed colornet

Each recipe runs once per seed; the JSON holds every run and the mean over seeds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, report
from fh_utils.data.datasets import create_loaders
from fh_utils.models.factory import create_model, load_model
from fh_utils.training.baseline import baseline_for_loaders
from fh_utils.training.device import set_threads
from fh_utils.training.engine import evaluate, fit, seed_everything
from fh_utils.training.losses import class_priors
from fh_utils.training.metrics import acsa

SEED_RECIPE = dict(backbone="eva02_tiny_patch14_224.mim_in22k", imbalance="sampler", label_smoothing=0.1,
                   optimizer="adamw", lr=1e-4, scheduler="cosine_restarts")  # fmt: skip
RECIPES = {
    "seed": SEED_RECIPE,
    "vcl": {**SEED_RECIPE, "color_spaces": ("rgb", "hsv", "lab", "hls", "yuv")},
    "hybrid": {**SEED_RECIPE, "color_hist": True},
    "seed_fast": {**SEED_RECIPE, "lr": 5e-4, "scheduler": "warmup_cosine"},
    "hybrid_fast": {**SEED_RECIPE, "color_hist": True, "lr": 5e-4, "scheduler": "warmup_cosine"},
    "hybrid_fast_la": {**SEED_RECIPE, "color_hist": True, "lr": 5e-4, "scheduler": "warmup_cosine",
                       "imbalance": "logit_adjust"},
    "cnn": {**SEED_RECIPE, "backbone": "mobilenetv4_conv_small", "lr": 2e-3, "scheduler": "warmup_cosine"},
    "cnn_hybrid": {**SEED_RECIPE, "backbone": "mobilenetv4_conv_small", "lr": 2e-3, "scheduler": "warmup_cosine",
                   "color_hist": True},
    "cnn_hybrid_la": {**SEED_RECIPE, "backbone": "mobilenetv4_conv_small", "lr": 2e-3,
                      "scheduler": "warmup_cosine", "color_hist": True, "imbalance": "logit_adjust"},
    # fh_colornet (fh_utils.models.colornet): per-pixel colour embeddings pooled under learned attention maps.
    "colornet": {**SEED_RECIPE, "backbone": "fh_colornet", "lr": 2e-3, "scheduler": "warmup_cosine"},
    "colornet_vcl": {**SEED_RECIPE, "backbone": "fh_colornet", "lr": 2e-3, "scheduler": "warmup_cosine",
                     "color_spaces": ("rgb", "hsv", "lab", "hls", "yuv")},
    "colornet_hybrid": {**SEED_RECIPE, "backbone": "fh_colornet", "lr": 2e-3, "scheduler": "warmup_cosine",
                        "color_hist": True},
}  # fmt: skip
# The recorded table (benchmarks/RESULTS.md); the others were measured in a first pass at 6 epochs.
TABLE_RECIPES = ("seed", "vcl", "hybrid", "colornet", "colornet_vcl", "colornet_hybrid")
MODEL_KEYS = ("backbone", "color_spaces", "color_hist")


def run_recipe(
    name: str, recipe: dict, args: argparse.Namespace, seed: int, out: Path, base_proba: np.ndarray
) -> dict:
    spaces = recipe.get("color_spaces", ("rgb",))
    sampler = "balanced" if recipe["imbalance"] == "sampler" else "shuffle"
    loaders = create_loaders(args.data_root, "st2", img_size=args.img_size, batch_size=args.batch_size,
                             sampler=sampler, color_spaces=spaces, cache=True, cache_dir=str(out / "cache"),
                             seed=seed)  # fmt: skip
    seed_everything(seed)
    model = create_model("st2", recipe["backbone"], img_size=args.img_size, color_spaces=spaces,
                         color_hist=recipe.get("color_hist", False), data_root=args.data_root)  # fmt: skip
    train_keys = {k: v for k, v in recipe.items() if k not in MODEL_KEYS + ("imbalance",)}
    loss = "logit_adjust" if recipe["imbalance"] == "logit_adjust" else "ce"
    task = loaders["train"].dataset.task
    priors = class_priors(loaders["train"].dataset.targets, task) if loss == "logit_adjust" else None
    start = time.perf_counter()
    run_dir = out / f"{name}-seed{seed}"
    res = fit(model, loaders, run_dir, dict(epochs=args.epochs, seed=seed, loss=loss, **train_keys),
              progress=False, class_priors=priors)  # fmt: skip
    wall = time.perf_counter() - start
    best = evaluate(load_model(run_dir), loaders["val"], "st2", device="cpu", progress=False)
    y = best["targets"][:, 0]
    ens = (best["probabilities"]["Color"] + base_proba) / 2
    return {"acsa": round(res.metrics["score"], 4), "acsa_ensemble_with_baseline": round(acsa(y, ens.argmax(1), 18), 4),
            "best_epoch": res.metrics["epoch"], "wall_s": round(wall, 0)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "products_b"))
    parser.add_argument("--img-size", type=int, default=56)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--recipes", nargs="+", default=list(TABLE_RECIPES), choices=list(RECIPES))
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench_runs" / "st2_recipes"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    set_threads(0)
    out = Path(args.out)
    loaders = create_loaders(args.data_root, "st2", img_size=args.img_size, batch_size=args.batch_size,
                             cache=True, cache_dir=str(out / "cache"))  # fmt: skip
    task = loaders["train"].dataset.task
    base = baseline_for_loaders(loaders, task, progress=False)
    results = {"baseline": {"acsa": round(base.score, 4), "wall_s": round(base.seconds, 1)}}
    for name in args.recipes:
        runs = {}
        for seed in args.seeds:
            runs[seed] = run_recipe(name, RECIPES[name], args, seed, out, base.probabilities)
            print(name, seed, runs[seed], flush=True)
        results[name] = {"acsa_mean": round(float(np.mean([r["acsa"] for r in runs.values()])), 4),
                         "ensemble_mean": round(float(np.mean([r["acsa_ensemble_with_baseline"]
                                                               for r in runs.values()])), 4),
                         "runs": runs}  # fmt: skip
    budget = {"data_root": args.data_root, "img_size": args.img_size, "epochs": args.epochs,
              "batch_size": args.batch_size, "seeds": args.seeds}  # fmt: skip
    report("st2_recipes", {**budget, "results": results}, args.json)


if __name__ == "__main__":
    main()
