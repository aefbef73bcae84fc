"""Training layer: one engine for every task, its configuration, losses, metrics and the colour baseline.

:func:`fit`, :func:`evaluate` and :func:`predict` live in :mod:`fh_utils.training.engine`; the losses, the optimiser
and scheduler factories, the checkpoint state and the device set-up each in a module of their own.
"""

from fh_utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "fit": "engine", "evaluate": "engine", "predict": "engine", "seed_everything": "engine",
        "FitResult": "engine", "TrainConfig": "config", "resolve_device": "device",
        "MultiHeadLoss": "losses", "class_priors": "losses", "create_optimizer": "optim",
        "create_scheduler": "scheduler", "TrainingState": "checkpoint",
        "task_metrics": "metrics", "acsa": "metrics",
    },
)  # fmt: skip
