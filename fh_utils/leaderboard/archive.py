"""The code archive ``fh_utils.zip`` a submission ships: exactly the modules the packaged prediction imports.

The packaged function imports :mod:`fh_utils.inference.aif` from the archive; :data:`INCLUDE` lists that module
and everything it imports, directly or not (at module level or inside a function), with every package's
``__init__.py`` on the way. Nothing else ships: no demo rendering, background removal, sweeps, notebook runner,
leaderboard packaging or workbook. ``tests/test_packaging_archive.py`` walks the imports and fails when this list
and the imports part ways (a new module the prediction needs, or one it no longer does).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import fh_utils

# What importing fh_utils.inference.aif can load, as paths inside the package (the import walk of the test).
INCLUDE = (
    "__init__.py", "_lazy.py", "config.py", "io.py", "paths.py", "runs.py", "tasks.py",
    "data/__init__.py", "data/augment.py", "data/cache.py", "data/colorspaces.py", "data/config.py",
    "data/datasets.py", "data/exclude.py", "data/folds.py", "data/images.py", "data/reader.py",
    "models/__init__.py", "models/color_features.py", "models/colornet.py", "models/config.py", "models/ensemble.py",
    "models/export.py", "models/factory.py", "models/pretrained.py",
    "scoring/__init__.py", "scoring/predictions.py",
    "training/__init__.py", "training/averaging.py", "training/checkpoint.py", "training/config.py",
    "training/crt.py", "training/device.py", "training/distill.py", "training/engine.py", "training/losses.py",
    "training/metrics.py", "training/mixing.py", "training/optim.py", "training/rebalance.py", "training/scheduler.py",
    "training/tensorboard.py", "training/tta.py", "training/watch.py",
    "inference/__init__.py", "inference/aif.py", "inference/predictor.py",
)  # fmt: skip


def package_source() -> Path:
    """The folder of the ``fh_utils`` package imported now (what :func:`build_code_archive` ships)."""
    return Path(fh_utils.__file__).resolve().parent


def build_code_archive(dest: str | Path, source: str | Path | None = None) -> list[str]:
    """Zip the package's files named in :data:`INCLUDE` into ``dest``; their names in the archive.

    The archive is reproducible (sorted names, fixed timestamps) and importable with ``sys.path.insert(0, dest)``.

    Raises:
        FileNotFoundError: A file of :data:`INCLUDE` is not in ``source``.
    """
    source = Path(source) if source is not None else package_source()
    missing = [rel for rel in INCLUDE if not (source / rel).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {missing}, which the packaged prediction imports")
    names = [(source / rel, f"{source.name}/{rel}") for rel in sorted(INCLUDE)]
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, arcname in names:
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return [a for _, a in names]
