"""Sweeps: many runs of a training notebook as one Optuna study (spec, study, coordinator, worker, trial, dashboard)."""

from fh_utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {"SweepSpec": "spec", "load_spec": "spec", "run_sweep": "coordinator", "SweepResult": "coordinator",
     "open_sweep": "study", "sweep_trials": "study", "pruning_callbacks": "trial"},
)  # fmt: skip
