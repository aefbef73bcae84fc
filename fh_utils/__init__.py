"""FASHION-HOW workbook utilities: data, augmentation, models, training engine, metrics, plots.

Importing this package never touches the network: albumentations' update check is switched off here,
before anything imports albumentations, and the Hugging Face hub is put offline unless the user set it.
"""

import os as _os

_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
# OpenMP threads that spin while waiting starve any other busy process on a small machine (a DataLoader
# worker, a second kernel): torch dropped from ~460 to ~7 img/s here. Must be set before torch is imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
