"""ST2 ensembles under one budget: single fh_colornet runs vs ensembles of 3 and 5 members, with TTA, scored
(ACSA) on the val split of a data root (default: ../shared/data/products_b) through notebook 05's path.

    python -m benchmarks.st2_ensembles --epochs 3 --train-rows 1000 --variants s0 s1 s2 px72 lab \
        --json outputs/bench/st2_ensembles.json

Every member is notebook 04's recipe (``workflow.train_from_params``: fh_colornet, sampler, label smoothing
0.1, AdamW 2e-3, warm-up cosine) with one thing changed for diversity: the seed, the input size, the colour
spaces, or the loss. Finished members are reused (their run folders stay under ``--out``). Every ensemble
listed in ``ENSEMBLES`` is scored, helpful or not, plus the CPU time of scoring 900 images.

Caveat: products_b has no test split, so ensembles are chosen and scored on the same val split; the fixed
list below was written before any score was seen, and ``greedy`` (forward selection on val) is optimistic.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, report

VARIANTS = {  # in training order: the most useful first, so a cut-short run still has them
    "s0": {},  # notebook 04's default recipe at the benchmark's budget
    "s1": {"seed": 1},
    "s2": {"seed": 2},
    "px72": {"img_size": 72},
    "lab": {"color_spaces": "rgb,lab"},
    "px40": {"img_size": 40},
    "la": {"imbalance": "logit_adjust"},
}
ENSEMBLES = {
    "seeds3": ["s0", "s1", "s2"],
    "sizes3": ["px40", "s0", "px72"],
    "mixed3": ["s0", "px72", "lab"],
    "mixed3_la": ["s0", "px72", "la"],
    "seeds3+sizes2 (5)": ["s0", "s1", "s2", "px40", "px72"],
    "seeds2+px72 (3)": ["s0", "s1", "px72"],
    "seeds3+px72 (4)": ["s0", "s1", "s2", "px72"],
    "seeds3+px72+lab (5)": ["s0", "s1", "s2", "px72", "lab"],
    "seeds2+px72+lab (4)": ["s0", "s1", "px72", "lab"],
    "diverse5": ["s0", "px40", "px72", "lab", "la"],
    "all7": list(VARIANTS),
}


def train_members(args: argparse.Namespace, names: list[str]) -> dict[str, Path]:
    """Train (or reuse) every variant; return its run folder."""
    from fh_utils.runs import BEST_CKPT
    from fh_utils.workbook import workflow

    runs = {}
    for name in names:
        run_name = f"st2ens-{name}-e{args.epochs}-n{args.train_rows or 'all'}"
        params = dict(data_root=args.data_root, run_name=run_name, backbone="fh_colornet",
                      img_size=56, epochs=args.epochs, batch_size=32, lr=2e-3, scheduler="warmup_cosine",
                      label_smoothing=0.1, imbalance="sampler", device="cpu", num_workers=0, cache=True,
                      cache_dir=str(Path(args.out) / "cache"), color_baseline=False, seed=0,
                      limit=args.limit, threads=args.threads)  # fmt: skip
        params.update(VARIANTS[name])
        run_dir = Path(os.environ["FH_OUTPUTS"]) / "runs" / params["run_name"]
        if not (run_dir / "metrics.json").exists() or not (run_dir / BEST_CKPT).exists():
            start = time.perf_counter()
            run_dir, _ = workflow.train_from_params("st2", params, progress=False)
            print(f"trained {name} in {time.perf_counter() - start:.0f} s", flush=True)
        runs[name] = run_dir
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "products_b"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench_runs" / "st2_ensembles"))
    parser.add_argument("--timing-rows", type=int, default=900)
    parser.add_argument("--limit", type=int, default=0, help="rows per split for training (smoke runs)")
    parser.add_argument("--train-rows", type=int, default=0,
                        help="train on a random subset of this many train rows (full val); 0: all")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--tta", nargs="+", default=["none", "hflip", "hflip+crops"])
    parser.add_argument("--timing", nargs="*", default=["single none", "single hflip", "ensemble5 none"],
                        choices=["single none", "single hflip", "single hflip+crops", "ensemble5 none",
                                 "ensemble5 hflip"])  # fmt: skip
    parser.add_argument("--train-only", action="store_true", help="train (or reuse) the members and stop")
    parser.add_argument("--no-decode", dest="decode", action="store_false",
                        help="skip the reduced-vs-full JPEG decoding comparison")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    os.environ.setdefault("FH_OUTPUTS", args.out)  # at run time only: the members' run folders go under --out
    import torch

    from fh_utils.data import reader
    from fh_utils.inference.predictor import Predictor
    from fh_utils.models.ensemble import average_probabilities, member_from_run
    from fh_utils.tasks import get_task
    from fh_utils.training.metrics import acsa

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    if args.train_rows:
        args.data_root = str(subset_root(Path(args.data_root), Path(args.out) / "data", args.train_rows))
    runs = train_members(args, args.variants)
    if args.train_only:
        return
    task = get_task("st2", args.data_root)
    csv = reader.csv_path(Path(args.data_root), task, "val")
    rows = reader.read_csv(csv, task, csv.parent / "val")
    y = rows[task.label_columns].to_numpy()[:, 0]
    members = {n: member_from_run(r) for n, r in runs.items()}
    probs: dict[str, dict[str, np.ndarray]] = {}
    singles = {}
    for tta in args.tta:
        probs[tta] = {}
        for n, m in members.items():
            if tta == "hflip+crops" and n != "s0":
                continue  # 6 views: measured on the default member only (CPU time)
            saved = Path(runs[n]) / f"val_probs_{tta}.npy"  # kept beside the run: a rerun only scores new members
            if saved.exists():
                p = np.load(saved)
            else:
                p = Predictor([m], tta=tta).predict_rows(rows, csv.parent).probabilities["Color"]
                np.save(saved, p)
            probs[tta][n] = p
            singles.setdefault(n, {"size_mb": round(m.size_mb, 3), "validated": m.score})[tta] = round(
                acsa(y, p.argmax(1), 18), 4)
        print(tta, {n: s.get(tta) for n, s in singles.items()}, flush=True)
    default = [n for n in ("s0", "s1", "s2") if n in members]
    mean_default = {t: round(float(np.mean([singles[n][t] for n in default])), 4) for t in probs
                    if all(t in singles[n] for n in default)}  # fmt: skip
    ensembles = {}
    for name, names in ENSEMBLES.items():
        if not set(names) <= set(members):
            continue
        ensembles[name] = {"members": names, "size_mb": round(sum(members[n].size_mb for n in names), 3),
                           **{t: round(acsa(y, average_probabilities([{"c": probs[t][n]} for n in names],
                                                                     [1.0] * len(names))["c"].argmax(1), 18), 4)
                              for t in probs if all(n in probs[t] for n in names)}}  # fmt: skip
        print(name, ensembles[name], flush=True)
    # Forward selection on val (optimistic: chosen on the split it is scored on).
    chosen, best = [], -1.0
    for _ in range(5):
        scores = {n: acsa(y, np.mean([probs["none"][c] for c in chosen + [n]], 0).argmax(1), 18)
                  for n in members if n not in chosen}  # fmt: skip
        if not scores:
            break
        n, s = max(scores.items(), key=lambda kv: kv[1])
        if s <= best:
            break
        chosen.append(n)
        best = s
    ensembles["greedy (optimistic)"] = {"members": chosen, "none": round(best, 4),
                                        "size_mb": round(sum(members[n].size_mb for n in chosen), 3)}  # fmt: skip
    decode = reduced_decode_effect(members["s0"], rows, task, csv.parent) if "s0" in members and args.decode else {}
    timing = time_scoring(args, members, rows, task, csv) if args.timing else {}
    budget = {"data_root": args.data_root, "epochs": args.epochs, "recipe": "notebook 04 default (fh_colornet 56 px)",
              "variants": {n: VARIANTS[n] for n in members}}  # fmt: skip
    report("st2_ensembles", {**budget, "singles": singles, "mean_single_default": mean_default,
                             "ensembles": ensembles, "reduced_decode": decode, "timing": timing},
           args.json)  # fmt: skip


def reduced_decode_effect(member, rows, task, root: Path) -> dict:
    """Score and decoding speed of the default member with JPEG reduced decoding (what the cache and notebook
    05 use) and with full-size decoding, same crops and resize otherwise."""
    import time

    from torch.utils.data import DataLoader

    from fh_utils.data.datasets import build_source, create_dataset
    from fh_utils.training.engine import evaluate

    ic = member.model.input_config
    margin = float(member.data.get("crop_margin", 0.0))
    out = {}
    for reduced in (True, False):
        ds = create_dataset(root, task, "test", train=False, df=rows, img_size=ic["img_size"], augment="none",
                            crop_margin=margin, color_spaces=tuple(ic["color_spaces"]))  # fmt: skip
        ds.source = build_source(rows, ic["img_size"], margin, reduced_decode=reduced)
        start = time.perf_counter()
        for i in range(len(ds)):
            ds.source.get(i, True)
        seconds = time.perf_counter() - start
        res = evaluate(member.model, DataLoader(ds, batch_size=64), task, device="cpu", progress=False)
        out["reduced" if reduced else "full"] = {"acsa": round(res["score"], 4),
                                                 "decode_img_per_s": round(len(ds) / seconds, 1)}  # fmt: skip
    print("decode", out, flush=True)
    return out


def subset_root(root: Path, out: Path, n: int, seed: int = 0) -> Path:
    """A data root with ``n`` random ST2 train rows and the full val split (images linked, not copied)."""
    import pandas as pd

    from fh_utils.data import reader
    from fh_utils.tasks import get_task

    out.mkdir(parents=True, exist_ok=True)
    task = get_task("st2", root)
    train = reader.csv_path(root, task, "train")
    pd.read_csv(train).sample(n=n, random_state=seed).sort_index().to_csv(out / train.name, index=False)
    val = reader.csv_path(root, task, "val")
    (out / val.name).write_bytes(val.read_bytes())
    for name in ("train", "val", "classes.json"):
        if (root / name).exists() and not (out / name).exists():
            (out / name).symlink_to(root / name, target_is_directory=(root / name).is_dir())
    return out


def time_scoring(args, members: dict, rows, task, csv: Path) -> dict:
    """CPU seconds to score ``--timing-rows`` images (val rows repeated) as notebook 05 does, model loading
    included: one member with and without TTA, and the 5-member ensemble."""
    import pandas as pd
    import torch

    from fh_utils.models.ensemble import save_ensemble
    from fh_utils.workbook.submission import SubmissionSetup, predict_submission

    reps = int(np.ceil(args.timing_rows / len(rows)))
    tmp = Path(args.out) / "timing"
    images = tmp / "images"
    images.mkdir(parents=True, exist_ok=True)
    copies = []
    for k in range(reps):  # the reader refuses an image listed twice: each copy reads it through its own link
        link = images / f"copy{k}"
        if not link.exists():
            link.symlink_to(csv.parent / "val", target_is_directory=True)
        c = rows.copy()
        c["image_name"] = f"copy{k}/" + c["image_name"]
        copies.append(c)
    frame = pd.concat(copies).head(args.timing_rows)
    frame = frame[["image_name", "BBox_xmin", "BBox_ymin", "BBox_xmax", "BBox_ymax", "Color"]]
    timing_csv = images
    path = tmp / "Fashion-How24_sub2_timing.csv"
    frame.to_csv(path, index=False)
    five = next((v for v in ENSEMBLES.values() if len(v) == 5 and set(v) <= set(members)), list(members)[:5])
    ens_file = save_ensemble([members[n] for n in five], tmp / "ensemble5")
    out = {"rows": len(frame), "threads": torch.get_num_threads(), "cores": os.cpu_count()}
    cases = [("single none", members["s0"].name + "/best.pt", "none"),
             ("single hflip", members["s0"].name + "/best.pt", "hflip"),
             ("single hflip+crops", members["s0"].name + "/best.pt", "hflip+crops"),
             ("ensemble5 none", str(ens_file), "none"), ("ensemble5 hflip", str(ens_file), "hflip")]  # fmt: skip
    for label, model_path, tta in [c for c in cases if c[0] in args.timing]:
        setup = SubmissionSetup(tmp, task, path, timing_csv, torch.get_num_threads(), {}, Path(model_path), tta)
        res = predict_submission(setup, progress=False)
        label = label.replace("ensemble5", f"ensemble{len(five)} ({'+'.join(five)})")
        out[label] = round(res.seconds, 2)
        print("timing", label, out[label], flush=True)
    return out


if __name__ == "__main__":
    main()
