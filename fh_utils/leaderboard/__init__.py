"""The leaderboard submission: the client's upload rule, the code archive, task.ipynb, packaging, the dry run."""

from fh_utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {"package_submission": "package", "PackagedSubmission": "package", "dry_run_on_split": "dry_run",
     "dry_run_submission": "dry_run", "layout_test_set": "dry_run"},
)  # fmt: skip
