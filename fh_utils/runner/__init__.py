"""The headless notebook runner (papermill, progress lines) and the demo pipeline behind ``make demo``."""

from fh_utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {"run_notebook": "notebooks", "check_parameters": "notebooks", "UnknownParameterError": "notebooks",
     "run_demo": "demo", "main_demo": "demo"},
)  # fmt: skip
