"""The fresh interpreter of a dry run (:func:`fh_utils.leaderboard.dry_run.dry_run_submission` runs it with -I).

``python -I driver.py SCRIPT CHECKOUT REPORT PREDICTIONS BLOCKED`` in the submission folder: the installed workbook
cannot be imported (its editable finder and the checkout are removed from the import system, which is asserted);
SCRIPT (the packaged notebook as a script) runs as a module (its upload cell never runs), its ``submit()`` goes
through the packaged dry run, and importing a module of BLOCKED (comma-separated: what the scoring server lacks)
fails it (checked on ``sys.modules`` afterwards: torch probes optional packages with find_spec, which must not
fail). REPORT (JSON) and PREDICTIONS (CSV) are written.
"""

import importlib
import importlib.util
import json
import os
import runpy
import sys
import time

# What the packaged function imports, imported (and timed) before it runs.
SERVER_PACKAGES = ("torch", "timm", "numpy", "pandas", "cv2", "albumentations", "PIL")


def hide_the_installed_workbook(checkout: str) -> None:
    """Take the editable install's finder and the checkout out of the import system; assert fh_utils is gone."""
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path[:] = [p for p in sys.path if "__editable__" not in p and os.path.realpath(p or ".") != checkout]
    sys.path_importer_cache.clear()
    assert importlib.util.find_spec("fh_utils") is None, "the installed fh_utils is still importable"


def main(script: str, checkout: str, report: str, predictions: str, blocked: set[str]) -> None:
    """Dry-run the script's ``submit()`` with the packaged code; write the report and the predictions."""
    hide_the_installed_workbook(os.path.realpath(checkout))
    start = time.perf_counter()
    for name in SERVER_PACKAGES:
        importlib.import_module(name)
    imports_s = time.perf_counter() - start
    sys.argv = [script]
    namespace = runpy.run_path(script, run_name="task")
    sys.path.insert(0, os.path.abspath("fh_utils.zip"))  # as the notebook's own dry-run cell does
    import fh_utils
    from fh_utils.inference.aif import dry_run

    result = dry_run(namespace["submit"], "./model")
    result.pop("frame").to_csv(predictions, index=False)
    result["imports_seconds"] = imports_s
    result["fh_utils_file"] = fh_utils.__file__
    result["modules"] = sorted({m.split(".")[0] for m in sys.modules})
    lacking = sorted(blocked & set(result["modules"]))
    assert not lacking, f"the submission imported {lacking}, which the scoring server does not have"
    with open(report, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], set(sys.argv[5].split(",")))
