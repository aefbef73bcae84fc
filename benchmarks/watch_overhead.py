"""What watching a run costs: ``fit`` with TensorBoard events and run state, with run state only, and bare.

Each repeat trains the same model from the same seed three times, the modes in rotating order: ``full`` (what
every run does: ``state.json`` heartbeat and ``tb/`` events), ``state`` (events off: ``watch.TENSORBOARD =
False``) and ``bare`` (no :class:`fh_utils.training.watch.RunWatch` at all). Reported: median seconds per epoch
(fit wall time / epochs, the one-off opening of the event file excluded and reported on its own), the overhead
of each mode against ``bare``, and the time spent appending events per epoch as the run measured it (train.log).
The issue's bound: events and state cost at most 1 % of an epoch.

    python -m benchmarks.watch_overhead                      # ST2 fh_colornet 56 px, 4 epochs x 3 repeats
    python -m benchmarks.watch_overhead --epochs 2 --repeats 1 --scale 0.05 --img-size 16   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import demo_root, report
from fh_utils.data.cache import build_cache
from fh_utils.data.datasets import create_loaders
from fh_utils.models.factory import create_model
from fh_utils.training import watch
from fh_utils.training.device import set_threads
from fh_utils.training.engine import fit, seed_everything

MODES = ("full", "state", "bare")
BOARD_LINE = re.compile(r"tensorboard: .* \(opened in ([\d.]+) s; ([\d.]+) s writing (\d+) epoch")


class _NoWatch:
    """Stands in for RunWatch: nothing written, nothing timed."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def on_epoch(self, row: dict) -> None:
        pass


@contextlib.contextmanager
def _mode(name: str):
    real = watch.RunWatch
    watch.TENSORBOARD = name == "full"
    if name == "bare":
        watch.RunWatch = _NoWatch
    try:
        yield
    finally:
        watch.RunWatch, watch.TENSORBOARD = real, True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="st2")
    parser.add_argument("--backbone", default="fh_colornet")
    parser.add_argument("--img-size", type=int, default=56)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--scale", type=float, default=0.2, help="demo data scale (0.2: ~300 train images)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    threads = set_threads(0)
    root = demo_root("default", scale=args.scale, size_range=(400, 900))
    per_epoch: dict[str, list[float]] = {m: [] for m in MODES}
    opened, writing = [], []
    with tempfile.TemporaryDirectory() as tmp:
        loaders = create_loaders(root, args.task, img_size=args.img_size, batch_size=args.batch_size, num_workers=0,
                                 cache=True, cache_dir=f"{tmp}/cache")  # fmt: skip
        for ds in (loaders["train"].dataset, loaders["val"].dataset):
            build_cache(ds.source.specs, ds.source.cache_dir, ds.source.params, progress=False)
        for repeat in range(args.repeats):
            order = MODES[repeat % 3 :] + MODES[: repeat % 3]
            for mode in order:
                run_dir = Path(tmp) / f"{mode}-{repeat}"
                seed_everything(0)
                model = create_model(args.task, args.backbone, img_size=args.img_size)
                with _mode(mode):
                    start = time.perf_counter()
                    fit(model, loaders, run_dir, dict(epochs=args.epochs, lr=2e-3, seed=0, threads=threads),
                        progress=False)  # fmt: skip
                    wall = time.perf_counter() - start
                found = BOARD_LINE.search((run_dir / "train.log").read_text()) if mode == "full" else None
                if found:
                    opened.append(float(found[1]))
                    writing.append(float(found[2]) / int(found[3]))
                    wall -= float(found[1])  # the one-off open: reported on its own
                per_epoch[mode].append(wall / args.epochs)
                print(f"repeat {repeat} {mode:<5} {wall / args.epochs:.3f} s/epoch", flush=True)
    median = {m: statistics.median(v) for m, v in per_epoch.items()}
    figures = {
        "task": args.task, "backbone": args.backbone, "img_size": args.img_size, "epochs": args.epochs,
        "repeats": args.repeats, "threads": threads,
        "seconds_per_epoch": {m: round(v, 4) for m, v in median.items()},
        "overhead_vs_bare_pct": {m: round(100 * (median[m] / median["bare"] - 1), 2) for m in ("full", "state")},
        "events_append_s_per_epoch": round(statistics.median(writing), 5) if writing else None,
        "events_append_pct_of_epoch": round(100 * statistics.median(writing) / median["bare"], 3) if writing else None,
        "events_open_s_once_per_fit": round(statistics.median(opened), 3) if opened else None,
    }  # fmt: skip
    report("watch_overhead", figures, args.json)


if __name__ == "__main__":
    main()
