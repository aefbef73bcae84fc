"""Training layer: one engine for every task, its configuration, losses, metrics and the colour baseline.

:func:`fit`, :func:`evaluate` and :func:`predict` live in :mod:`fh_utils.training.engine`.
"""

from fh_utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "fit": "engine", "evaluate": "engine", "predict": "engine", "seed_everything": "engine",
        "resolve_device": "engine", "FitResult": "engine", "TrainConfig": "config",
        "task_metrics": "metrics", "acsa": "metrics",
    },
)  # fmt: skip
